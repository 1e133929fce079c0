//! `/metrics`: every OpenTelemetry metric (HTTP server, limiter, cache,
//! sandbox) and the demo's own counters, as an OpenMetrics scrape body
//! through `cog_trace::prometheus`.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cog_trace::prometheus::Prometheus;
use opentelemetry::metrics::MeterProvider as _;

use crate::app::Counters;

/// The meter provider the demo installs globally, read on each scrape.
#[allow(missing_debug_implementations)]
pub struct Metrics {
    prometheus: Prometheus,
}

impl Metrics {
    /// Installs the global meter provider (before the layers are built:
    /// instruments bind to it when created).
    pub fn install() -> Self {
        let prometheus = Prometheus::new();
        prometheus.install_global();
        Metrics { prometheus }
    }

    /// Adds the demo's own counters (`demo_model_calls_total`,
    /// `demo_database_reads_total`).
    pub fn observe(&self, counters: &Arc<Counters>) {
        let meter = self.prometheus.meter_provider().meter("cog-demo");
        for (name, help, read) in [
            (
                "demo.model_calls",
                "Calls that reached the simulated model",
                (|c: &Counters| c.model_calls.load(Ordering::Relaxed)) as fn(&Counters) -> u64,
            ),
            (
                "demo.database_reads",
                "Reads that reached the simulated database",
                |c: &Counters| c.database_reads.load(Ordering::Relaxed),
            ),
        ] {
            let counters = counters.clone();
            let _ = meter
                .u64_observable_counter(name)
                .with_description(help)
                .with_callback(move |o| o.observe(read(&counters), &[]))
                .build();
        }
    }

    /// Everything, as an OpenMetrics body.
    pub fn render(&self) -> String {
        self.prometheus.render()
    }

    /// Stops the meter provider.
    pub fn shutdown(&self) {
        self.prometheus.shutdown();
    }
}

/// `Content-Type` of [`Metrics::render`].
pub const CONTENT_TYPE: &str = cog_trace::prometheus::CONTENT_TYPE;
