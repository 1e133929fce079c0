//! L1 + L2 on a real redis-server: one load per cluster, invalidation
//! across instances, and Redis killed, paused and restarted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cog_cache::TieredCache;
use cog_testkit::{RedisServer, Reply};

use crate::support::{Cache, Counter, client, dbsize, eventually, failing, with_defaults};

const HANG: Duration = Duration::from_secs(10);

async fn cache(url: &str, lease: bool) -> Cache {
    let mut b = TieredCache::builder()
        .redis(client(url).await)
        .schema("v1")
        .redis_timeout(Duration::from_millis(300))
        .redis_retry_interval(Duration::from_millis(200))
        .stale_if_error(Duration::from_secs(60));
    if lease {
        b = b.lease(Duration::from_secs(5));
    }
    b.build().unwrap()
}

/// The Redis key of the set of `cache`'s keys tagged `tag`: the tenant's
/// part of `key`'s data key, then the tag's (an encoded key holds no raw
/// `:`).
fn tag_set(cache: &Cache, key: &str, tag: &str) -> String {
    let data = cache.l2_key(&key.to_owned()).unwrap();
    format!("{}:#tag:{tag}", data.rsplit_once(':').unwrap().0)
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
    for c in [&a, &b] {
        tokio::time::timeout(HANG, c.invalidations_ready())
            .await
            .expect("subscribed");
    }
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
    // A key neither tier has: a miss in each.
    let before = b.stats();
    assert_eq!(b.get(&"user:none".to_owned()).await, None);
    let after = b.stats();
    assert_eq!(after.l1_misses, before.l1_misses + 1);
    assert_eq!(after.l2_misses, before.l2_misses + 1);
    assert_eq!(b.get_fresh(&"user:none".to_owned()), None);
    assert_eq!(b.stats().l1_misses, after.l1_misses + 1);

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
    // In L2 too, as a third instance (empty L1) sees it.
    let c = cache(&server.url(), false).await;
    assert_eq!(c.tenant("acme").get(&t).await, None);
    assert_eq!(c.tenant("other").get(&t).await.as_deref(), Some("y"));
    assert_eq!(c.stats().l2_hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_then_restarted() {
    let server = RedisServer::start().unwrap();
    let cache: Cache = TieredCache::builder()
        .redis(client(&server.url()).await)
        .schema("v1")
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

    // An instance with nothing in L1 finds the stale value in L2 when its
    // loader fails (stale-if-error through L2, not only L1).
    let fresh_l1: Cache = TieredCache::builder()
        .redis(client(&server.url()).await)
        .schema("v1")
        .redis_timeout(Duration::from_millis(300))
        .ttl(Duration::from_millis(100))
        .stale_if_error(Duration::from_secs(60))
        .build()
        .unwrap();
    assert_eq!(fresh_l1.get_or_load(&k, failing()).await.unwrap(), "v1");
    assert_eq!(fresh_l1.stats().stale_served, 1);
    assert_eq!(fresh_l1.stats().l1_hits, 0);

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
    // A new key's value reaches Redis again. Each try is a new key: on a
    // loaded machine one write may still exceed the 50 ms timeout (and
    // reopen the circuit for its retry interval).
    eventually("L2 written again", async || {
        i += 1;
        let key = format!("after{i}");
        cache
            .get_or_load(&key, counter.loader("a", Duration::ZERO))
            .await
            .unwrap();
        let l2_key = cache.l2_key(&key).unwrap();
        matches!(server.command(&["EXISTS", &l2_key]).unwrap(), Reply::Int(1))
    })
    .await;
}

#[tokio::test]
async fn paused_redis_answers_within_the_timeout() {
    let server = RedisServer::start().unwrap();
    let cache = cache(&server.url(), true).await;
    server.pause().unwrap();
    let counter = Counter::default();
    // The L2 read waits out the configured timeout (300 ms) and opens the
    // circuit; the lease is then refused without a call, and the loader
    // answers.
    let started = std::time::Instant::now();
    let v = tokio::time::timeout(
        HANG,
        cache.get_or_load(&"p".to_owned(), counter.loader("v", Duration::ZERO)),
    )
    .await
    .expect("a call hung on a paused redis");
    let waited = started.elapsed();
    assert_eq!(v.unwrap(), "v");
    assert!(cache.l2_circuit_open());
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_millis(300 + 200), "{waited:?}");
    // While the circuit is open, nothing waits on the frozen server: not
    // reads, writes, leases, invalidations nor publishes.
    let started = std::time::Instant::now();
    for i in 0..10 {
        let k = format!("q{i}");
        let v = cache
            .get_or_load(&k, counter.loader("w", Duration::ZERO))
            .await;
        assert_eq!(v.unwrap(), "w");
        cache.insert(k.clone(), "x".into()).await;
        cache.invalidate(&k).await;
        cache.invalidate_tag("t").await;
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(50), "{waited:?}");
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

/// A key holding another type than a string (garbage Redis refuses to
/// `GET`, `WRONGTYPE`) is a miss for that key only: Redis answered, so the
/// circuit stays closed and every other key is still read from L2. It
/// used to open the circuit — L2 gone for every tenant for the retry
/// interval, each time that key was read.
#[tokio::test]
async fn a_key_holding_another_type_does_not_open_the_circuit() {
    let server = RedisServer::start().unwrap();
    let writer = cache(&server.url(), false).await;
    let (good, bad) = ("good".to_owned(), "bad".to_owned());
    writer.insert(good.clone(), "v".into()).await;
    server
        .command(&["RPUSH", &writer.l2_key(&bad).unwrap(), "garbage"])
        .unwrap();

    let reader = cache(&server.url(), false).await;
    assert_eq!(reader.get(&bad).await, None);
    assert_eq!(reader.stats().l2_errors, 1, "the refused GET is counted");
    assert!(!reader.l2_circuit_open());
    assert_eq!(
        reader.get(&good).await.as_deref(),
        Some("v"),
        "read from L2"
    );
    // A load of the bad key replaces the garbage.
    let counter = Counter::default();
    assert_eq!(
        reader
            .get_or_load(&bad, counter.loader("loaded", Duration::ZERO))
            .await
            .unwrap(),
        "loaded"
    );
    assert_eq!(
        cache(&server.url(), false).await.get(&bad).await.as_deref(),
        Some("loaded")
    );
}

/// Garbage under a tag set's name (anything but a set) names no entry: the
/// tag's invalidation deletes it and lands at once. It used to be refused
/// (`SSCAN` on a string) and retried every interval, for ever.
#[tokio::test]
async fn a_tag_set_holding_garbage_is_invalidated_at_once() {
    let server = RedisServer::start().unwrap();
    let cache = cache(&server.url(), false).await;
    cache.tagged(["t"]).insert("k".to_owned(), "v".into()).await;
    let set = tag_set(&cache, "k", "t");
    assert!(matches!(
        server.command(&["EXISTS", &set]).unwrap(),
        Reply::Int(1)
    ));
    server.command(&["SET", &set, "garbage"]).unwrap();
    cache.invalidate_tag("t").await;
    assert_eq!(cache.invalidations_pending(), 0, "nothing left to retry");
    assert!(matches!(
        server.command(&["EXISTS", &set]).unwrap(),
        Reply::Int(0)
    ));
    assert!(!cache.l2_circuit_open());
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

/// A value reaches L2 only once its tags are recorded there, so
/// `invalidate_tag` always finds it. Before, the value was written first
/// and a tag Redis refused left it in L2 untagged: after the tag's
/// invalidation every instance read it back. Two ways a tag is refused: a
/// garbage key under the tag set's name (now replaced), and a writer whose
/// ACL refuses scripts (the value now stays in its L1 only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_reaches_l2_only_with_its_tags() {
    let server = RedisServer::start().unwrap();
    let key = |k: &str| k.to_owned();
    let reader_misses = async |k: &str| {
        let fresh = cache(&server.url(), false).await;
        fresh.get(&key(k)).await.is_none()
    };

    // Garbage under the tag set's name.
    let a = cache(&server.url(), false).await;
    a.tagged(["t"]).insert(key("k0"), "v0".into()).await;
    let sets: Vec<String> = match server.command(&["KEYS", "*#tag:t"]).unwrap() {
        Reply::Array(Some(a)) => a
            .into_iter()
            .filter_map(|r| match r {
                Reply::Bulk(Some(b)) => Some(String::from_utf8(b).unwrap()),
                _ => None,
            })
            .collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(sets.len(), 1, "{sets:?}");
    server.command(&["SET", &sets[0], "garbage"]).unwrap();
    a.tagged(["t"]).insert(key("k1"), "v1".into()).await;
    let in_l2 = |c: &Cache, k: &str| {
        let data = c.l2_key(&key(k)).unwrap();
        matches!(server.command(&["EXISTS", &data]).unwrap(), Reply::Int(1))
    };
    assert!(
        in_l2(&a, "k1"),
        "the garbage is replaced and the value stored"
    );
    a.invalidate_tag("t").await;
    assert!(
        reader_misses("k1").await,
        "the tagged value outlived its tag in L2"
    );

    // A writer whose tags Redis refuses (its ACL has no scripts); SET
    // works.
    server
        .command(&[
            "ACL", "SETUSER", "writer", "on", ">pw", "~*", "&*", "+@all", "-eval", "-evalsha",
        ])
        .unwrap();
    let writer: Cache = TieredCache::builder()
        .redis(client(&format!("redis://writer:pw@{}", server.addr())).await)
        .schema("v1")
        .build()
        .unwrap();
    writer.insert(key("k3"), "v3".into()).await;
    assert!(
        in_l2(&writer, "k3"),
        "the writer's untagged values reach L2"
    );
    writer.tagged(["u"]).insert(key("k2"), "v2".into()).await;
    assert!(!in_l2(&writer, "k2"), "a value whose tag was refused");
    a.invalidate_tag("u").await;
    assert!(
        reader_misses("k2").await,
        "the untagged value was read back"
    );
}

/// `get` answers only fresh values: an L2 entry kept past its freshness
/// (for stale-if-error) is not one.
#[tokio::test]
async fn get_does_not_return_expired_l2_values() {
    let server = RedisServer::start().unwrap();
    let build = async || -> Cache {
        TieredCache::builder()
            .redis(client(&server.url()).await)
            .schema("v1")
            .ttl(Duration::from_millis(100))
            .ttl_jitter(0.0)
            .stale_if_error(Duration::from_secs(60))
            .build()
            .unwrap()
    };
    let (writer, reader) = (build().await, build().await);
    let k = "k".to_owned();
    writer.insert(k.clone(), "v".into()).await;
    assert_eq!(reader.get(&k).await.as_deref(), Some("v"));
    let late = build().await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Still in Redis (stale-if-error keeps it), but not fresh.
    assert_eq!(
        server
            .command(&["EXISTS", &writer.l2_key(&k).unwrap()])
            .unwrap(),
        Reply::Int(1)
    );
    assert_eq!(late.get(&k).await, None);
}

/// Two keys that are different (`Eq`) but print the same (`Display`) have
/// different L2 entries.
#[tokio::test]
async fn l2_keys_follow_equality_not_display() {
    #[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
    struct Lossy(String, u8);
    impl std::fmt::Display for Lossy {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    let server = RedisServer::start().unwrap();
    let build = async || -> TieredCache<Lossy, String> {
        TieredCache::builder()
            .redis(client(&server.url()).await)
            .schema("v1")
            .build()
            .unwrap()
    };
    let (one, two) = (build().await, build().await);
    let (a, b) = (Lossy("k".into(), 1), Lossy("k".into(), 2));
    assert_ne!(one.l2_key(&a), one.l2_key(&b));
    one.insert(a.clone(), "for a".into()).await;
    assert_eq!(two.get(&b).await, None);
    assert_eq!(two.get(&a).await.as_deref(), Some("for a"));
}

/// A tag's invalidation Redis refuses (here an ACL without `SSCAN`) while
/// the tag's set is a set waits, set and members kept, and lands once
/// Redis allows it: only garbage under the set's name is deleted outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_tag_invalidation_keeps_the_set_until_it_lands() {
    let server = RedisServer::start().unwrap();
    server
        .command(&[
            "ACL", "SETUSER", "noscan", "on", ">pw", "~*", "&*", "+@all", "-sscan",
        ])
        .unwrap();
    let cache = cache(&format!("redis://noscan:pw@{}", server.addr()), false).await;
    let k = "k".to_owned();
    cache.tagged(["t"]).insert(k.clone(), "v".into()).await;
    let data = cache.l2_key(&k).unwrap();
    let set = tag_set(&cache, &k, "t");
    let exists = |key: &str| matches!(server.command(&["EXISTS", key]).unwrap(), Reply::Int(1));
    assert!(exists(&data) && exists(&set));

    cache.invalidate_tag("t").await;
    assert_eq!(cache.invalidations_pending(), 1);
    assert!(
        exists(&set),
        "the set of a refused invalidation was deleted"
    );
    assert!(exists(&data));

    server
        .command(&["ACL", "SETUSER", "noscan", "+sscan"])
        .unwrap();
    eventually("the invalidation landed", async || {
        cache.invalidations_pending() == 0
    })
    .await;
    assert!(!exists(&data) && !exists(&set));
}

/// A key whose serialization fails (postcard refuses `#[serde(flatten)]`)
/// lives in each instance's L1 only, and its invalidation has nothing to
/// tell the others: it lands at once. It used to wait for a message that
/// could never be built, retried for ever.
#[tokio::test]
async fn a_key_that_does_not_serialize_is_invalidated_here_at_once() {
    #[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
    struct Flat {
        #[serde(flatten)]
        id: Id,
    }
    #[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
    struct Id {
        id: u32,
    }
    let server = RedisServer::start().unwrap();
    let cache: TieredCache<Flat, String> = TieredCache::builder()
        .redis(client(&server.url()).await)
        .schema("v1")
        .redis_retry_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let k = Flat { id: Id { id: 1 } };
    assert_eq!(cache.l2_key(&k), None, "postcard refuses it");
    cache.insert(k.clone(), "v".into()).await;
    assert_eq!(cache.get(&k).await.as_deref(), Some("v"), "kept in L1");
    cache.invalidate(&k).await;
    assert_eq!(cache.get(&k).await, None);
    assert_eq!(cache.invalidations_pending(), 0, "nothing left to retry");
    assert_eq!(cache.stats().l2_errors, 0);
}

/// The Redis tier's settings hold whether they come before or after
/// `.redis(client)`. Given before, they used to be dropped without a word
/// (and a later `.redis` reset them). Timeouts of zero are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_settings_hold_in_any_order() {
    let server = RedisServer::start().unwrap();
    let cache: Cache = TieredCache::builder()
        .redis_prefix("first:")
        .lease(Duration::from_secs(5))
        .schema("v1")
        .redis(client(&server.url()).await)
        .build()
        .unwrap();
    let k = "k".to_owned();
    let data = cache.l2_key(&k).unwrap();
    assert!(data.starts_with("first:"), "{data}");
    // The lease is taken while the load runs.
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let loading = {
        let (cache, k) = (cache.clone(), k.clone());
        tokio::spawn(async move {
            cache
                .get_or_load(&k, move || async move {
                    wait.await.unwrap();
                    Ok::<_, String>("v".to_owned())
                })
                .await
        })
    };
    let lease = format!("{data}:lease");
    eventually("the lease taken", async || {
        server.command(&["EXISTS", &lease]).unwrap() == Reply::Int(1)
    })
    .await;
    go.send(()).unwrap();
    assert_eq!(loading.await.unwrap().unwrap(), "v");

    for (builder, what) in [
        (
            TieredCache::<String, String>::builder().redis_timeout(Duration::ZERO),
            "a Redis timeout must be positive",
        ),
        (
            TieredCache::<String, String>::builder().region_timeout(Duration::ZERO),
            "a Redis timeout must be positive",
        ),
        (
            TieredCache::<String, String>::builder().lease(Duration::from_micros(999)),
            "the lease must be at least 1 ms",
        ),
    ] {
        let built = builder
            .schema("v1")
            .redis(client(&server.url()).await)
            .build();
        assert!(
            matches!(built, Err(cog_cache::BuildError::Invalid(w)) if w == what),
            "{what}"
        );
    }
}

/// A Redis-backed cache says which schema it needs instead of defaulting
/// to a type name that changes between compilers.
#[tokio::test]
async fn a_redis_cache_needs_a_schema() {
    let server = RedisServer::start().unwrap();
    let err = TieredCache::<String, String>::builder()
        .redis(client(&server.url()).await)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, cog_cache::BuildError::SchemaRequired),
        "{err}"
    );
    assert!(err.to_string().contains(".schema("), "{err}");
}

/// Invalidating a tenant while Redis is frozen costs one timeout (the walk
/// of the keyspace notices at its first page), then nothing while the
/// circuit is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_a_tenant_respects_the_timeout_and_the_circuit() {
    let server = RedisServer::start().unwrap();
    let timeout = Duration::from_millis(100);
    let cache: Cache = TieredCache::builder()
        .redis(client(&server.url()).await)
        .schema("v1")
        .redis_timeout(timeout)
        .redis_retry_interval(Duration::from_secs(30))
        .build()
        .unwrap();
    let view = cache.tenant("t");
    view.insert("k".into(), "v".into()).await;
    server.pause().unwrap();
    let started = std::time::Instant::now();
    view.invalidate_tenant().await;
    let first = started.elapsed();
    assert!(cache.l2_circuit_open());
    // The scan's first page times out (and the publish is refused by the
    // open circuit): about one timeout, well short of the walk's bound.
    assert!(first >= timeout, "{first:?}");
    assert!(first < timeout * 4, "{first:?}");
    let started = std::time::Instant::now();
    view.invalidate_tenant().await;
    let second = started.elapsed();
    assert!(second < Duration::from_millis(20), "{second:?}");
    assert_eq!(view.get_fresh(&"k".to_owned()), None);
    server.resume().unwrap();
}

/// Stale-while-revalidate refreshes once per cluster with the lease, not
/// once per instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_refreshes_take_the_lease() {
    let server = RedisServer::start().unwrap();
    let build = async || -> Cache {
        TieredCache::builder()
            .redis(client(&server.url()).await)
            .schema("v1")
            .redis_timeout(Duration::from_millis(300))
            // Long enough that both instances hold the refreshed value
            // fresh at once on a busy machine (at 100 ms they sometimes
            // did not, and the wait below ran out).
            .ttl(Duration::from_millis(500))
            .ttl_jitter(0.0)
            .stale_while_revalidate(Duration::from_secs(60))
            .lease(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let (a, b) = (build().await, build().await);
    let k = "k".to_owned();
    let counter = Counter::default();
    a.get_or_load(&k, counter.loader("v1", Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(b.get(&k).await.as_deref(), Some("v1"));
    tokio::time::sleep(Duration::from_millis(550)).await;
    // Both serve the stale value and refresh behind it, at once.
    let (x, y) = tokio::join!(
        a.get_or_load(&k, counter.loader("v2", Duration::from_millis(300))),
        b.get_or_load(&k, counter.loader("v2", Duration::from_millis(300))),
    );
    assert_eq!((x.unwrap().as_str(), y.unwrap().as_str()), ("v1", "v1"));
    eventually("both refreshed", async || {
        a.get_fresh(&k).as_deref() == Some("v2") && b.get_fresh(&k).as_deref() == Some("v2")
    })
    .await;
    assert_eq!(counter.calls(), 2, "one initial load, one refresh");
}

/// Tag sets lose the members whose entries expired: they stay near the
/// number of live entries, however many come and go.
#[tokio::test]
async fn tag_sets_are_pruned_of_expired_members() {
    let server = RedisServer::start().unwrap();
    let cache: Cache = TieredCache::builder()
        .redis(client(&server.url()).await)
        .schema("v1")
        .redis_timeout(Duration::from_millis(300))
        .ttl(Duration::from_millis(30))
        .ttl_jitter(0.0)
        .build()
        .unwrap();
    let tagged = cache.tagged(["t"]);
    // One long-lived member keeps the set alive across the rounds.
    tagged
        .insert_with_ttl("anchor".into(), "v".into(), Duration::from_secs(100))
        .await;
    for round in 0..10 {
        for i in 0..100 {
            tagged.insert(format!("k{round}-{i}"), "v".into()).await;
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let name = "cog:cache:~:#tag:t";
    eventually("pruning caught up", async || {
        // 1 001 added, at most 101 live at a time.
        matches!(server.command(&["SCARD", name]).unwrap(), Reply::Int(n) if n < 400)
    })
    .await;
    // The set lives as long as its longest member, never shorter: a later
    // short entry does not cut it.
    cache
        .tagged(["long"])
        .insert_with_ttl("long".into(), "v".into(), Duration::from_secs(100))
        .await;
    cache
        .tagged(["long"])
        .insert("short".into(), "v".into())
        .await;
    let long_set = name.replace("#tag:t", "#tag:long");
    let Reply::Int(ttl) = server.command(&["PTTL", &long_set]).unwrap() else {
        panic!()
    };
    assert!(ttl > 90_000, "{ttl}");
}

/// The last window of the load/invalidation race: another instance
/// deletes a key and publishes its invalidation, this instance's load
/// writes the key after that delete, and the message arrives after the
/// write. The message then takes the write out of L2 again.
#[tokio::test]
async fn an_invalidation_arriving_after_a_racing_write_takes_it_out() {
    let server = RedisServer::start().unwrap();
    let a = cache(&server.url(), false).await;
    tokio::time::timeout(HANG, a.invalidations_ready())
        .await
        .unwrap();
    let k = "k".to_owned();
    let counter = Counter::default();
    a.get_or_load(&k, counter.loader("v1", Duration::ZERO))
        .await
        .unwrap();
    let l2_key = a.l2_key(&k).unwrap();
    assert_eq!(server.command(&["EXISTS", &l2_key]).unwrap(), Reply::Int(1));
    // What another instance's `invalidate(&k)` publishes (postcard:
    // origin, variant `Key`, tenant "", key "k"), its delete having missed
    // our write.
    let mut payload = Vec::new();
    let mut origin: u64 = 0x1234_5678;
    while origin >= 0x80 {
        payload.push((origin as u8) | 0x80);
        origin >>= 7;
    }
    payload.push(origin as u8);
    payload.extend_from_slice(&[0, 0, 1, b'k']);
    server
        .command_bytes(&[b"PUBLISH", b"cog:cache:invalidate", &payload])
        .unwrap();
    eventually("the racing write is gone from L2", async || {
        server.command(&["EXISTS", &l2_key]).unwrap() == Reply::Int(0)
    })
    .await;
    assert_eq!(a.get_fresh(&k), None);
    // A write that no invalidation names stays.
    a.get_or_load(&"other".to_owned(), counter.loader("v", Duration::ZERO))
        .await
        .unwrap();
    let other = a.l2_key(&"other".to_owned()).unwrap();
    assert_eq!(server.command(&["EXISTS", &other]).unwrap(), Reply::Int(1));
}

/// A tag on thousands of entries is invalidated whole in L2, with the
/// default 50 ms timeout per Redis call: the deletes are not one call
/// under one timeout (which gave up part way, left tagged values in L2
/// for other instances to read back, and counted against the circuit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_tag_is_invalidated_whole() {
    let server = RedisServer::start().unwrap();
    let cache = with_defaults(&server.url()).await;
    let tagged = cache.tagged(["big"]);
    for i in 0..3000 {
        tagged.insert(format!("k{i}"), "v".into()).await;
    }
    let keys = || dbsize(&server);
    assert!(keys() >= 3000, "{}", keys());
    let errors = cache.stats().l2_errors;
    tagged.invalidate_tag("big").await;
    assert_eq!(keys(), 0, "every tagged value and the set are gone");
    assert_eq!(cache.stats().l2_errors, errors);
    assert!(!cache.l2_circuit_open());
    let other = with_defaults(&server.url()).await;
    assert_eq!(other.get(&"k7".to_owned()).await, None);
}

/// A tenant with hundreds of thousands of keys in L2 is invalidated whole
/// within the walk's bound (100 timeouts): its keys are deleted a page at
/// a time, not one round trip each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_tenant_is_invalidated_whole() {
    let server = RedisServer::start().unwrap();
    let cache = with_defaults(&server.url()).await;
    let acme = cache.tenant("acme");
    acme.insert("k".into(), "v".into()).await;
    let key = acme.l2_key(&"k".to_owned()).unwrap();
    let prefix = key.rsplit_once(':').unwrap().0;
    // 200 000 more of the tenant's keys, and one of another tenant.
    let fill = "for i = 1, tonumber(ARGV[2]) do redis.call('SET', ARGV[1] .. ':f' .. i, 'v') end";
    server
        .command(&["EVAL", fill, "0", prefix, "200000"])
        .unwrap();
    cache.insert("other".into(), "v".into()).await;
    let keys = || dbsize(&server);
    assert_eq!(keys(), 200_002);
    let started = std::time::Instant::now();
    acme.invalidate_tenant().await;
    let took = started.elapsed();
    assert_eq!(keys(), 1, "only the other tenant's key is left ({took:?})");
    assert_eq!(cache.stats().l2_errors, 0);
}

/// L1 weighs what a value takes in memory, also when it went through
/// L2 compressed: 50 000-byte strings (a few hundred bytes in Redis) weigh
/// 50 000 in L1, loaded here or read from L2 by another instance, so a
/// 120 000-byte tenant cap holds two. Before, L1 counted the compressed
/// size, and a cache of compressible values held hundreds of times its
/// capacity. A weigher, when set, decides instead.
#[tokio::test]
async fn l1_weighs_values_uncompressed_or_by_the_weigher() {
    let server = RedisServer::start().unwrap();
    let build = |weigher: bool| {
        let url = server.url();
        async move {
            let mut b = TieredCache::builder()
                .redis(client(&url).await)
                .schema("v1")
                .tenant_l1_cap(if weigher { 2_500 } else { 120_000 });
            if weigher {
                b = b.weigher(|_, _| 1_000);
            }
            let cache: Cache = b.build().unwrap();
            cache
        }
    };
    let big = "x".repeat(50_000);
    let loader = |v: &String| {
        let v = v.clone();
        move || async move { Ok::<_, String>(v) }
    };
    let a = build(false).await;
    for i in 0..3 {
        a.get_or_load(&format!("k{i}"), loader(&big)).await.unwrap();
    }
    assert_eq!(a.stats().l1_tenant_capped, 1, "loaded: two fit");
    let b = build(false).await;
    for i in 0..3 {
        assert_eq!(b.get(&format!("k{i}")).await.as_deref(), Some(&big[..]));
    }
    assert_eq!(b.stats().l1_tenant_capped, 1, "read from L2: two fit");

    let weighed = build(true).await;
    for i in 0..3 {
        weighed
            .get_or_load(&format!("w{i}"), loader(&"v".to_owned()))
            .await
            .unwrap();
    }
    assert_eq!(weighed.stats().l1_tenant_capped, 1, "the weigher's 1 000");
}

/// Behind Sentinel, a failover: what L2 held is read from the new
/// master, and writes reach it within moments (the demoted server answers
/// `READONLY`, and the client reconnects to the new primary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_moves_l2_to_the_new_master() {
    let sentinel = cog_testkit::RedisSentinel::start().unwrap();
    let cache: Cache = TieredCache::builder()
        .redis(client(&sentinel.url()).await)
        .schema("v1")
        .redis_retry_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    cache.insert("before".into(), "v".into()).await;
    let sentinel = sentinel.failed_over().await;
    let master = sentinel.master().unwrap();
    let mut i = 0;
    eventually("writes reach the new master", async || {
        i += 1;
        let key = format!("after{i}");
        cache.insert(key.clone(), "v".into()).await;
        let l2 = cache.l2_key(&key).unwrap();
        matches!(master.command(&["EXISTS", &l2]).unwrap(), Reply::Int(1))
    })
    .await;
    // Read by another instance from L2, on the new master.
    let other = with_defaults(&sentinel.url()).await;
    assert_eq!(other.get(&"before".to_owned()).await.as_deref(), Some("v"));
}

/// The cluster-wide load lease is per key: an instance loading one key
/// does not hold up another instance loading a different one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_lease_is_per_key() {
    let server = RedisServer::start().unwrap();
    let (a, b) = (
        cache(&server.url(), true).await,
        cache(&server.url(), true).await,
    );
    let slow_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = slow_done.clone();
    let slow = tokio::spawn(async move {
        a.get_or_load(&"slow".to_owned(), move || async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            done.store(true, Ordering::SeqCst);
            Ok::<_, String>("s".to_owned())
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fast = b
        .get_or_load(&"fast".to_owned(), || async {
            Ok::<_, String>("f".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(fast, "f");
    assert!(
        !slow_done.load(Ordering::SeqCst),
        "the other key's load waited for this one"
    );
    assert_eq!(slow.await.unwrap().unwrap(), "s");
}

/// Garbage at a key's lease (a value without a lifetime: every lease is
/// set with one) is taken over at the first check: the load does not wait
/// out the 5 s lease, and once done it releases the lease as its own. It
/// used to stand for ever, and every load of the key waited 5 s.
#[tokio::test]
async fn a_lease_without_a_lifetime_is_garbage_taken_over() {
    let server = RedisServer::start().unwrap();
    let cache = cache(&server.url(), true).await;
    let k = "k".to_owned();
    let lease = format!("{}:lease", cache.l2_key(&k).unwrap());
    server.command(&["SET", &lease, "garbage"]).unwrap();
    let counter = Counter::default();
    let started = std::time::Instant::now();
    assert_eq!(
        cache
            .get_or_load(&k, counter.loader("v", Duration::ZERO))
            .await
            .unwrap(),
        "v"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "waited out the 5 s lease: {:?}",
        started.elapsed()
    );
    assert_eq!(counter.calls(), 1);
    assert!(matches!(
        server.command(&["EXISTS", &lease]).unwrap(),
        Reply::Int(0)
    ));
}

/// `invalidations_ready` resolves once the cache's subscription is up and
/// not before: while its connection cannot reach Redis it waits; once it
/// can, it resolves, and another instance's invalidation is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_ready_waits_for_the_subscription() {
    let server = RedisServer::start().unwrap();
    let proxy = cog_testkit::Proxy::start(&server.addr()).await.unwrap();
    let through = client(&proxy.redis_url()).await;
    proxy.cut();
    let cache: Cache = TieredCache::builder()
        .redis(through)
        .schema("v1")
        .build()
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), cache.invalidations_ready())
            .await
            .is_err(),
        "ready while the subscriber cannot reach Redis"
    );
    proxy.restore();
    tokio::time::timeout(Duration::from_secs(10), cache.invalidations_ready())
        .await
        .expect("ready once Redis is reachable");
    let other = with_defaults(&server.url()).await;
    cache.insert("k".into(), "v".into()).await;
    other.invalidate(&"k".to_owned()).await;
    eventually("the other instance's invalidation", async || {
        cache.get_fresh(&"k".to_owned()).is_none()
    })
    .await;
}

/// A subscription Redis refuses (`NOPERM`: the cache's ACL user may not use
/// its channel) is not taken for one. fred answers `Ok` to a refused
/// `SUBSCRIBE`; before, the cache then believed it listened
/// (`invalidations_ready` resolved) and heard nothing, serving entries
/// other instances had invalidated. Now it waits and tries again; once
/// Redis allows the channel, it is ready, its L1 (filled while it heard
/// nothing) is flushed, and other instances' invalidations reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscription_is_tried_again_until_redis_allows_it() {
    refused_then_allowed(fred::types::RespVersion::RESP2).await;
}

/// The same over RESP3, where the subscription is confirmed another way
/// (a `PING` is answered alike with and without one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscription_is_seen_over_resp3_too() {
    refused_then_allowed(fred::types::RespVersion::RESP3).await;
}

/// While Redis refuses the subscription, new attempts come as documented:
/// 0.5 s after the first failure, doubling to every 4 s (each on a new
/// connection) — neither a busy loop against a refusing server nor a wait
/// that grows without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_subscriptions_are_retried_at_half_a_second_doubling_to_four() {
    use fred::prelude::{Builder, Config};
    let server = RedisServer::start().unwrap();
    let url = server.acl_user("reader", false).unwrap();
    let builder = Builder::from_config(Config::from_url(&url).unwrap());
    let failures = std::sync::Mutex::new(Vec::<Instant>::new());
    // Six failures make the five waits between them; then it is dropped
    // (its next wait would only end the test later).
    let (enough, six) = tokio::sync::oneshot::channel::<()>();
    let enough = std::sync::Mutex::new(Some(enough));
    let subscribing = cog_core::redis::subscribe_confirmed(
        &builder,
        "ch",
        || true,
        |attempt, _| {
            let mut failures = failures.lock().unwrap();
            assert_eq!(attempt as usize, failures.len(), "attempts counted from 0");
            failures.push(Instant::now());
            if failures.len() == 6 {
                let _ = enough.lock().unwrap().take().unwrap().send(());
            }
        },
    );
    tokio::select! {
        subscribed = subscribing => panic!("refused, yet {:?}", subscribed.is_some()),
        _ = six => {}
    }
    let failures = failures.into_inner().unwrap();
    let waits: Vec<Duration> = failures.windows(2).map(|w| w[1] - w[0]).collect();
    for (wait, planned) in waits.iter().zip([500, 1000, 2000, 4000, 4000]) {
        let planned = Duration::from_millis(planned);
        // An attempt on loopback that Redis refuses takes milliseconds.
        assert!(
            *wait >= planned && *wait < planned + Duration::from_millis(1500),
            "waits {waits:?}"
        );
    }
}

/// The invalidation listener lives as long as its cache: still subscribed
/// after its first checks whether the cache is there (once a second), and
/// gone from Redis once the cache is dropped — not a connection left
/// behind per cache ever built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_ends_with_its_cache() {
    let server = RedisServer::start().unwrap();
    let listeners = || match server
        .command(&["PUBSUB", "NUMSUB", "cog:cache:invalidate"])
        .unwrap()
    {
        Reply::Array(Some(r)) => match r.as_slice() {
            [_, Reply::Int(n)] => *n,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    let cache = cache(&server.url(), false).await;
    cache.invalidations_ready().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(listeners(), 1, "still listening");
    drop(cache);
    eventually("the listener gone", async || listeners() == 0).await;
}

/// What the subscriber's confirmation rests on, with the refusal's answer
/// gone: `cog_core::redis::is_subscribed` asked after Redis has answered a
/// refused `SUBSCRIBE` (fred dropped that answer: no call was waiting)
/// says `false`, and `true` for a subscription Redis took — over RESP2
/// (the `PING`'s shape) and RESP3 (`CLIENT INFO`). The tests above mostly
/// see the other path, the refusal taken as the next call's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_tells_whether_it_is_subscribed() {
    use fred::interfaces::PubsubInterface;
    use fred::prelude::{Builder, ClientLike, Config};
    use fred::types::RespVersion;
    let server = RedisServer::start().unwrap();
    let reader_url = server.acl_user("reader", false).unwrap();
    for version in [RespVersion::RESP2, RespVersion::RESP3] {
        for (url, subscribed) in [(&reader_url, false), (&server.url(), true)] {
            let mut config = Config::from_url(url).unwrap();
            config.version = version.clone();
            let sub = Builder::from_config(config)
                .build_subscriber_client()
                .unwrap();
            sub.init().await.unwrap();
            sub.subscribe("ch").await.unwrap();
            // Redis's answer arrives with no call waiting for it.
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(
                cog_core::redis::is_subscribed(&sub).await.unwrap(),
                subscribed,
                "{version:?} at {url}"
            );
            sub.quit().await.unwrap();
        }
    }
}

async fn refused_then_allowed(version: fred::types::RespVersion) {
    use fred::prelude::{Builder, ClientLike, Config, ReconnectPolicy};
    let server = RedisServer::start().unwrap();
    let reader_url = server.acl_user("reader", false).unwrap();
    let mut config = Config::from_url(&reader_url).unwrap();
    config.version = version;
    let reader = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.max_command_attempts = 1;
        })
        .set_policy(ReconnectPolicy::new_constant(0, 100))
        .build()
        .unwrap();
    reader.init().await.unwrap();
    let cache: Cache = TieredCache::builder()
        .redis(reader)
        .schema("v1")
        .build()
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(1), cache.invalidations_ready())
            .await
            .is_err(),
        "ready while Redis refuses the subscription"
    );
    let k = "k".to_owned();
    cache.insert(k.clone(), "v".into()).await;
    assert_eq!(cache.get_fresh(&k).as_deref(), Some("v"), "in L1");

    server.acl_user("reader", true).unwrap();
    tokio::time::timeout(HANG, cache.invalidations_ready())
        .await
        .expect("ready once Redis allows the channel");
    assert_eq!(
        cache.get_fresh(&k),
        None,
        "L1 flushed: it may hold what others invalidated while it was deaf"
    );
    assert_eq!(cache.get(&k).await.as_deref(), Some("v"), "from L2");
    assert_eq!(cache.get_fresh(&k).as_deref(), Some("v"), "in L1 again");
    let other = with_defaults(&server.url()).await;
    other.invalidate(&k).await;
    eventually("the other instance's invalidation", async || {
        cache.get_fresh(&k).is_none()
    })
    .await;

    // The channel taken away while listening: Redis closes the
    // subscription's connection, and the new one is refused. fred would
    // resubscribe on its own and take the refusal for a subscription; the
    // cache stops being ready instead, and what it loads meanwhile goes
    // once it listens again.
    server.acl_user("reader", false).unwrap();
    eventually("not ready once the channel is taken away", async || {
        tokio::time::timeout(Duration::from_millis(100), cache.invalidations_ready())
            .await
            .is_err()
    })
    .await;
    cache.insert(k.clone(), "v2".into()).await;
    assert_eq!(cache.get_fresh(&k).as_deref(), Some("v2"), "in L1");
    server.acl_user("reader", true).unwrap();
    tokio::time::timeout(HANG, cache.invalidations_ready())
        .await
        .expect("ready again once Redis allows the channel");
    assert_eq!(cache.get_fresh(&k), None, "L1 flushed after the gap");
    assert_eq!(cache.get(&k).await.as_deref(), Some("v2"), "from L2");
    other.invalidate(&k).await;
    eventually(
        "the other instance's invalidation, heard again",
        async || cache.get_fresh(&k).is_none(),
    )
    .await;
}

/// Redis out of memory (`maxmemory` reached, `noeviction`): writes fail
/// and open the circuit; reads and deletes still work. Values still load,
/// once per key, without waiting on a lease Redis could not grant; what L2
/// holds is still read; and an invalidation made meanwhile is not lost —
/// it reaches L2 and the other instances' L1s once the circuit lets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory_still_loads_reads_and_invalidates() {
    let server = RedisServer::start().unwrap();
    let writer = cache(&server.url(), true).await;
    let k = "kept".to_owned();
    let counter = Counter::default();
    assert_eq!(
        writer
            .get_or_load(&k, counter.loader("v", Duration::ZERO))
            .await
            .unwrap(),
        "v"
    );
    // Another instance holds it in L1, listening for invalidations.
    let reader = cache(&server.url(), false).await;
    reader.invalidations_ready().await;
    assert_eq!(
        reader
            .get_or_load(&k, counter.loader("x", Duration::ZERO))
            .await
            .unwrap(),
        "v"
    );
    assert_eq!(counter.calls(), 1);

    server
        .command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .unwrap();
    server
        .command(&["CONFIG", "SET", "maxmemory", "1"])
        .unwrap();
    match server.command(&["SET", "probe", "x"]) {
        Ok(Reply::Error(e)) => assert!(e.starts_with("OOM"), "{e}"),
        other => panic!("not out of memory: {other:?}"),
    }

    // An instance with an empty L1 reads what L2 holds.
    let cache = cache(&server.url(), true).await;
    let other = Counter::default();
    assert_eq!(
        cache
            .get_or_load(&k, other.loader("reloaded", Duration::ZERO))
            .await
            .unwrap(),
        "v"
    );
    assert_eq!(other.calls(), 0);
    // A new key loads once for every concurrent caller, without waiting on
    // a lease (its `SET NX` fails too): the load takes the stampede's
    // 300 ms, the Redis calls at most their 300 ms timeout each, and a
    // wait for the lease would take its 5 s.
    let started = std::time::Instant::now();
    stampede(std::slice::from_ref(&cache), 20, &other, "new").await;
    assert_eq!(other.calls(), 1);
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        started.elapsed()
    );
    assert!(cache.stats().l2_errors > 0);

    cache.invalidate(&k).await;
    eventually("the entry deleted from L2", async || dbsize(&server) == 0).await;
    eventually("the other instance's L1 told", async || {
        reader.get(&k).await.is_none()
    })
    .await;
    eventually("nothing left to retry", async || {
        cache.invalidations_pending() == 0
    })
    .await;
}

/// An invalidation made while this instance cannot reach Redis waits
/// (`invalidations_pending`) and lands once Redis is back: the value leaves
/// L2 and the other instances' L1s — before, it stayed in both until its
/// TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_made_while_redis_is_cut_off_lands_when_it_is_back() {
    let server = RedisServer::start().unwrap();
    let proxy = cog_testkit::Proxy::start(&server.addr()).await.unwrap();
    let here = cache(&proxy.redis_url(), false).await;
    let other = cache(&server.url(), false).await;
    other.invalidations_ready().await;
    let k = "k".to_owned();
    here.insert(k.clone(), "v".into()).await;
    let l2_key = here.l2_key(&k).unwrap();
    assert_eq!(other.get(&k).await.as_deref(), Some("v"));

    proxy.cut();
    here.invalidate(&k).await;
    assert_eq!(here.invalidations_pending(), 1);
    assert!(matches!(
        server.command(&["EXISTS", &l2_key]).unwrap(),
        Reply::Int(1)
    ));
    assert!(
        other.get_fresh(&k).is_some(),
        "nobody told the other instance yet"
    );

    proxy.restore();
    eventually("the invalidation landed", async || {
        here.invalidations_pending() == 0
    })
    .await;
    assert!(matches!(
        server.command(&["EXISTS", &l2_key]).unwrap(),
        Reply::Int(0)
    ));
    eventually("the other instance's L1 told", async || {
        other.get_fresh(&k).is_none()
    })
    .await;
}

/// `forget_tenants` takes each named tenant's entries — values, tag sets —
/// from this instance's L1 and from L2 in one walk of the keyspace (one
/// `SCAN` here, where a walk per tenant takes one each), and nothing of any
/// other tenant's, a tenant whose id the others' start with included. It
/// tells no other instance: each forgets for itself (as each instance's
/// directory hook does). What Redis refuses is retried until it lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_tenants_leave_l1_and_l2_in_one_walk() {
    let server = RedisServer::start().unwrap();
    server
        .command(&[
            "ACL", "SETUSER", "noscan", "on", ">pw", "~*", "&*", "+@all", "-scan",
        ])
        .unwrap();
    let a = cache(&server.url(), false).await;
    let b = cache(&server.url(), false).await;
    let k = "k".to_owned();
    let gone = ["acme", "bob:1", "carol"];
    let all = ["acme", "bob:1", "carol", "ac", "dave"];
    for t in all {
        a.tenant(t).tagged(["t"]).insert(k.clone(), t.into()).await;
        assert_eq!(b.tenant(t).get(&k).await.as_deref(), Some(t));
    }
    let keys = || dbsize(&server);
    assert_eq!(keys(), 10, "a value and a tag set each");

    let before = server.calls("scan");
    a.forget_tenants(gone).await;
    assert_eq!(server.calls("scan"), before + 1, "one walk");
    assert_eq!(keys(), 4, "only the others' are left");
    let c = cache(&server.url(), false).await;
    for t in all {
        let kept = (!gone.contains(&t)).then_some(t);
        assert_eq!(a.tenant(t).get_fresh(&k).as_deref(), kept, "{t} in L1");
        assert_eq!(c.tenant(t).get(&k).await.as_deref(), kept, "{t} in L2");
        assert_eq!(
            b.tenant(t).get_fresh(&k).as_deref(),
            Some(t),
            "{t}: B not told"
        );
    }
    b.forget_tenants(gone.iter().map(|t| t.to_string())).await;
    for t in all {
        let kept = (!gone.contains(&t)).then_some(t);
        assert_eq!(b.tenant(t).get_fresh(&k).as_deref(), kept, "{t} in B's L1");
    }

    // Refused: each tenant queued, and deleted once Redis allows it.
    let refused = cache(&format!("redis://noscan:pw@{}", server.addr()), false).await;
    for t in ["ac", "dave"] {
        refused.tenant(t).insert(k.clone(), t.into()).await;
    }
    refused.forget_tenants(["ac", "dave"]).await;
    assert_eq!(refused.invalidations_pending(), 2);
    assert_eq!(refused.tenant("ac").get_fresh(&k), None, "L1 at once");
    server
        .command(&["ACL", "SETUSER", "noscan", "+scan"])
        .unwrap();
    eventually("the retries landed", async || {
        refused.invalidations_pending() == 0
    })
    .await;
    assert_eq!(keys(), 0);
}
