//! The host API, call by call.

use std::sync::Arc;

use bytes::Bytes;
use cog_sandbox::{Exchange, KvScope, Limits, MemoryKv, Phase, PluginError, Runtime};

use crate::support::{exchange, load, module, on_request, run};

/// Sets header `x-r` to the decimal result of `call` (an i32 expression).
fn report(call: &str) -> String {
    format!(
        "(local $n i32) (local $p i32) (local $len i32)
         (local.set $n {call})
         ;; decimal digits of |n| backwards from 200, '-' if negative
         (local.set $p (i32.const 200))
         (if (i32.lt_s (local.get $n) (i32.const 0))
           (then (i32.store8 (i32.const 100) (i32.const 45)) (local.set $len (i32.const 1))
                 (local.set $n (i32.sub (i32.const 0) (local.get $n)))))
         (loop $d
           (local.set $p (i32.sub (local.get $p) (i32.const 1)))
           (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
           (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
           (br_if $d (local.get $n)))
         (memory.copy (i32.add (i32.const 100) (local.get $len)) (local.get $p) (i32.sub (i32.const 200) (local.get $p)))
         (local.set $len (i32.add (local.get $len) (i32.sub (i32.const 200) (local.get $p))))
         (i32.store16 (i32.const 96) (i32.const 0x722d)) ;; \"-r\"
         (i32.store8 (i32.const 95) (i32.const 0x78))    ;; \"x\"
         (drop (call $header_set (i32.const 0) (i32.const 95) (i32.const 3) (i32.const 100) (local.get $len)))"
    )
}

fn hook_reporting(data: &str, call: &str) -> Vec<u8> {
    module(&format!(
        "{data} (func (export \"cog_on_request\") (result i32) {} i32.const 0)",
        report(call)
    ))
}

fn result_of(data: &str, call: &str) -> (i32, Exchange) {
    let rt = Runtime::new();
    let p = load(&rt, &hook_reporting(data, call), Limits::default()).with_config("mode=strict");
    let (r, ex) = run(&p);
    r.unwrap();
    let v = ex.request_headers["x-r"].to_str().unwrap().parse().unwrap();
    (v, ex)
}

#[test]
fn headers_can_be_read_set_and_removed() {
    let (n, ex) = result_of(
        r#"(data (i32.const 300) "user-agent")"#,
        "(call $header_get (i32.const 0) (i32.const 300) (i32.const 10) (i32.const 400) (i32.const 64))",
    );
    assert_eq!(n, 6, "length of test/1");
    assert_eq!(ex.request_headers["user-agent"], "test/1");
    // Too small a buffer: the length comes back, nothing is written.
    let (n, _) = result_of(
        r#"(data (i32.const 300) "user-agent")"#,
        "(call $header_get (i32.const 0) (i32.const 300) (i32.const 10) (i32.const 400) (i32.const 2))",
    );
    assert_eq!(n, 6);
    let (n, _) = result_of(
        r#"(data (i32.const 300) "x-missing")"#,
        "(call $header_get (i32.const 0) (i32.const 300) (i32.const 9) (i32.const 400) (i32.const 64))",
    );
    assert_eq!(n, -1);
    let (n, ex) = result_of(
        r#"(data (i32.const 300) "x-existing")"#,
        "(call $header_remove (i32.const 0) (i32.const 300) (i32.const 10))",
    );
    assert_eq!(n, 0);
    assert!(ex.request_headers.get("x-existing").is_none());
}

#[test]
fn cr_lf_and_protected_headers_are_refused() {
    let (n, ex) = result_of(
        r#"(data (i32.const 300) "x-evil") (data (i32.const 320) "a\0d\0aInjected: 1")"#,
        "(call $header_set (i32.const 0) (i32.const 300) (i32.const 6) (i32.const 320) (i32.const 14))",
    );
    assert_eq!(n, -2);
    assert!(ex.request_headers.get("x-evil").is_none());
    assert!(ex.request_headers.get("injected").is_none());
    let (n, _) = result_of(
        r#"(data (i32.const 300) "bad name") (data (i32.const 320) "v")"#,
        "(call $header_set (i32.const 0) (i32.const 300) (i32.const 8) (i32.const 320) (i32.const 1))",
    );
    assert_eq!(n, -2);
    let (n, ex) = result_of(
        r#"(data (i32.const 300) "content-length") (data (i32.const 320) "0")"#,
        "(call $header_set (i32.const 0) (i32.const 300) (i32.const 14) (i32.const 320) (i32.const 1))",
    );
    assert_eq!(n, -3);
    assert!(ex.request_headers.get("content-length").is_none());
    // Response headers are not writable in the request phase.
    let (n, _) = result_of(
        r#"(data (i32.const 300) "x-a") (data (i32.const 320) "1")"#,
        "(call $header_set (i32.const 1) (i32.const 300) (i32.const 3) (i32.const 320) (i32.const 1))",
    );
    assert_eq!(n, -3);
}

#[test]
fn request_facts_and_config() {
    let (n, _) = result_of("", "(call $request_method (i32.const 400) (i32.const 64))");
    assert_eq!(n, 4, "POST");
    let (n, _) = result_of("", "(call $request_uri (i32.const 400) (i32.const 64))");
    assert_eq!(n, "/v1/items?q=1".len() as i32);
    let (n, _) = result_of("", "(call $tenant (i32.const 400) (i32.const 64))");
    assert_eq!(n, 4, "acme");
    let (n, _) = result_of("", "(call $config (i32.const 400) (i32.const 64))");
    assert_eq!(n, "mode=strict".len() as i32);
    let (n, _) = result_of("", "(call $response_status)");
    assert_eq!(n, -3, "no status before the response");
}

#[test]
fn bodies_are_read_and_replaced_and_requests_rejected() {
    let rt = Runtime::new();
    // Upper-cases the body's ASCII letters in place and writes it back.
    let wasm = on_request(
        "(local $n i32) (local $i i32)
         (local.set $n (call $body_read (i32.const 1024) (i32.const 4096)))
         (loop $l
           (if (i32.lt_u (local.get $i) (local.get $n))
             (then
               (if (i32.and (i32.ge_u (i32.load8_u (i32.add (i32.const 1024) (local.get $i))) (i32.const 97))
                            (i32.le_u (i32.load8_u (i32.add (i32.const 1024) (local.get $i))) (i32.const 122)))
                 (then (i32.store8 (i32.add (i32.const 1024) (local.get $i))
                         (i32.sub (i32.load8_u (i32.add (i32.const 1024) (local.get $i))) (i32.const 32)))))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br $l))))
         (drop (call $body_write (i32.const 1024) (local.get $n)))",
    );
    let (r, ex) = run(&load(&rt, &wasm, Limits::default()));
    r.unwrap();
    assert_eq!(ex.request_body.as_deref(), Some(&b"{\"A\":1}"[..]));

    let reject = module(
        r#"(data (i32.const 0) "blocked")
           (func (export "cog_on_request") (result i32)
             (drop (call $reject (i32.const 403) (i32.const 0) (i32.const 7)))
             i32.const 0)"#,
    );
    let (r, ex) = run(&load(&rt, &reject, Limits::default()));
    r.unwrap();
    let rej = ex.rejected.unwrap();
    assert_eq!(rej.status, 403);
    assert_eq!(rej.body, Bytes::from_static(b"blocked"));

    // A status outside 400–599 is refused.
    let (n, ex) = result_of(
        "",
        "(call $reject (i32.const 200) (i32.const 0) (i32.const 0))",
    );
    assert_eq!(n, -2);
    assert!(ex.rejected.is_none());
}

#[test]
fn response_hook_sees_the_status_and_sets_response_headers() {
    let wasm = module(
        r#"(data (i32.const 0) "x-seen") (data (i32.const 16) "yes")
           (func (export "cog_on_response") (result i32)
             (if (i32.eq (call $response_status) (i32.const 201))
               (then (drop (call $header_set (i32.const 1) (i32.const 0) (i32.const 6) (i32.const 16) (i32.const 3)))))
             i32.const 0)"#,
    );
    let rt = Runtime::new();
    let p = load(&rt, &wasm, Limits::default());
    assert!(!p.hooks(Phase::Request) && p.hooks(Phase::Response));
    let mut ex = exchange("acme");
    // No request hook: nothing runs, nothing changes.
    p.call(Phase::Request, &mut ex).unwrap();
    ex.status = Some(http::StatusCode::CREATED);
    p.call(Phase::Response, &mut ex).unwrap();
    assert_eq!(ex.response_headers["x-seen"], "yes");
}

/// A plugin sees only its tenant's keys: the same key name under another
/// tenant is another entry, out of reach.
#[test]
fn kv_is_scoped_to_tenant_and_plugin_with_quotas() {
    let kv = Arc::new(MemoryKv::new());
    let rt = Runtime::new().kv(kv.clone());
    let scope = |tenant: &str| KvScope {
        tenant: tenant.into(),
        plugin: "test".into(),
    };
    kv.put(&scope("globex"), "secret", "globex-data");
    let read_secret = hook_reporting(
        r#"(data (i32.const 300) "secret")"#,
        "(call $kv_get (i32.const 300) (i32.const 6) (i32.const 400) (i32.const 64))",
    );
    let p = load(&rt, &read_secret, Limits::default());
    let mut acme = exchange("acme");
    p.call(Phase::Request, &mut acme).unwrap();
    assert_eq!(
        acme.request_headers["x-r"], "-1",
        "acme cannot see globex's key"
    );
    let mut globex = exchange("globex");
    p.call(Phase::Request, &mut globex).unwrap();
    assert_eq!(globex.request_headers["x-r"], "11");

    // Writes land in the caller's scope only.
    let write = on_request(
        r#"(i32.store (i32.const 300) (i32.const 0x79656b)) ;; "key"
           (drop (call $kv_set (i32.const 300) (i32.const 3) (i32.const 300) (i32.const 3)))"#,
    );
    let p = load(&rt, &write, Limits::default());
    p.call(Phase::Request, &mut exchange("acme")).unwrap();
    assert_eq!(kv.len(&scope("acme")), 1);
    assert_eq!(kv.len(&scope("globex")), 1);

    // Quotas: value size, key size, entries.
    let big_value = on_request(
        "(drop (call $kv_set (i32.const 0) (i32.const 3) (i32.const 0) (i32.const 2000)))",
    );
    let p = load(&rt, &big_value, Limits::default().max_kv_value_bytes(1000));
    assert_eq!(
        p.call(Phase::Request, &mut exchange("acme")),
        Err(PluginError::KvLimit("value too large"))
    );
    let many = on_request(
        "(local $i i32)
         (loop $l
           (i32.store (i32.const 0) (local.get $i))
           (drop (call $kv_set (i32.const 0) (i32.const 4) (i32.const 0) (i32.const 4)))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br $l))",
    );
    let p = load(&rt, &many, Limits::default().max_kv_entries(50));
    assert_eq!(
        p.call(Phase::Request, &mut exchange("initech")),
        Err(PluginError::KvLimit("scope full"))
    );
    assert_eq!(kv.len(&scope("initech")), 50);
    // Entries of 4 + 4 bytes under a 100-byte scope: twelve fit.
    let p = load(&rt, &many, Limits::default().max_kv_bytes(100));
    assert_eq!(
        p.call(Phase::Request, &mut exchange("umbrella")),
        Err(PluginError::KvLimit("scope at its byte limit"))
    );
    assert_eq!(kv.len(&scope("umbrella")), 12);
    assert_eq!(kv.bytes(&scope("umbrella")), 96);
}

/// Instances are reused for the same plugin and tenant (state in their
/// memory may persist), never across tenants, and never after a failure.
#[test]
fn instances_are_reused_per_tenant_only() {
    // Counts its calls in a global; reports the count in `x-r`; traps when
    // asked (`x-trap` present).
    let count = r#"(block (result i32)
             (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
             (if (i32.ge_s (call $header_get (i32.const 0) (i32.const 300) (i32.const 6) (i32.const 400) (i32.const 0)) (i32.const 0))
               (then unreachable))
             (global.get $calls))"#;
    let wasm = module(&format!(
        r#"(global $calls (mut i32) (i32.const 0))
           (data (i32.const 300) "x-trap")
           (func (export "cog_on_request") (result i32) {} i32.const 0)"#,
        report(count)
    ));
    let rt = Runtime::new();
    let p = load(&rt, &wasm, Limits::default());
    let on = |p: &cog_sandbox::Plugin, tenant: &str, trap: bool| {
        let mut ex = exchange(tenant);
        if trap {
            ex.request_headers.insert("x-trap", "1".parse().unwrap());
        }
        p.call(Phase::Request, &mut ex)
            .map(|()| ex.request_headers["x-r"].to_str().unwrap().to_owned())
    };
    let calls = |tenant: &str, trap: bool| on(&p, tenant, trap);
    assert_eq!(calls("acme", false).unwrap(), "1");
    assert_eq!(
        calls("acme", false).unwrap(),
        "2",
        "same tenant, same instance"
    );
    assert_eq!(
        calls("globex", false).unwrap(),
        "1",
        "another tenant never gets acme's instance"
    );
    assert!(calls("acme", true).is_err());
    assert_eq!(
        calls("acme", false).unwrap(),
        "1",
        "a failed instance is not reused"
    );
    // A copy with instances of its own takes none the original left, nor
    // leaves its own to it; its clones share them.
    let own = p.clone().with_own_instances();
    assert_eq!(
        on(&own, "acme", false).unwrap(),
        "1",
        "a copy starts afresh"
    );
    assert_eq!(on(&own.clone(), "acme", false).unwrap(), "2");
    assert_eq!(calls("acme", false).unwrap(), "2", "the original's kept");
}
