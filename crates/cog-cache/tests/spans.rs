//! What a sampled trace shows of the cache: a `cache.lookup` span for a
//! lookup that leaves the process, with the Redis calls and the loader
//! under it — and nothing for an L1 hit.

use std::time::Duration;

use cog_cache::TieredCache;
use cog_core::telemetry::Child;
use cog_testkit::{RedisServer, SpanCapture, span_attr};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanKind, TraceContextExt as _};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_that_leaves_the_process_is_one_span_with_its_calls_under_it() {
    let capture = SpanCapture::install();
    let server = RedisServer::start().unwrap();
    let cache: TieredCache<String, String> = TieredCache::builder()
        .redis(cog_testkit::fred_client(&server.url()).await)
        .schema("v1")
        .lease(Duration::from_secs(5))
        .redis_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let key = "k".to_owned();

    // A miss: L2, the lease, the loader (run on a task of its own, still in
    // the trace), the write.
    let root = capture.root("request");
    let value = cache
        .get_or_load(&key, || async {
            let _step = Child::internal("test", "loader");
            Ok::<_, std::convert::Infallible>("v".to_owned())
        })
        .with_context(root.clone())
        .await
        .unwrap();
    assert_eq!(value, "v");
    let spans = capture.spans();
    let lookup = spans
        .iter()
        .find(|s| s.name == "cache.lookup")
        .unwrap_or_else(|| panic!("{spans:?}"));
    assert_eq!(lookup.parent_span_id, root.span().span_context().span_id());
    assert_eq!(lookup.span_kind, SpanKind::Internal);
    let under: Vec<&str> = spans
        .iter()
        .filter(|s| s.parent_span_id == lookup.span_context.span_id())
        .map(|s| &*s.name)
        .collect();
    for expected in ["GET", "SET NX", "loader", "SET"] {
        assert!(under.contains(&expected), "{expected} not in {under:?}");
    }
    for call in spans.iter().filter(|s| s.span_kind == SpanKind::Client) {
        assert_eq!(
            span_attr(call, "server.port").map(|v| v.to_string()),
            Some(server.port().to_string()),
            "{}",
            call.name
        );
    }

    // An L1 hit: no span.
    capture.clear();
    cache
        .get_or_load(&key, || async {
            Ok::<_, std::convert::Infallible>("x".to_owned())
        })
        .with_context(capture.root("request"))
        .await
        .unwrap();
    let names: Vec<_> = capture.spans().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["request"]);

    // `get` that goes to L2 (another instance's value): one lookup, one GET.
    let other: TieredCache<String, String> = TieredCache::builder()
        .redis(cog_testkit::fred_client(&server.url()).await)
        .schema("v1")
        .build()
        .unwrap();
    capture.clear();
    let found = other.get(&key).with_context(capture.root("request")).await;
    assert_eq!(found.as_deref(), Some("v"));
    let mut names: Vec<_> = capture.spans().into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, ["GET", "cache.lookup", "request"]);
}
