//! `tracing` spans inside a handler are children of the request span.

use std::convert::Infallible;

use cog_testkit::OtlpReceiver;
use cog_trace::server::TraceLayer;
use http::{Request, Response};
use tower::{Layer, ServiceExt, service_fn};
use tracing::instrument::WithSubscriber;
use tracing_subscriber::layer::SubscriberExt;

use crate::support::{Body, config, request, spans};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_spans_are_children_of_the_server_span() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = config(&receiver, true, &[]).build().unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(guard.tracer("bridge").unwrap()));
    let svc = TraceLayer::from_guard(&guard).layer(service_fn(|_req: Request<Body>| async {
        let span = tracing::info_span!("db.query", db.system.name = "postgresql");
        let _entered = span.enter();
        tracing::info!("querying");
        Ok::<_, Infallible>(Response::new(Body::from("ok")))
    }));
    svc.oneshot(request("/x", &[]))
        .with_subscriber(subscriber)
        .await
        .unwrap();
    let got = spans(&guard, &receiver, 2).await;
    assert_eq!(got.len(), 2);
    let server = got.iter().find(|s| s.span.kind == 2).unwrap();
    let child = got.iter().find(|s| s.name() == "db.query").unwrap();
    assert_eq!(child.trace_id(), server.trace_id());
    assert_eq!(child.parent_span_id(), server.span_id());
    // The log line inside the handler is an event on the child span.
    assert!(
        child
            .span
            .events
            .iter()
            .any(|e| e.name.contains("querying")),
        "{:?}",
        child.span.events
    );
}
