//! The decision counter, read back through a real OpenTelemetry SDK.

use std::convert::Infallible;

use cog_ratelimit::{Global, Limit, MemoryStore, Quota, RateLimitLayer};
use http::{Request, Response, StatusCode};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use tower::{Layer, ServiceExt, service_fn};

/// Sum of a u64 counter's points whose attributes include `attr`.
fn counter(exporter: &InMemoryMetricExporter, name: &str, attr: (&str, &str)) -> u64 {
    let mut total = 0;
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == name) {
                if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                    for p in sum.data_points() {
                        if p.attributes()
                            .any(|kv| kv.key.as_str() == attr.0 && kv.value.as_str() == attr.1)
                        {
                            total = total.max(p.value());
                        }
                    }
                }
            }
        }
    }
    total
}

#[tokio::test]
async fn decisions_are_counted_by_outcome() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    opentelemetry::global::set_meter_provider(provider.clone());
    let _ = provider.meter("warm-up");

    let quota = Quota::single(Limit::per_day(2)).unwrap();
    let svc = RateLimitLayer::new(MemoryStore::new(), Global, quota).layer(service_fn(
        |_req: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) },
    ));
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            svc.clone()
                .oneshot(Request::new(String::new()))
                .await
                .unwrap()
                .status(),
        );
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 2);
    provider.force_flush().unwrap();
    assert_eq!(
        counter(&exporter, "cog.ratelimit.decisions", ("outcome", "allowed")),
        2
    );
    assert_eq!(
        counter(&exporter, "cog.ratelimit.decisions", ("outcome", "denied")),
        3
    );
}
