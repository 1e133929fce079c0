//! `/metrics`: OpenTelemetry metrics (limiter, cache, sandbox, HTTP) and
//! the demo's own counters, in the Prometheus text format.

#![allow(dead_code, unreachable_pub)]

use std::fmt::Write;
use std::sync::atomic::Ordering;

use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use parking_lot::Mutex;

use crate::app::Demo;

/// The meter provider the demo installs globally, read on each scrape.
pub struct Metrics {
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
    scrape: Mutex<()>,
}

impl Metrics {
    /// Installs the global meter provider (before the layers are built:
    /// instruments bind to it when created).
    pub fn install() -> Self {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        Metrics {
            provider,
            exporter,
            scrape: Mutex::new(()),
        }
    }

    /// Everything, as Prometheus text.
    pub fn render(&self, demo: &Demo) -> String {
        let mut out = String::new();
        {
            let _one_at_a_time = self.scrape.lock();
            let _ = self.provider.force_flush();
            let batches = self.exporter.get_finished_metrics().unwrap_or_default();
            self.exporter.reset();
            // Cumulative: the last export holds every instrument's state.
            if let Some(rm) = batches.last() {
                for sm in rm.scope_metrics() {
                    for m in sm.metrics() {
                        write_metric(&mut out, m.name(), m.data());
                    }
                }
            }
        }
        let c = &demo.counters;
        gauge(
            &mut out,
            "demo_model_calls_total",
            c.model_calls.load(Ordering::Relaxed) as f64,
            "counter",
        );
        gauge(
            &mut out,
            "demo_database_reads_total",
            c.database_reads.load(Ordering::Relaxed) as f64,
            "counter",
        );
        for (tier, cache) in [("completions", &demo.completions)] {
            let s = cache.stats();
            for (name, v) in [
                ("l1_hits", s.l1_hits),
                ("l1_misses", s.l1_misses),
                ("l2_hits", s.l2_hits),
                ("l2_misses", s.l2_misses),
                ("l2_errors", s.l2_errors),
                ("stale_served", s.stale_served),
                ("loads", s.loads),
            ] {
                let _ = writeln!(out, "cog_cache_{name}_total{{cache=\"{tier}\"}} {v}");
            }
            let _ = writeln!(
                out,
                "cog_cache_l2_circuit_open{{cache=\"{tier}\"}} {}",
                u8::from(s.l2_circuit_open)
            );
        }
        let s = demo.pages.stats();
        let _ = writeln!(
            out,
            "cog_cache_l1_hits_total{{cache=\"pages\"}} {}",
            s.l1_hits
        );
        let _ = writeln!(
            out,
            "cog_cache_l2_hits_total{{cache=\"pages\"}} {}",
            s.l2_hits
        );
        out
    }
}

fn gauge(out: &mut String, name: &str, v: f64, kind: &str) {
    let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {v}");
}

fn prom_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn labels<'a>(attrs: impl Iterator<Item = &'a KeyValue>, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = attrs
        .map(|kv| {
            let v = kv
                .value
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            format!("{}=\"{v}\"", prom_name(kv.key.as_str()))
        })
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn write_metric(out: &mut String, name: &str, data: &AggregatedMetrics) {
    let name = prom_name(name);
    macro_rules! points {
        ($d:expr) => {
            match $d {
                MetricData::Sum(sum) => {
                    let _ = writeln!(
                        out,
                        "# TYPE {name} {}",
                        if sum.is_monotonic() {
                            "counter"
                        } else {
                            "gauge"
                        }
                    );
                    for p in sum.data_points() {
                        let _ =
                            writeln!(out, "{name}{} {}", labels(p.attributes(), None), p.value());
                    }
                }
                MetricData::Gauge(g) => {
                    let _ = writeln!(out, "# TYPE {name} gauge");
                    for p in g.data_points() {
                        let _ =
                            writeln!(out, "{name}{} {}", labels(p.attributes(), None), p.value());
                    }
                }
                MetricData::Histogram(h) => {
                    let _ = writeln!(out, "# TYPE {name} histogram");
                    for p in h.data_points() {
                        let mut cumulative = 0;
                        for (bound, count) in p.bounds().zip(p.bucket_counts()) {
                            cumulative += count;
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {cumulative}",
                                labels(p.attributes(), Some(("le", bound.to_string())))
                            );
                        }
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {}",
                            labels(p.attributes(), Some(("le", "+Inf".into()))),
                            p.count()
                        );
                        let _ = writeln!(
                            out,
                            "{name}_sum{} {}",
                            labels(p.attributes(), None),
                            p.sum()
                        );
                        let _ = writeln!(
                            out,
                            "{name}_count{} {}",
                            labels(p.attributes(), None),
                            p.count()
                        );
                    }
                }
                _ => {}
            }
        };
    }
    match data {
        AggregatedMetrics::F64(d) => points!(d),
        AggregatedMetrics::U64(d) => points!(d),
        AggregatedMetrics::I64(d) => points!(d),
    }
}
