//! Per-tier counters, read back through a real OpenTelemetry SDK.

use cog_cache::TieredCache;
use cog_testkit::MetricsCapture;

/// One test: the capture is the process's global meter provider.
#[tokio::test]
async fn metrics_are_exported() {
    let metrics = MetricsCapture::install();
    hits_misses_and_loads_are_exported(&metrics).await;
    the_circuit_gauge_follows_redis(&metrics).await;
}

async fn hits_misses_and_loads_are_exported(metrics: &MetricsCapture) {
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

/// `cog.cache.l2.circuit_open` is 0 while Redis answers, 1 once a failed
/// call opens the circuit, and 0 again when Redis is back.
async fn the_circuit_gauge_follows_redis(metrics: &MetricsCapture) {
    let server = cog_testkit::RedisServer::start().unwrap();
    let cache: TieredCache<String, String> = TieredCache::builder()
        .redis(cog_testkit::fred_client(&server.url()).await)
        .schema("v1")
        .redis_retry_interval(std::time::Duration::from_millis(100))
        .build()
        .unwrap();
    let gauge = || metrics.gauge("cog.cache.l2.circuit_open", &[]);
    let load = |i: u32| {
        let cache = cache.clone();
        async move {
            cache
                .get_or_load(&format!("k{i}"), || async { Ok::<_, ()>("v".to_owned()) })
                .await
                .unwrap()
        }
    };
    load(0).await;
    assert_eq!(gauge(), Some(0));
    let calls = |outcome| metrics.histogram_count("cog.cache.l2.duration", &[("outcome", outcome)]);
    assert!(calls("ok") > 0);
    server.kill().unwrap();
    load(1).await;
    assert_eq!(gauge(), Some(1));
    // The failed call, by what went wrong.
    assert!(calls("redis") + calls("timeout") > 0);
    server.restart().unwrap();
    let mut i = 2;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while gauge() != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the circuit never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        load(i).await;
        i += 1;
    }
}
