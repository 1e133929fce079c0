//! `http.server.request.duration` and `http.server.active_requests`,
//! read back through a real OpenTelemetry SDK.

use std::convert::Infallible;

use cog_testkit::MetricsCapture;
use cog_trace::TraceConfig;
use cog_trace::server::TraceLayer;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{Layer, ServiceExt, service_fn};

type Body = Full<bytes::Bytes>;

#[tokio::test]
async fn request_duration_and_active_requests() {
    let metrics = MetricsCapture::install();
    // Tracing itself exports nowhere; metrics go through the global meter.
    let guard = TraceConfig::from_vars(|k| (k == "OTEL_TRACES_EXPORTER").then(|| "none".into()))
        .unwrap()
        .build()
        .unwrap();
    let svc = TraceLayer::from_guard(&guard)
        .route_with(|p| Some(p.uri.path().to_owned()))
        .layer(service_fn(|req: Request<Body>| async move {
            let mut res = Response::new(Body::default());
            if req.uri().path() == "/boom" {
                *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            Ok::<_, Infallible>(res)
        }));
    for path in ["/a", "/a", "/boom"] {
        svc.clone()
            .oneshot(Request::get(path).body(Body::default()).unwrap())
            .await
            .unwrap();
    }
    let duration = "http.server.request.duration";
    assert_eq!(
        metrics.histogram_count(
            duration,
            &[("http.route", "/a"), ("http.response.status_code", "200")]
        ),
        2
    );
    assert_eq!(
        metrics.histogram_count(duration, &[("http.route", "/boom"), ("error.type", "500")]),
        1
    );
    assert_eq!(
        metrics.up_down(
            "http.server.active_requests",
            &[("http.request.method", "GET")]
        ),
        0
    );
    // Method and scheme go on both instruments as they were.
    svc.clone()
        .oneshot(
            Request::post("https://api.example.com/a")
                .body(Body::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        metrics.histogram_count(
            duration,
            &[("http.request.method", "POST"), ("url.scheme", "https")]
        ),
        1
    );
    assert_eq!(
        metrics.up_down(
            "http.server.active_requests",
            &[("http.request.method", "POST"), ("url.scheme", "https")]
        ),
        0
    );

    // An abandoned request stops counting as active.
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let slow = TraceLayer::from_guard(&guard).layer(service_fn(move |_req: Request<Body>| {
        let g = g.clone();
        async move {
            g.notified().await;
            Ok::<_, Infallible>(Response::new(Body::default()))
        }
    }));
    let pending = tokio::spawn(slow.oneshot(Request::get("/slow").body(Body::default()).unwrap()));
    tokio::task::yield_now().await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(
        metrics.up_down(
            "http.server.active_requests",
            &[("http.request.method", "GET")]
        ),
        1
    );
    pending.abort();
    let _ = pending.await;
    assert_eq!(
        metrics.up_down(
            "http.server.active_requests",
            &[("http.request.method", "GET")]
        ),
        0
    );
}
