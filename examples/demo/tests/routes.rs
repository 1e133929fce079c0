//! Every answer the demo gives is traced exactly once: the routes with the
//! API's layers, `/healthz`, and a path no route matches (which still goes
//! through the API's layers: 401 without a key, 404 with one) — each gets
//! one server span, whose id the response's `traceparent` carries.

use std::time::Duration;

use axum::body::Body;
use example_demo::app;
use http::{Method, Request, StatusCode};
use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_has_one_server_span_and_its_traceparent() {
    // Before the demo is built: its trace layer takes the global tracer.
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());

    let dir = tempfile::tempdir().unwrap();
    let config = app::Config {
        redis_url: None,
        store: format!("file:{}", dir.path().join("state.json").display()),
        upstream: Duration::ZERO,
        database: Duration::ZERO,
        poll: Duration::from_secs(3600),
        python: None,
        control_url: None,
        ..app::Config::default()
    };
    let demo = app::build(&config).await.unwrap();
    let auth = format!("Bearer {}", demo.demo_key.clone().unwrap());

    // (method, path, authorized, status, the span's `http.route`)
    let cases = [
        (
            Method::GET,
            "/healthz",
            false,
            StatusCode::OK,
            Some("/healthz"),
        ),
        (
            Method::GET,
            "/v1/items/1",
            true,
            StatusCode::OK,
            Some("/v1/items/{id}"),
        ),
        // Served from the HTTP cache this time.
        (
            Method::GET,
            "/v1/items/1",
            true,
            StatusCode::OK,
            Some("/v1/items/{id}"),
        ),
        (
            Method::GET,
            "/v1/items/1",
            false,
            StatusCode::UNAUTHORIZED,
            Some("/v1/items/{id}"),
        ),
        (
            Method::DELETE,
            "/v1/items/1",
            true,
            StatusCode::METHOD_NOT_ALLOWED,
            Some("/v1/items/{id}"),
        ),
        // No route: the API's layers still run (a key is asked for first).
        (
            Method::GET,
            "/no/such/route",
            false,
            StatusCode::UNAUTHORIZED,
            None,
        ),
        (
            Method::GET,
            "/no/such/route",
            true,
            StatusCode::NOT_FOUND,
            None,
        ),
    ];
    for (method, path, authorized, status, route) in cases {
        exporter.reset();
        let mut req = Request::builder().method(method.clone()).uri(path);
        if authorized {
            req = req.header("authorization", &auth);
        }
        let res = demo
            .router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let case = format!("{method} {path} (authorized: {authorized})");
        assert_eq!(res.status(), status, "{case}");
        let traceparent = res
            .headers()
            .get("traceparent")
            .unwrap_or_else(|| panic!("{case}: no traceparent"))
            .to_str()
            .unwrap()
            .to_owned();
        // The body is read to its end: the span ends with the response.
        drop(
            axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap(),
        );
        provider.force_flush().unwrap();

        let spans = exporter.get_finished_spans().unwrap();
        let servers: Vec<_> = spans
            .iter()
            .filter(|s| s.span_kind == SpanKind::Server)
            .collect();
        assert_eq!(
            servers.len(),
            1,
            "{case}: server spans {:?}",
            servers.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        let span = servers[0];
        let ids: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(ids[1], span.span_context.trace_id().to_string(), "{case}");
        assert_eq!(ids[2], span.span_context.span_id().to_string(), "{case}");
        let attr = |key: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(attr("http.route").as_deref(), route, "{case}");
        assert_eq!(
            attr("http.response.status_code"),
            Some(status.as_u16().to_string()),
            "{case}"
        );
    }
}
