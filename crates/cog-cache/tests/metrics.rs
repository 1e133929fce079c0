//! Per-tier counters, read back through a real OpenTelemetry SDK.

use cog_cache::TieredCache;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

/// The latest value of a u64 sum whose attributes include all of `attrs`.
fn counter(exporter: &InMemoryMetricExporter, name: &str, attrs: &[(&str, &str)]) -> u64 {
    let mut latest = 0;
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == name) {
                if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                    for p in sum.data_points() {
                        let matches = attrs.iter().all(|(k, v)| {
                            p.attributes()
                                .any(|kv| kv.key.as_str() == *k && kv.value.as_str() == *v)
                        });
                        if matches {
                            latest = latest.max(p.value());
                        }
                    }
                }
            }
        }
    }
    latest
}

#[tokio::test]
async fn hits_misses_and_loads_are_exported() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    opentelemetry::global::set_meter_provider(provider.clone());

    let cache: TieredCache<String, String> = TieredCache::builder().build().unwrap();
    let k = "k".to_owned();
    for _ in 0..4 {
        cache
            .get_or_load(&k, || async { Ok::<_, ()>("v".to_owned()) })
            .await
            .unwrap();
    }
    let _ = cache
        .get_or_load(&"bad".to_owned(), || async { Err::<String, _>("down") })
        .await;
    provider.force_flush().unwrap();
    let requests = "cog.cache.requests";
    assert_eq!(
        counter(&exporter, requests, &[("tier", "l1"), ("result", "hit")]),
        3
    );
    assert_eq!(
        counter(&exporter, requests, &[("tier", "l1"), ("result", "miss")]),
        2
    );
    assert_eq!(
        counter(&exporter, "cog.cache.loads", &[("result", "ok")]),
        1
    );
    assert_eq!(
        counter(&exporter, "cog.cache.loads", &[("result", "error")]),
        1
    );
}
