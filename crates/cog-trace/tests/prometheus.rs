//! The Prometheus scrape body, read back by the Prometheus project's
//! reference OpenMetrics parser, as a scraper reads it.

use std::convert::Infallible;

use cog_testkit::openmetrics::{self, Family};
use cog_trace::prometheus::Prometheus;
use cog_trace::server::TraceLayer;
use cog_trace::{MatchedRoute, TraceConfig};
use http::{Request, Response};
use http_body_util::Full;
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use tower::{Layer, ServiceExt, service_fn};

type Body = Full<bytes::Bytes>;

fn family<'a>(families: &'a [Family], name: &str) -> &'a Family {
    families
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no family {name} in {families:#?}"))
}

#[tokio::test]
async fn the_scrape_body_is_openmetrics_with_prometheus_names() {
    let metrics = Prometheus::new();
    metrics.install_global();
    let guard = TraceConfig::from_vars(|k| (k == "OTEL_TRACES_EXPORTER").then(|| "none".into()))
        .unwrap()
        .build()
        .unwrap();
    let svc = TraceLayer::from_guard(&guard).layer(service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::default()))
    }));
    for id in 0..3 {
        let mut req = Request::post(format!("/v1/items/{id}"))
            .body(Body::default())
            .unwrap();
        req.extensions_mut()
            .insert(MatchedRoute("/v1/items/{id}".into()));
        svc.clone().oneshot(req).await.unwrap();
    }
    // A counter whose label value needs escaping, and one named `_total`.
    let meter = metrics.meter_provider().meter("test");
    let hostile = "a \"quoted\" \\ value\nwith a newline";
    let counter = meter
        .u64_counter("cog.test.events_total")
        .with_description("Events seen")
        .build();
    counter.add(5, &[KeyValue::new("kind", hostile)]);
    // Attribute keys that are no label names (a colon, nothing at all),
    // keys that meet on one name, and a histogram's own `le`: the body
    // must still be one a scraper reads, or every metric in it is lost.
    meter.u64_counter("cog.test.keys").build().add(
        1,
        &[
            KeyValue::new("db:system", "redis"),
            KeyValue::new("a.b", "1"),
            KeyValue::new("a_b", "2"),
            KeyValue::new("a-b", "3"),
            KeyValue::new("", "empty"),
            KeyValue::new("le", "kept"),
        ],
    );
    meter
        .f64_histogram("cog.test.sizes")
        .build()
        .record(1.0, &[KeyValue::new("le", "mine")]);
    meter
        .f64_gauge("cog.test.payload")
        .with_unit("By")
        .build()
        .record(42.0, &[]);

    // The same instrument from two meters is one family; an instrument of
    // another kind under the same name is left out, not mixed in (the
    // first by scope name wins: "one" before "three").
    for (scope, kind) in [("one", "a"), ("two", "b")] {
        metrics
            .meter_provider()
            .meter(scope)
            .u64_counter("cog.test.shared")
            .build()
            .add(1, &[KeyValue::new("from", kind)]);
    }
    metrics
        .meter_provider()
        .meter("three")
        .f64_gauge("cog.test.shared")
        .build()
        .record(9.0, &[KeyValue::new("from", "gauge")]);

    let body = metrics.render();
    let families = openmetrics::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));

    let duration = family(&families, "http_server_request_duration_seconds");
    assert_eq!(duration.kind, "histogram");
    assert_eq!(duration.unit, "seconds");
    assert_eq!(duration.help, "Duration of HTTP server requests");
    let labels = [
        ("http_request_method", "POST"),
        ("url_scheme", "http"),
        ("http_route", "/v1/items/{id}"),
        ("http_response_status_code", "200"),
    ];
    let count = duration
        .sample("http_server_request_duration_seconds_count", &labels)
        .unwrap_or_else(|| panic!("{duration:#?}"));
    assert_eq!(count.value, 3.0);
    let mut inf = labels.to_vec();
    inf.push(("le", "+Inf"));
    let all = duration
        .sample("http_server_request_duration_seconds_bucket", &inf)
        .unwrap();
    assert_eq!(all.value, 3.0, "cumulative: +Inf holds every request");

    let active = family(&families, "http_server_active_requests");
    assert_eq!(active.kind, "gauge");

    let events = family(&families, "cog_test_events");
    assert_eq!(events.kind, "counter");
    assert_eq!(events.help, "Events seen");
    let total = events
        .sample("cog_test_events_total", &[("kind", hostile)])
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(total.value, 5.0);

    // Colons become `_`; keys meeting on `a_b` are one label, values in
    // the order of the keys (`a-b` < `a.b` < `a_b`); `le` is a histogram's
    // own label only.
    let keys = family(&families, "cog_test_keys");
    let labels = [
        ("db_system", "redis"),
        ("a_b", "3;1;2"),
        ("_", "empty"),
        ("le", "kept"),
    ];
    let sample = keys
        .sample("cog_test_keys_total", &labels)
        .unwrap_or_else(|| panic!("{keys:#?}"));
    assert_eq!(sample.labels.len(), 4, "{sample:#?}");
    let sizes = family(&families, "cog_test_sizes");
    let all = sizes
        .sample("cog_test_sizes_bucket", &[("_le", "mine"), ("le", "+Inf")])
        .unwrap_or_else(|| panic!("{sizes:#?}"));
    assert_eq!(all.value, 1.0);

    let payload = family(&families, "cog_test_payload_bytes");
    assert_eq!(payload.unit, "bytes");

    let shared = family(&families, "cog_test_shared");
    assert_eq!(shared.kind, "counter");
    let mut from: Vec<_> = shared
        .samples
        .iter()
        .filter(|s| s.name == "cog_test_shared_total")
        .map(|s| s.labels[0].1.as_str())
        .collect();
    from.sort_unstable();
    assert_eq!(from, ["a", "b"], "{shared:#?}");
    assert_eq!(
        families
            .iter()
            .filter(|f| f.name == "cog_test_shared")
            .count(),
        1
    );

    // Nothing piles up between scrapes: the same state renders the same.
    for _ in 0..5 {
        assert_eq!(metrics.render(), body);
    }
}
