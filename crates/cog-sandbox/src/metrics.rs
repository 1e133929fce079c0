//! `cog.sandbox.calls`: plugin hook calls by plugin, phase and outcome
//! (`ok`, or the error's kind: `fuel`, `deadline`, `memory`, `trap`,
//! `unavailable`, …); `cog.sandbox.refused_responses`: responses the
//! plugins could not read (over their input limit), answered 502.

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

fn refused() -> &'static Counter<u64> {
    static REFUSED: OnceLock<Counter<u64>> = OnceLock::new();
    REFUSED.get_or_init(|| {
        opentelemetry::global::meter("cog-sandbox")
            .u64_counter("cog.sandbox.refused_responses")
            .with_description("Responses the plugins could not read, answered 502")
            .with_unit("{response}")
            .build()
    })
}

pub(crate) fn refused_response(status: http::StatusCode) {
    let reason = if status == http::StatusCode::PAYLOAD_TOO_LARGE {
        "too_large"
    } else {
        "unreadable"
    };
    refused().add(1, &[KeyValue::new("reason", reason)]);
}
