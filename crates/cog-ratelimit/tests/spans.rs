//! What a sampled trace shows of a rate-limit decision: a
//! `ratelimit.decide` span with the Redis round trip under it — and
//! nothing for a decision made in process.

use std::convert::Infallible;

use cog_ratelimit::extract::Global;
use cog_ratelimit::store::{MemoryStore, RedisStore};
use cog_ratelimit::{Limit, Quota, RateLimitLayer};
use cog_testkit::{RedisServer, SpanCapture, span_attr};
use http::{Request, Response};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::SpanKind;
use tower::{Layer, ServiceExt, service_fn};

/// Spans other than the stand-in request's.
fn cog_spans(capture: &SpanCapture) -> Vec<String> {
    capture
        .spans()
        .into_iter()
        .filter(|s| s.name != "request")
        .map(|s| s.name.into_owned())
        .collect()
}

async fn one_request<St: cog_ratelimit::store::Store + Clone>(
    store: St,
    cx: opentelemetry::Context,
) {
    let quota = Quota::single(Limit::per_second(100)).unwrap();
    let svc = RateLimitLayer::new(store, Global, quota).layer(service_fn(
        |_req: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) },
    ));
    let res = svc
        .oneshot(Request::new(String::new()))
        .with_context(cx)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_redis_decision_is_a_span_with_its_round_trip_under_it() {
    let capture = SpanCapture::install();

    // In process: no span of its own (it would cost more than the
    // decision).
    one_request(MemoryStore::new(), capture.root("request")).await;
    assert_eq!(cog_spans(&capture), Vec::<String>::new());

    let server = RedisServer::start().unwrap();
    let client = cog_ratelimit::store::connect(&server.url()).await.unwrap();
    let root = capture.root("request");
    one_request(RedisStore::new(client), root.clone()).await;
    let spans = capture.spans();
    let decide = spans
        .iter()
        .find(|s| s.name == "ratelimit.decide")
        .unwrap_or_else(|| panic!("{spans:?}"));
    use opentelemetry::trace::TraceContextExt as _;
    assert_eq!(decide.parent_span_id, root.span().span_context().span_id());
    assert_eq!(decide.span_kind, SpanKind::Internal);
    assert_eq!(
        span_attr(decide, "cog.ratelimit.allowed").map(|v| v.to_string()),
        Some("true".into())
    );
    let call = spans.iter().find(|s| s.name == "EVALSHA").unwrap();
    assert_eq!(call.parent_span_id, decide.span_context.span_id());
    assert_eq!(call.span_kind, SpanKind::Client);
    assert_eq!(
        span_attr(call, "db.system.name").map(|v| v.to_string()),
        Some("redis".into())
    );
    assert_eq!(
        span_attr(call, "server.port").map(|v| v.to_string()),
        Some(server.port().to_string())
    );

    // Unsampled: nothing at all.
    capture.clear();
    let client = cog_ratelimit::store::connect(&server.url()).await.unwrap();
    one_request(RedisStore::new(client), opentelemetry::Context::new()).await;
    assert_eq!(cog_spans(&capture), Vec::<String>::new());
}
