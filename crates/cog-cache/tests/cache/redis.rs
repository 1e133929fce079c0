//! L1 + L2 on a real redis-server: one load per cluster, invalidation
//! across instances, and Redis killed, paused and restarted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cog_cache::TieredCache;
use cog_testkit::{RedisServer, Reply};

use crate::support::{Cache, Counter, client, eventually};

const HANG: Duration = Duration::from_secs(10);

async fn cache(url: &str, lease: bool) -> Cache {
    let mut b = TieredCache::builder()
        .redis(client(url).await)
        .redis_timeout(Duration::from_millis(300))
        .redis_retry_interval(Duration::from_millis(200))
        .stale_if_error(Duration::from_secs(60));
    if lease {
        b = b.lease(Duration::from_secs(5));
    }
    b.build().unwrap()
}

async fn stampede(caches: &[Cache], n: usize, counter: &Counter, key: &str) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let cache = caches[i % caches.len()].clone();
            let (counter, key) = (counter.clone(), key.to_owned());
            tokio::spawn(async move {
                cache
                    .get_or_load(&key, counter.loader("loaded", Duration::from_millis(300)))
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "loaded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_load_per_instance_and_one_per_cluster_with_the_lease() {
    let server = RedisServer::start().unwrap();
    let one = cache(&server.url(), false).await;
    let counter = Counter::default();
    stampede(std::slice::from_ref(&one), 1000, &counter, "cold-1").await;
    assert_eq!(counter.calls(), 1);

    let a = cache(&server.url(), true).await;
    let b = cache(&server.url(), true).await;
    let counter = Counter::default();
    stampede(&[a.clone(), b.clone()], 1000, &counter, "cold-2").await;
    assert_eq!(
        counter.calls(),
        1,
        "two instances with the lease loaded twice: {:?} {:?}",
        a.stats(),
        b.stats()
    );
    assert!(
        a.stats().l2_hits + b.stats().l2_hits >= 1,
        "the waiter did not read L2"
    );
}

#[tokio::test]
async fn invalidation_reaches_another_instance() {
    let server = RedisServer::start().unwrap();
    let a = cache(&server.url(), false).await;
    let b = cache(&server.url(), false).await;
    // Let both subscribers connect.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let k = "user:1".to_owned();
    let counter = Counter::default();
    assert_eq!(
        a.get_or_load(&k, counter.loader("v1", Duration::ZERO))
            .await
            .unwrap(),
        "v1"
    );
    // B reads it from L2 into its own L1.
    assert_eq!(b.get(&k).await.as_deref(), Some("v1"));
    assert_eq!(b.stats().l2_hits, 1);

    a.invalidate(&k).await;
    // B's L1 copy is gone (not merely shadowed: L2 is gone too).
    eventually("B drops its L1 copy", async || b.get(&k).await.is_none()).await;
    assert_eq!(
        b.get_or_load(&k, counter.loader("v2", Duration::ZERO))
            .await
            .unwrap(),
        "v2"
    );

    // Tenant-wide invalidation reaches B as well.
    let t = "t1".to_owned();
    b.tenant("acme").insert(t.clone(), "x".into()).await;
    assert!(b.tenant("acme").get(&t).await.is_some());
    b.tenant("other").insert(t.clone(), "y".into()).await;
    a.tenant("acme").invalidate_tenant().await;
    // Gone from B's L1 and from L2; the other tenant is untouched.
    eventually("B drops the tenant", async || {
        b.tenant("acme").get(&t).await.is_none()
    })
    .await;
    assert_eq!(b.tenant("other").get(&t).await.as_deref(), Some("y"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_then_restarted() {
    let server = RedisServer::start().unwrap();
    let cache: Cache = TieredCache::builder()
        .redis(client(&server.url()).await)
        .redis_timeout(Duration::from_millis(300))
        .redis_retry_interval(Duration::from_millis(200))
        .ttl(Duration::from_millis(100))
        .ttl_jitter(0.0)
        .stale_if_error(Duration::from_secs(60))
        .build()
        .unwrap();
    let k = "k".to_owned();
    let first = Counter::default();
    assert_eq!(
        cache
            .get_or_load(&k, first.loader("v1", Duration::ZERO))
            .await
            .unwrap(),
        "v1"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;

    // 50 callers of an expired key; the upstream is down too, and Redis is
    // killed while the (single) load runs.
    let errors = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (cache, k, errors) = (cache.clone(), k.clone(), errors.clone());
            tokio::spawn(async move {
                let r = cache
                    .get_or_load(&k, || async {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Err::<String, _>("upstream down")
                    })
                    .await;
                match r {
                    Ok(v) => assert_eq!(v, "v1", "stale value expected"),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.kill().unwrap();
    for t in tasks {
        tokio::time::timeout(HANG, t).await.unwrap().unwrap();
    }
    assert_eq!(errors.load(Ordering::SeqCst), 0);
    assert!(cache.stats().stale_served >= 1);

    // New keys still load (L1 + loader) with no error, and the circuit opens.
    let counter = Counter::default();
    for i in 0..5 {
        let v = tokio::time::timeout(
            HANG,
            cache.get_or_load(&format!("new{i}"), counter.loader("n", Duration::ZERO)),
        )
        .await
        .unwrap();
        assert_eq!(v.unwrap(), "n");
    }
    assert!(cache.l2_circuit_open());
    assert!(cache.stats().l2_errors > 0);

    // Redis back: the circuit closes and L2 is written and read again.
    server.restart().unwrap();
    let counter = Counter::default();
    let mut i = 0;
    eventually("circuit closes", async || {
        i += 1;
        let _ = cache
            .get_or_load(&format!("after{i}"), counter.loader("a", Duration::ZERO))
            .await;
        !cache.l2_circuit_open()
    })
    .await;
    let key = format!("after{}", i + 1);
    cache
        .get_or_load(&key, counter.loader("a", Duration::ZERO))
        .await
        .unwrap();
    let l2_key = cache.l2_key(&key).unwrap();
    assert!(matches!(
        server.command(&["EXISTS", &l2_key]).unwrap(),
        Reply::Int(1)
    ));
}

#[tokio::test]
async fn paused_redis_answers_within_the_timeout() {
    let server = RedisServer::start().unwrap();
    let cache = cache(&server.url(), true).await;
    server.pause().unwrap();
    let counter = Counter::default();
    // Each L2 call is bounded by 300 ms; the loader answers.
    let v = tokio::time::timeout(
        HANG,
        cache.get_or_load(&"p".to_owned(), counter.loader("v", Duration::ZERO)),
    )
    .await
    .expect("a call hung on a paused redis");
    assert_eq!(v.unwrap(), "v");
    assert!(cache.l2_circuit_open());
    // While the circuit is open, nothing waits on the frozen server.
    let v = tokio::time::timeout(
        HANG,
        cache.get_or_load(&"q".to_owned(), counter.loader("w", Duration::ZERO)),
    )
    .await
    .unwrap();
    assert_eq!(v.unwrap(), "w");
    server.resume().unwrap();
}

#[tokio::test]
async fn garbage_and_foreign_schemas_in_redis_are_misses() {
    let server = RedisServer::start().unwrap();
    let cache = cache(&server.url(), false).await;
    let k = "g".to_owned();
    let l2_key = cache.l2_key(&k).unwrap();
    server
        .command(&["SET", &l2_key, "definitely not an envelope"])
        .unwrap();
    let counter = Counter::default();
    assert_eq!(
        cache
            .get_or_load(&k, counter.loader("fresh", Duration::ZERO))
            .await
            .unwrap(),
        "fresh"
    );
    assert_eq!(counter.calls(), 1);
    assert_eq!(cache.stats().l2_corrupt, 1);

    // A cache with another schema reads that value as a miss, not as its own.
    let other: Cache = TieredCache::builder()
        .redis(client(&server.url()).await)
        .schema("v2")
        .build()
        .unwrap();
    assert_eq!(other.get(&k).await, None);
    assert_eq!(other.stats().l2_corrupt, 1);
}

#[tokio::test]
async fn l1_is_flushed_after_the_invalidation_channel_reconnects() {
    let server = RedisServer::start().unwrap();
    let cache = cache(&server.url(), false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let k = "kept".to_owned();
    cache.insert(k.clone(), "v".into()).await;
    assert_eq!(cache.get(&k).await.as_deref(), Some("v"));
    // Invalidations sent while the channel is down are lost: after it comes
    // back, nothing in L1 can be trusted.
    server.kill().unwrap();
    server.restart().unwrap();
    eventually("L1 flushed after reconnect", async || {
        let before = cache.stats().l1_hits;
        let _ = cache.get(&k).await;
        cache.stats().l1_hits == before
    })
    .await;
}

#[tokio::test]
async fn tag_invalidation_reaches_l2_and_other_instances() {
    let server = RedisServer::start().unwrap();
    let a = cache(&server.url(), false).await;
    let b = cache(&server.url(), false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (k1, k2, k3) = (
        "order:1".to_owned(),
        "order:2".to_owned(),
        "order:3".to_owned(),
    );
    let user1 = a.tenant("acme").tagged(["user:1"]);
    let user2 = a.tenant("acme").tagged(["user:2"]);
    user1.insert(k1.clone(), "o1".into()).await;
    let counter = Counter::default();
    user1
        .get_or_load(&k2, counter.loader("o2", Duration::ZERO))
        .await
        .unwrap();
    user2.insert(k3.clone(), "o3".into()).await;
    // B pulls all three into its L1 (tags travel in the envelope).
    let bt = b.tenant("acme");
    for k in [&k1, &k2, &k3] {
        assert!(bt.get(k).await.is_some());
    }
    a.tenant("acme").invalidate_tag("user:1").await;
    eventually("B drops user:1's entries", async || {
        bt.get(&k1).await.is_none() && bt.get(&k2).await.is_none()
    })
    .await;
    assert_eq!(
        bt.get(&k3).await.as_deref(),
        Some("o3"),
        "user:2 entry lost"
    );
    // Gone from L2 as well.
    for k in [&k1, &k2] {
        let key = a.tenant("acme").l2_key(k).unwrap();
        assert!(matches!(
            server.command(&["EXISTS", &key]).unwrap(),
            Reply::Int(0)
        ));
    }
    // Another tenant's tag of the same name is untouched.
    a.tenant("other")
        .tagged(["user:1"])
        .insert(k1.clone(), "x".into())
        .await;
    a.tenant("acme").invalidate_tag("user:1").await;
    assert_eq!(a.tenant("other").get(&k1).await.as_deref(), Some("x"));
}
