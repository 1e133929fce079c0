use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use cog_testkit::{OtlpReceiver, ReceivedSpan};
use cog_trace::server::{Trace, TraceLayer};
use cog_trace::{TraceConfig, TraceGuard};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt, service_fn};

pub(crate) type Body = Full<bytes::Bytes>;
pub(crate) type Svc = Trace<BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>>;

pub(crate) fn config(receiver: &OtlpReceiver, grpc: bool, extra: &[(&str, &str)]) -> TraceConfig {
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("OTEL_SERVICE_NAME".into(), "svc-under-test".into());
    if grpc {
        vars.insert("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into());
        vars.insert(
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            receiver.grpc_endpoint(),
        );
    } else {
        vars.insert(
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            receiver.http_endpoint(),
        );
    }
    for (k, v) in extra {
        vars.insert((*k).into(), (*v).into());
    }
    TraceConfig::from_vars(|k| vars.get(k).cloned()).unwrap()
}

/// An app: `/items/{id}` answers 200, `/boom` 500.
pub(crate) fn app(guard: &TraceGuard) -> Svc {
    let inner = BoxCloneSyncService::new(service_fn(|req: Request<Body>| async move {
        let status = if req.uri().path() == "/boom" {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        let mut res = Response::new(Body::from("hello"));
        *res.status_mut() = status;
        Ok::<_, Infallible>(res)
    }));
    TraceLayer::from_guard(guard)
        .route_with(|parts| {
            let path = parts.uri.path();
            Some(if path.starts_with("/items/") {
                "/items/{id}".to_owned()
            } else {
                path.to_owned()
            })
        })
        .filter(|parts| parts.uri.path() != "/healthz")
        .layer(inner)
}

pub(crate) fn request(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(Body::default()).unwrap();
    req.extensions_mut()
        .insert("203.0.113.9:5555".parse::<SocketAddr>().unwrap());
    req
}

pub(crate) async fn send(
    svc: &Svc,
    req: Request<Body>,
) -> Response<cog_trace::server::ResponseBody<Body>> {
    svc.clone().oneshot(req).await.unwrap()
}

/// Flushes and waits (up to 10 s) for `n` spans; returns what arrived.
pub(crate) async fn spans(
    guard: &TraceGuard,
    receiver: &OtlpReceiver,
    n: usize,
) -> Vec<ReceivedSpan> {
    spans_within(guard, receiver, n, Duration::from_secs(10)).await
}

/// Like [`spans`], waiting at most `wait` (for "nothing more arrives").
pub(crate) async fn spans_within(
    guard: &TraceGuard,
    receiver: &OtlpReceiver,
    n: usize,
    wait: Duration,
) -> Vec<ReceivedSpan> {
    let g = guard.provider().cloned();
    tokio::task::spawn_blocking(move || {
        if let Some(p) = g {
            let _ = p.force_flush();
        }
    })
    .await
    .unwrap();
    receiver.wait_for_spans(n, wait).await
}
