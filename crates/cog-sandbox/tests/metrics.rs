//! Plugin call outcomes, read back through a real OpenTelemetry SDK.

use cog_sandbox::{Exchange, Limits, Phase, PluginError, Runtime};
use cog_testkit::MetricsCapture;

fn plugin(code: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module (memory (export "memory") 1)
             (func (export "cog_abi_version") (result i32) i32.const 1)
             (func (export "cog_on_request") (result i32) {code} i32.const 0))"#
    ))
    .unwrap()
}

#[test]
fn calls_are_counted_by_outcome() {
    let metrics = MetricsCapture::install();
    let rt = Runtime::new();
    let ok = rt.load("fine", &plugin(""), Limits::default()).unwrap();
    let spin = rt
        .load(
            "spin",
            &plugin("(loop $l (br $l))"),
            Limits::default().fuel(10_000),
        )
        .unwrap();
    let ex = || Exchange::new(http::Method::GET, "/".parse().unwrap(), "acme");
    for _ in 0..3 {
        ok.call(Phase::Request, &mut ex()).unwrap();
    }
    assert_eq!(
        spin.call(Phase::Request, &mut ex()),
        Err(PluginError::FuelExhausted)
    );
    let name = "cog.sandbox.calls";
    assert_eq!(
        metrics.counter(
            name,
            &[("plugin", "fine"), ("phase", "request"), ("outcome", "ok")]
        ),
        3
    );
    assert_eq!(
        metrics.counter(name, &[("plugin", "spin"), ("outcome", "fuel")]),
        1
    );
}
