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

    /// Collects now, and returns the value of the `u64` counter `name`
    /// summed over the points whose attributes include every `(key,
    /// value)` of `attrs` (0 if none): `counter(n, &[("outcome", "ok")])`
    /// counts every `ok`, whatever the point's other attributes.
    pub fn counter(&self, name: &str, attrs: &[(&str, &str)]) -> u64 {
        let mut total = 0;
        self.visit(name, |data| {
            if let AggregatedMetrics::U64(MetricData::Sum(sum)) = data {
                for p in sum.data_points() {
                    if matches(p.attributes(), attrs) {
                        total += p.value();
                    }
                }
            }
        });
        total
    }

    /// Like [`counter`](Self::counter), for an `i64` up-down counter.
    pub fn up_down(&self, name: &str, attrs: &[(&str, &str)]) -> i64 {
        let mut total = 0;
        self.visit(name, |data| {
            if let AggregatedMetrics::I64(MetricData::Sum(sum)) = data {
                for p in sum.data_points() {
                    if matches(p.attributes(), attrs) {
                        total += p.value();
                    }
                }
            }
        });
        total
    }

    /// The value of the `u64` gauge `name` on the point whose attributes
    /// include every `(key, value)` of `attrs`; `None` if it has none.
    pub fn gauge(&self, name: &str, attrs: &[(&str, &str)]) -> Option<u64> {
        let mut found = None;
        self.visit(name, |data| {
            if let AggregatedMetrics::U64(MetricData::Gauge(g)) = data {
                found = g
                    .data_points()
                    .find(|p| matches(p.attributes(), attrs))
                    .map(|p| p.value());
            }
        });
        found
    }

    /// How many values an `f64` histogram recorded on matching points.
    pub fn histogram_count(&self, name: &str, attrs: &[(&str, &str)]) -> u64 {
        let mut total = 0;
        self.visit(name, |data| {
            if let AggregatedMetrics::F64(MetricData::Histogram(h)) = data {
                total += h
                    .data_points()
                    .filter(|p| matches(p.attributes(), attrs))
                    .map(|p| p.count())
                    .sum::<u64>();
            }
        });
        total
    }

    /// Collects now and visits `name` in that collection only: the
    /// exporter keeps every earlier one too, whose (cumulative) values must
    /// not be added again.
    fn visit(&self, name: &str, mut f: impl FnMut(&AggregatedMetrics)) {
        self.provider.force_flush().expect("metrics flush");
        let finished = self
            .exporter
            .get_finished_metrics()
            .expect("finished metrics");
        if let Some(rm) = finished.last() {
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
