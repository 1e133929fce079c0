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
        let mut latest = 0;
        self.visit(name, |data| {
            if let AggregatedMetrics::U64(MetricData::Sum(sum)) = data {
                for p in sum.data_points() {
                    if matches(p.attributes(), attrs) {
                        latest = latest.max(p.value());
                    }
                }
            }
        });
        latest
    }

    /// Like [`counter`](Self::counter), for an `i64` up-down counter (the
    /// latest value; 0 if none).
    pub fn up_down(&self, name: &str, attrs: &[(&str, &str)]) -> i64 {
        let mut latest = 0;
        self.visit(name, |data| {
            if let AggregatedMetrics::I64(MetricData::Sum(sum)) = data {
                for p in sum.data_points() {
                    if matches(p.attributes(), attrs) {
                        latest = p.value();
                    }
                }
            }
        });
        latest
    }

    /// How many values an `f64` histogram recorded on matching points.
    pub fn histogram_count(&self, name: &str, attrs: &[(&str, &str)]) -> u64 {
        let mut latest = 0;
        self.visit(name, |data| {
            if let AggregatedMetrics::F64(MetricData::Histogram(h)) = data {
                let n: u64 = h
                    .data_points()
                    .filter(|p| matches(p.attributes(), attrs))
                    .map(|p| p.count())
                    .sum();
                latest = latest.max(n);
            }
        });
        latest
    }

    fn visit(&self, name: &str, mut f: impl FnMut(&AggregatedMetrics)) {
        self.provider.force_flush().expect("metrics flush");
        for rm in self
            .exporter
            .get_finished_metrics()
            .expect("finished metrics")
        {
            for sm in rm.scope_metrics() {
                for m in sm.metrics().filter(|m| m.name() == name) {
                    f(m.data());
                }
            }
        }
    }
}

fn matches<'a>(
    have: impl Iterator<Item = &'a opentelemetry::KeyValue>,
    want: &[(&str, &str)],
) -> bool {
    let have: Vec<&opentelemetry::KeyValue> = have.collect();
    want.iter().all(|(k, v)| {
        have.iter()
            .any(|kv| kv.key.as_str() == *k && kv.value.as_str() == *v)
    })
}
