//! Capturing OpenTelemetry metrics in tests.

use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

/// A real OpenTelemetry SDK meter provider, installed as the global one,
/// that keeps every exported metric in memory for assertions.
///
/// Install it before building the component under test (instruments bind
/// to the global provider when they are created), in a test binary of its
/// own: the global provider is process-wide.
#[derive(Debug)]
pub struct MetricsCapture {
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
}

impl MetricsCapture {
    /// Installs a capturing provider as the global meter provider.
    pub fn install() -> Self {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        MetricsCapture { provider, exporter }
    }

    /// Collects now, and returns the latest value of the `u64` counter
    /// `name` over the points whose attributes include every `(key,
    /// value)` of `attrs` (0 if none).
    pub fn counter(&self, name: &str, attrs: &[(&str, &str)]) -> u64 {
        self.provider.force_flush().expect("metrics flush");
        let mut latest = 0;
        for rm in self
            .exporter
            .get_finished_metrics()
            .expect("finished metrics")
        {
            for sm in rm.scope_metrics() {
                for m in sm.metrics().filter(|m| m.name() == name) {
                    if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                        for p in sum.data_points() {
                            let all = attrs.iter().all(|(k, v)| {
                                p.attributes()
                                    .any(|kv| kv.key.as_str() == *k && kv.value.as_str() == *v)
                            });
                            if all {
                                latest = latest.max(p.value());
                            }
                        }
                    }
                }
            }
        }
        latest
    }
}
