//! Per-tier counters, read back through a real OpenTelemetry SDK.

use cog_cache::TieredCache;
use cog_testkit::MetricsCapture;

#[tokio::test]
async fn hits_misses_and_loads_are_exported() {
    let metrics = MetricsCapture::install();

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
    let requests = "cog.cache.requests";
    assert_eq!(
        metrics.counter(requests, &[("tier", "l1"), ("result", "hit")]),
        3
    );
    assert_eq!(
        metrics.counter(requests, &[("tier", "l1"), ("result", "miss")]),
        2
    );
    assert_eq!(metrics.counter("cog.cache.loads", &[("result", "ok")]), 1);
    assert_eq!(
        metrics.counter("cog.cache.loads", &[("result", "error")]),
        1
    );

    // A second cache adds to the same instruments (summed, not one
    // cache's value standing for all).
    let other: TieredCache<String, String> = TieredCache::builder().build().unwrap();
    for _ in 0..3 {
        other
            .get_or_load(&k, || async { Ok::<_, ()>("w".to_owned()) })
            .await
            .unwrap();
    }
    assert_eq!(
        metrics.counter(requests, &[("tier", "l1"), ("result", "hit")]),
        3 + 2
    );
    assert_eq!(metrics.counter("cog.cache.loads", &[("result", "ok")]), 2);
    // A dropped cache stops counting, the others go on.
    drop(other);
    assert_eq!(metrics.counter("cog.cache.loads", &[("result", "ok")]), 1);
}
