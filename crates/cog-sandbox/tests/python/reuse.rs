//! Interpreters are kept per (plugin, tenant) and reused — never across
//! tenants, never after a failure — within a bound; snapshots, clocks and
//! randomness.

use std::time::{Duration, Instant, SystemTime};

use cog_sandbox::{Clock, Limits, Phase, PluginError};

use crate::support::{exchange, python, runtime_with, seeded};

const COUNTER: &str = "CALLS = 0
def on_request(req):
    global CALLS
    CALLS += 1
    if req.headers.get('x-fail'):
        raise RuntimeError('asked to')
    req.headers['x-r'] = str(CALLS)
";

fn call(p: &cog_sandbox::Plugin, tenant: &str, fail: bool) -> Result<String, PluginError> {
    let mut ex = exchange(tenant);
    if fail {
        ex.request_headers.insert("x-fail", "1".parse().unwrap());
    }
    p.call(Phase::Request, &mut ex)
        .map(|()| ex.request_headers["x-r"].to_str().unwrap().to_owned())
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < until, "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn interpreters_are_reused_per_tenant_only() {
    let rt = runtime_with(python());
    let p = rt
        .load_python("counter", COUNTER.as_bytes(), Limits::python())
        .unwrap();
    assert_eq!(call(&p, "acme", false).unwrap(), "1");
    assert_eq!(
        call(&p, "acme", false).unwrap(),
        "2",
        "same tenant, same interpreter"
    );
    assert_eq!(
        call(&p, "globex", false).unwrap(),
        "1",
        "another tenant never gets acme's interpreter"
    );
    assert!(matches!(
        call(&p, "acme", true),
        Err(PluginError::Exception(_))
    ));
    assert_eq!(
        call(&p, "acme", false).unwrap(),
        "1",
        "an interpreter whose call failed is not reused"
    );
    // Another plugin with the same source has interpreters of its own.
    let q = rt
        .load_python("counter", COUNTER.as_bytes(), Limits::python())
        .unwrap();
    assert_eq!(call(&q, "acme", false).unwrap(), "1");
    // From another thread, the same interpreter (it lives on its own).
    let p2 = p.clone();
    let n = std::thread::spawn(move || call(&p2, "acme", false).unwrap())
        .join()
        .unwrap();
    assert_eq!(n, "2");
}

/// A copy with interpreters of its own (the directory gives each tenant
/// one, so that a tenant created again starts afresh) takes none the
/// original left, nor leaves its own to it; its clones share them; its
/// idle ones go with it.
#[test]
fn a_copy_with_its_own_instances_starts_afresh() {
    let rt = runtime_with(python());
    let p = rt
        .load_python("counter", COUNTER.as_bytes(), Limits::python())
        .unwrap();
    assert_eq!(call(&p, "acme", false).unwrap(), "1");
    let own = p.clone().with_own_instances();
    assert_eq!(
        call(&own, "acme", false).unwrap(),
        "1",
        "a copy starts afresh"
    );
    assert_eq!(call(&own.clone(), "acme", false).unwrap(), "2");
    assert_eq!(call(&p, "acme", false).unwrap(), "2", "the original's kept");
    assert_eq!(rt.python_interpreters().idle, 2);
    drop(own);
    assert_eq!(rt.python_interpreters().idle, 1, "the copy's went with it");
    assert_eq!(call(&p, "acme", false).unwrap(), "3");
}

#[test]
fn idle_interpreters_are_bounded_and_go_with_their_plugin() {
    let rt = runtime_with(python().max_idle(2));
    let p = rt
        .load_python("counter", COUNTER.as_bytes(), Limits::python())
        .unwrap();
    for tenant in ["t1", "t2", "t3", "t4"] {
        call(&p, tenant, false).unwrap();
    }
    assert_eq!(rt.python_interpreters().idle, 2);
    eventually("the evicted interpreters' threads end", || {
        rt.python_interpreters().live == 2
    });
    // The least recently used went first: t4 is still warm, t1 is not.
    assert_eq!(call(&p, "t4", false).unwrap(), "2");
    assert_eq!(call(&p, "t1", false).unwrap(), "1");
    drop(p);
    assert_eq!(rt.python_interpreters().idle, 0);
    eventually("a dropped plugin's interpreters end", || {
        rt.python_interpreters().live == 0
    });
}

#[test]
fn a_snapshot_starts_later_interpreters_and_can_be_turned_off() {
    let rt = runtime_with(python());
    assert_eq!(rt.python_interpreters().started_memory_bytes, 0);
    rt.load_python("a", b"def on_request(req): pass\n", Limits::python())
        .unwrap();
    let started = rt.python_interpreters().started_memory_bytes;
    assert!(started >= 10 << 20, "{started}");
    // Without snapshots: no image kept, plugins still run.
    let rt = runtime_with(python().snapshots(false));
    let p = rt
        .load_python("counter", COUNTER.as_bytes(), Limits::python())
        .unwrap();
    assert_eq!(call(&p, "acme", false).unwrap(), "1");
    assert_eq!(rt.python_interpreters().started_memory_bytes, 0);
}

#[test]
fn a_memory_cap_below_the_started_interpreter_is_a_typed_error() {
    let rt = runtime_with(python());
    rt.load_python("a", b"def on_request(req): pass\n", Limits::python())
        .unwrap();
    let e = rt
        .load_python(
            "small",
            b"def on_request(req): pass\n",
            Limits::python().memory_bytes(4 << 20),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            PluginError::MemoryTooLarge { .. } | PluginError::MemoryLimit
        ),
        "{e:?}"
    );
}

#[test]
fn clocks_and_randomness_are_what_the_host_grants() {
    let source = "import os, time, random
def on_request(req):
    req.headers['x-r'] = f'{time.time()} {time.monotonic()} {os.urandom(8).hex()} {random.random()}'
";
    let report = |rt: &cog_sandbox::Runtime| {
        let p = rt
            .load_python("t", source.as_bytes(), Limits::python())
            .unwrap();
        call(&p, "acme", false).unwrap()
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let fixed = runtime_with(
        python()
            .clock(Clock::Fixed(at))
            .entropy(cog_sandbox::Entropy::Seeded(7)),
    );
    let r = report(&fixed);
    let parts: Vec<&str> = r.split(' ').collect();
    assert_eq!(parts[0], "1700000000.0", "{r}");
    assert_eq!(parts[1], "0.0", "the monotonic clock stands still");
    // The same seed, the same bytes; another seed, others.
    let again = report(&seeded(7));
    assert_eq!(again.split(' ').nth(2), Some(parts[2]));
    let other = report(&seeded(8));
    assert_ne!(other.split(' ').nth(2), Some(parts[2]));
    // The host's clock by default.
    let now = report(&runtime_with(python()));
    let t: f64 = now.split(' ').next().unwrap().parse().unwrap();
    let host = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((host - t).abs() < 60.0, "{t} vs {host}");
}

/// How long the plugin layer may wait for one call: the deadline, and for
/// Python an interpreter's start (started, then the plugin loaded).
#[test]
fn a_python_call_may_take_its_deadline_and_an_interpreters_start() {
    let deadline = Duration::from_millis(250);
    let p = crate::support::load_with(
        "def on_request(req):\n    pass\n",
        cog_sandbox::Limits::python().deadline(deadline),
    );
    // The suite's interpreters start under a 60 s start-up deadline.
    assert_eq!(p.longest_call(), deadline + Duration::from_secs(120));
    let wasm = cog_sandbox::Runtime::new()
        .load(
            "w",
            &wat::parse_str(
                r#"(module (memory (export "memory") 1)
                     (func (export "cog_abi_version") (result i32) i32.const 1)
                     (func (export "cog_on_request") (result i32) i32.const 0))"#,
            )
            .unwrap(),
            cog_sandbox::Limits::default().deadline(deadline),
        )
        .unwrap();
    assert_eq!(wasm.longest_call(), deadline);
}
