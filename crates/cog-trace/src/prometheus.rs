//! OpenTelemetry metrics served to Prometheus: a pull endpoint's body in
//! the OpenMetrics text format, encoded by the Prometheus project's own
//! Rust client (`prometheus-client`).
//!
//! The OpenTelemetry Prometheus exporter crate is discontinued; this
//! bridge reads the SDK through a periodic reader whose exporter keeps
//! only the latest collection (cumulative, so it holds every instrument's
//! state — nothing accumulates between scrapes), and hands it to
//! `prometheus-client`'s encoder, which writes `# HELP`, `# TYPE`,
//! `# UNIT`, the `_total` suffix of counters and escaped label values.
//!
//! Names follow the OpenTelemetry → Prometheus compatibility rules:
//! `http.server.request.duration` (unit `s`) is
//! `http_server_request_duration_seconds`; units `By` and `ms` become
//! `_bytes` and `_milliseconds`; annotation units (`{request}`) add
//! nothing; label keys have `.` (and anything else outside
//! `[a-zA-Z0-9_]`, colons included) turned into `_` (`http_route`), and
//! keys that meet on one label name are one label, their values joined
//! with `;`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`Prometheus::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A meter provider whose metrics are read on each scrape.
///
/// ```no_run
/// let metrics = cog_trace::prometheus::Prometheus::new();
/// metrics.install_global(); // before building layers: instruments bind then
/// // GET /metrics → (CONTENT_TYPE, metrics.render())
/// ```
pub struct Prometheus {
    provider: SdkMeterProvider,
    registry: Registry,
    scrape: Mutex<()>,
}

impl fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prometheus").finish_non_exhaustive()
    }
}

impl Default for Prometheus {
    fn default() -> Self {
        Self::new()
    }
}

impl Prometheus {
    /// A meter provider, and nothing else on the endpoint.
    pub fn new() -> Self {
        Self::with_registry(Registry::default())
    }

    /// Serves `registry` (an application's own `prometheus-client`
    /// metrics) along with the OpenTelemetry ones.
    pub fn with_registry(mut registry: Registry) -> Self {
        let latest = Arc::new(Mutex::new(Vec::new()));
        let reader = PeriodicReader::builder(Latest(latest.clone()))
            // Collections happen on scrapes; the timer only keeps the
            // snapshot from growing old when nobody scrapes.
            .with_interval(Duration::from_secs(3600))
            .build();
        registry.register_collector(Box::new(Snapshot(latest)));
        Prometheus {
            provider: SdkMeterProvider::builder().with_reader(reader).build(),
            registry,
            scrape: Mutex::new(()),
        }
    }

    /// The meter provider to take meters from.
    pub fn meter_provider(&self) -> &SdkMeterProvider {
        &self.provider
    }

    /// Installs the meter provider as the global one (cog's layers and
    /// caches take their instruments from it when built).
    pub fn install_global(&self) {
        opentelemetry::global::set_meter_provider(self.provider.clone());
    }

    /// Every metric now, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    /// Blocks while the SDK collects (microseconds to a millisecond): call
    /// it from a blocking thread in async code.
    pub fn render(&self) -> String {
        let _one_at_a_time = self.scrape.lock();
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(target: "cog_trace", error = %e, "collecting metrics failed");
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(target: "cog_trace", error = %e, "encoding metrics failed");
        }
        out
    }

    /// Stops the meter provider.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

/// One metric family, converted from the SDK's collection.
#[derive(Debug)]
struct Family {
    help: String,
    unit: Option<Unit>,
    kind: MetricType,
    points: Vec<Point>,
}

/// A data point's labels and value.
type Point = (Vec<(String, String)>, Value);

#[derive(Debug)]
enum Value {
    Number(f64),
    Histogram {
        sum: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    },
}

type Families = Arc<Mutex<Vec<(String, Family)>>>;

/// The exporter: keeps the latest collection, converted.
#[derive(Debug)]
struct Latest(Families);

impl PushMetricExporter for Latest {
    fn export(&self, metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        *self.0.lock() = convert(metrics);
        std::future::ready(Ok(()))
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// The collector: encodes the latest collection on each scrape.
#[derive(Debug)]
struct Snapshot(Families);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let families = self.0.lock();
        for (name, f) in families.iter() {
            let mut metric = encoder.encode_descriptor(name, &f.help, f.unit.as_ref(), f.kind)?;
            for (labels, value) in &f.points {
                let point = metric.encode_family(labels)?;
                match (value, f.kind) {
                    (Value::Number(v), MetricType::Counter) => {
                        ConstCounter::new(*v).encode(point)?
                    }
                    (Value::Number(v), _) => ConstGauge::new(*v).encode(point)?,
                    (
                        Value::Histogram {
                            sum,
                            count,
                            buckets,
                        },
                        _,
                    ) => {
                        let mut point = point;
                        point.encode_histogram::<Vec<(String, String)>>(
                            *sum, *count, buckets, None,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn convert(metrics: &ResourceMetrics) -> Vec<(String, Family)> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    // In scope-name order: when two instruments of different kinds share a
    // name, the same one wins on every scrape.
    let mut scopes: Vec<_> = metrics.scope_metrics().collect();
    scopes.sort_by(|a, b| a.scope().name().cmp(b.scope().name()));
    for scope in scopes {
        for m in scope.metrics() {
            let (kind, points) = match m.data() {
                AggregatedMetrics::F64(d) => points(d, |v| v),
                AggregatedMetrics::U64(d) => points(d, |v| v as f64),
                AggregatedMetrics::I64(d) => points(d, |v| v as f64),
            };
            let Some(kind) = kind else { continue };
            let (name, unit) = prometheus_name(m.name(), m.unit(), kind);
            match out.get_mut(&name) {
                // The same instrument from two meters: one family.
                Some(f) if f.kind == kind => f.points.extend(points),
                Some(_) => {}
                None => {
                    out.insert(
                        name,
                        Family {
                            help: m.description().to_owned(),
                            unit,
                            kind,
                            points,
                        },
                    );
                }
            }
        }
    }
    out.into_iter().collect()
}

fn points<T: Copy>(
    data: &MetricData<T>,
    number: impl Fn(T) -> f64,
) -> (Option<MetricType>, Vec<Point>) {
    match data {
        MetricData::Sum(sum) => (
            Some(if sum.is_monotonic() {
                MetricType::Counter
            } else {
                MetricType::Gauge
            }),
            sum.data_points()
                .map(|p| {
                    (
                        labels(p.attributes(), false),
                        Value::Number(number(p.value())),
                    )
                })
                .collect(),
        ),
        MetricData::Gauge(g) => (
            Some(MetricType::Gauge),
            g.data_points()
                .map(|p| {
                    (
                        labels(p.attributes(), false),
                        Value::Number(number(p.value())),
                    )
                })
                .collect(),
        ),
        MetricData::Histogram(h) => (
            Some(MetricType::Histogram),
            h.data_points()
                .map(|p| {
                    let mut buckets: Vec<(f64, u64)> = p.bounds().zip(p.bucket_counts()).collect();
                    let counted: u64 = buckets.iter().map(|(_, c)| c).sum();
                    buckets.push((f64::INFINITY, p.count().saturating_sub(counted)));
                    let value = Value::Histogram {
                        sum: number(p.sum()),
                        count: p.count(),
                        buckets,
                    };
                    (labels(p.attributes(), true), value)
                })
                .collect(),
        ),
        // Exponential histograms have no classic Prometheus form.
        _ => (None, Vec::new()),
    }
}

/// A data point's attributes as labels. Keys become label names
/// ([`label_name`]); keys that meet on one name are one label, their values
/// joined with `;` in the order of the original keys (the OpenTelemetry →
/// Prometheus compatibility rule). A name twice in one sample would make
/// the whole scrape body invalid, every metric in it lost.
fn labels<'a>(attrs: impl Iterator<Item = &'a KeyValue>, histogram: bool) -> Vec<(String, String)> {
    let mut named: Vec<(String, &str, String)> = attrs
        .map(|kv| {
            let key = kv.key.as_str();
            (label_name(key, histogram), key, kv.value.to_string())
        })
        .collect();
    named.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut out: Vec<(String, String)> = Vec::with_capacity(named.len());
    for (name, _, value) in named {
        match out.last_mut() {
            Some((last, joined)) if *last == name => {
                joined.push(';');
                joined.push_str(&value);
            }
            _ => out.push((name, value)),
        }
    }
    out
}

/// An attribute key as a label name, `[a-zA-Z_][a-zA-Z0-9_]*`: as a
/// metric name ([`sanitize`]) but without colons, which label names do not
/// allow; never empty; and, on a histogram, never the encoder's own `le`.
fn label_name(key: &str, histogram: bool) -> String {
    let name = sanitize(&key.replace(':', "_"));
    match name.as_str() {
        "" => "_".to_owned(),
        "le" if histogram => "_le".to_owned(),
        _ => name,
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`: every other character becomes `_`, runs of
/// `_` collapse, and a leading digit gets a `_` before it.
fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == ':' {
            c
        } else {
            '_'
        };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The family name (without the unit and `_total` suffixes the encoder
/// adds) and the unit.
fn prometheus_name(name: &str, unit: &str, kind: MetricType) -> (String, Option<Unit>) {
    let unit = match unit {
        "s" => Some(Unit::Seconds),
        "By" => Some(Unit::Bytes),
        "ms" => Some(Unit::Other("milliseconds".into())),
        "1" if kind == MetricType::Gauge => Some(Unit::Ratios),
        "" | "1" => None,
        u if u.starts_with('{') => None,
        u => Some(Unit::Other(sanitize(u).trim_matches('_').to_owned()))
            .filter(|u| !u.as_str().is_empty()),
    };
    let mut name = sanitize(name);
    if kind == MetricType::Counter
        && let Some(stripped) = name.strip_suffix("_total")
    {
        name = stripped.to_owned();
    }
    if let Some(u) = &unit {
        let suffix = format!("_{}", u.as_str());
        if let Some(stripped) = name.strip_suffix(&suffix) {
            name = stripped.to_owned();
        }
    }
    (name, unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_compatibility_rules() {
        let (n, u) = prometheus_name("http.server.request.duration", "s", MetricType::Histogram);
        assert_eq!(
            (n.as_str(), u.map(|u| u.as_str().to_owned())),
            ("http_server_request_duration", Some("seconds".into()))
        );
        let (n, u) = prometheus_name("cog.cache.hits_total", "{hit}", MetricType::Counter);
        assert_eq!((n.as_str(), u.is_none()), ("cog_cache_hits", true));
        let (n, _) = prometheus_name("9lives..x", "", MetricType::Gauge);
        assert_eq!(n, "_9lives_x");
        let unit = |name, unit, kind| {
            prometheus_name(name, unit, kind)
                .1
                .map(|u| u.as_str().to_owned())
        };
        assert_eq!(
            unit("load", "1", MetricType::Gauge).as_deref(),
            Some("ratios")
        );
        assert_eq!(unit("events", "1", MetricType::Counter), None);
        assert_eq!(
            unit("made", "widgets", MetricType::Counter).as_deref(),
            Some("widgets")
        );
        assert_eq!(unit("odd", "_", MetricType::Counter), None);
        let (n, u) = prometheus_name("payload_bytes", "By", MetricType::Gauge);
        assert_eq!(
            (n.as_str(), u.map(|u| u.as_str().to_owned())),
            ("payload", Some("bytes".into()))
        );
    }
}
