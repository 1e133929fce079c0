//! `cog.sandbox.calls`: plugin hook calls by plugin, phase and outcome
//! (`ok`, or the error's kind: `fuel`, `deadline`, `memory`, `trap`, …).

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;

use crate::Phase;

fn calls() -> &'static Counter<u64> {
    static CALLS: OnceLock<Counter<u64>> = OnceLock::new();
    CALLS.get_or_init(|| {
        opentelemetry::global::meter("cog-sandbox")
            .u64_counter("cog.sandbox.calls")
            .with_description("Plugin hook calls, by plugin, phase and outcome")
            .with_unit("{call}")
            .build()
    })
}

pub(crate) fn call(plugin: &str, phase: Phase, outcome: &'static str) {
    let phase = phase.as_str();
    calls().add(
        1,
        &[
            KeyValue::new("plugin", plugin.to_owned()),
            KeyValue::new("phase", phase),
            KeyValue::new("outcome", outcome),
        ],
    );
}
