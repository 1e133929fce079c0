//! The decision counter, read back through a real OpenTelemetry SDK.

use std::convert::Infallible;

use cog_ratelimit::extract::Global;
use cog_ratelimit::store::MemoryStore;
use cog_ratelimit::{Limit, Quota, RateLimitLayer};
use cog_testkit::MetricsCapture;
use http::{Request, Response, StatusCode};
use tower::{Layer, ServiceExt, service_fn};

#[tokio::test]
async fn decisions_are_counted_by_outcome() {
    let metrics = MetricsCapture::install();

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
    let decisions = "cog.ratelimit.decisions";
    assert_eq!(metrics.counter(decisions, &[("outcome", "allowed")]), 2);
    assert_eq!(metrics.counter(decisions, &[("outcome", "denied")]), 3);
    // Who decided: the store, every time.
    let by_store = [("outcome", "allowed"), ("source", "store")];
    assert_eq!(metrics.counter(decisions, &by_store), 2);
    assert_eq!(metrics.counter(decisions, &[("source", "lease")]), 0);

    // Decided on other threads (each counts in its own stripe): all of
    // them in the total.
    std::thread::scope(|s| {
        for _ in 0..3 {
            let svc = svc.clone();
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let res = rt.block_on(svc.oneshot(Request::new(String::new())));
                assert_eq!(res.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
            });
        }
    });
    assert_eq!(metrics.counter(decisions, &[("outcome", "denied")]), 6);
}
