use bytes::Bytes;
use cog_sandbox::{Exchange, Limits, Phase, Plugin, PluginError, Runtime};

/// Every host function, imported with its type.
pub(crate) const IMPORTS: &str = r#"
  (import "cog" "log" (func $log (param i32 i32 i32) (result i32)))
  (import "cog" "header_get" (func $header_get (param i32 i32 i32 i32 i32) (result i32)))
  (import "cog" "header_set" (func $header_set (param i32 i32 i32 i32 i32) (result i32)))
  (import "cog" "header_remove" (func $header_remove (param i32 i32 i32) (result i32)))
  (import "cog" "header_names" (func $header_names (param i32 i32 i32) (result i32)))
  (import "cog" "request_method" (func $request_method (param i32 i32) (result i32)))
  (import "cog" "request_uri" (func $request_uri (param i32 i32) (result i32)))
  (import "cog" "tenant" (func $tenant (param i32 i32) (result i32)))
  (import "cog" "response_status" (func $response_status (result i32)))
  (import "cog" "body_read" (func $body_read (param i32 i32) (result i32)))
  (import "cog" "body_write" (func $body_write (param i32 i32) (result i32)))
  (import "cog" "reject" (func $reject (param i32 i32 i32) (result i32)))
  (import "cog" "config" (func $config (param i32 i32) (result i32)))
  (import "cog" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "cog" "kv_set" (func $kv_set (param i32 i32 i32 i32) (result i32)))
  (import "cog" "kv_delete" (func $kv_delete (param i32 i32) (result i32)))
"#;

/// A plugin module: every import, one page of memory (or `memory`), the
/// version export, and `body` (functions, data, exports).
pub(crate) fn module(body: &str) -> Vec<u8> {
    module_with("(memory (export \"memory\") 1)", body)
}

pub(crate) fn module_with(memory: &str, body: &str) -> Vec<u8> {
    let text = format!(
        "(module {IMPORTS} {memory}
           (func (export \"cog_abi_version\") (result i32) i32.const 1)
           {body})"
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A request hook running `code` (which leaves nothing on the stack).
pub(crate) fn on_request(code: &str) -> Vec<u8> {
    module(&format!(
        "(func (export \"cog_on_request\") (result i32) {code} i32.const 0)"
    ))
}

/// A well-behaved plugin: sets `x-plugin: ok` on the request.
pub(crate) fn good() -> Vec<u8> {
    module(
        r#"(data (i32.const 0) "x-plugin")
           (data (i32.const 16) "ok")
           (func (export "cog_on_request") (result i32)
             (drop (call $header_set (i32.const 0) (i32.const 0) (i32.const 8) (i32.const 16) (i32.const 2)))
             i32.const 0)"#,
    )
}

pub(crate) fn exchange(tenant: &str) -> Exchange {
    let mut ex = Exchange::new(http::Method::POST, "/v1/items?q=1".parse().unwrap(), tenant);
    ex.request_headers
        .insert("user-agent", "test/1".parse().unwrap());
    ex.request_body = Some(Bytes::from_static(b"{\"a\":1}"));
    ex
}

pub(crate) fn load(rt: &Runtime, wasm: &[u8], limits: Limits) -> Plugin {
    rt.load("test", wasm, limits).unwrap()
}

/// Runs the request hook on a fresh exchange.
pub(crate) fn run(plugin: &Plugin) -> (Result<(), PluginError>, Exchange) {
    let mut ex = exchange("acme");
    ex.request_headers
        .insert("x-existing", "1".parse().unwrap());
    let r = plugin.call(Phase::Request, &mut ex);
    (r, ex)
}

/// The host still serves: a good plugin, loaded on the same runtime, works.
pub(crate) fn still_serving(rt: &Runtime) {
    let p = load(rt, &good(), Limits::default());
    let (r, ex) = run(&p);
    r.unwrap();
    assert_eq!(ex.request_headers["x-plugin"], "ok");
}
