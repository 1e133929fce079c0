//! The process-wide count of idle instances, in a binary of its own (no
//! other test's instances): a thread's idle instances leave the count
//! when the thread ends, so the bound never fills with instances nobody
//! can use.

use cog_sandbox::{Exchange, Limits, Phase, Runtime};

#[test]
fn a_threads_idle_instances_leave_the_count_when_it_ends() {
    let wasm = wat::parse_str(
        r#"(module
             (memory (export "memory") 1)
             (func (export "cog_abi_version") (result i32) i32.const 1)
             (func (export "cog_on_request") (result i32) i32.const 0))"#,
    )
    .unwrap();
    let plugin = Runtime::new()
        .load("noop", &wasm, Limits::default())
        .unwrap();
    // Loading ran the module once on this thread, which keeps that one.
    let base = Runtime::idle_instances();
    let held = std::thread::scope(|s| {
        s.spawn(|| {
            for tenant in 0..10 {
                let mut ex = Exchange::new(
                    http::Method::GET,
                    http::Uri::from_static("/"),
                    format!("t{tenant}").as_str(),
                );
                plugin.call(Phase::Request, &mut ex).unwrap();
            }
            Runtime::idle_instances()
        })
        .join()
        .unwrap()
    });
    assert_eq!(
        held,
        base + 10,
        "one idle instance per tenant while the thread lives"
    );
    assert_eq!(Runtime::idle_instances(), base, "gone with the thread");
}
