//! L1 alone: read-through, stampedes, freshness, tenants.

use std::sync::Arc;
use std::time::Duration;

use cog_cache::{CacheError, TieredCache};

use crate::support::{Cache, Counter, failing};

fn l1() -> Cache {
    TieredCache::builder().build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_run_the_loader_once() {
    let cache = l1();
    let counter = Counter::default();
    let key = "cold".to_owned();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (cache, counter, key) = (cache.clone(), counter.clone(), key.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load(&key, counter.loader("v", Duration::from_millis(50)))
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "v");
    }
    assert_eq!(counter.calls(), 1);
    assert!(cache.stats().l1_hits + cache.stats().l1_misses >= 1000);
}

#[tokio::test]
async fn expiry_stale_while_revalidate_and_stale_if_error() {
    let cache: Cache = TieredCache::builder()
        .ttl(Duration::from_millis(100))
        .ttl_jitter(0.0)
        .stale_while_revalidate(Duration::from_millis(300))
        .stale_if_error(Duration::from_secs(60))
        .build()
        .unwrap();
    let counter = Counter::default();
    let k = "k".to_owned();
    assert_eq!(
        cache
            .get_or_load(&k, counter.loader("v1", Duration::ZERO))
            .await
            .unwrap(),
        "v1"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Stale: answered at once with v1, refreshed once in the background.
    for _ in 0..20 {
        let v = cache
            .get_or_load(&k, counter.loader("v2", Duration::from_millis(50)))
            .await;
        assert_eq!(v.unwrap(), "v1");
    }
    crate::support::eventually("background refresh", async || {
        cache
            .get_or_load(&k, counter.loader("v3", Duration::ZERO))
            .await
            .unwrap()
            == "v2"
    })
    .await;
    assert_eq!(counter.calls(), 2, "one load, one refresh");

    // Past the stale-while-revalidate window the loader fails: the last
    // value stands in (stale if error).
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(cache.get_or_load(&k, failing()).await.unwrap(), "v2");
    assert!(cache.stats().stale_served >= 21);
}

#[tokio::test]
async fn errors_without_stale_and_negative_caching() {
    let cache = l1();
    let err = cache
        .get_or_load(&"x".to_owned(), failing())
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::Load(ref e) if e == "upstream down"));
    assert_eq!((cache.stats().load_errors, cache.stats().loads), (1, 0));
    // A failure is not cached: the next call loads.
    let counter = Counter::default();
    assert_eq!(
        cache
            .get_or_load(&"x".to_owned(), counter.loader("ok", Duration::ZERO))
            .await
            .unwrap(),
        "ok"
    );
    assert_eq!((cache.stats().load_errors, cache.stats().loads), (1, 1));

    let calls = Counter::default();
    for _ in 0..3 {
        let c = calls.clone();
        let v = cache
            .get_or_load_optional(&"missing".to_owned(), move || async move {
                c.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, String>(None)
            })
            .await
            .unwrap();
        assert_eq!(v, None);
    }
    assert_eq!(calls.calls(), 1, "absence was not cached");
}

#[tokio::test]
async fn tenants_are_isolated_and_capped() {
    let cache: Cache = TieredCache::builder().tenant_l1_cap(4096).build().unwrap();
    let k = "same-key".to_owned();
    let a = cache
        .tenant("a")
        .get_or_load(&k, || async { Ok::<_, String>("for a".into()) })
        .await;
    let b = cache
        .tenant("b")
        .get_or_load(&k, || async { Ok::<_, String>("for b".into()) })
        .await;
    assert_eq!(a.unwrap(), "for a");
    assert_eq!(b.unwrap(), "for b");
    assert_eq!(cache.tenant("a").tenant_id(), "a");
    assert_eq!(cache.tenant_id(), "", "the shared namespace");
    assert_eq!(cache.tenant("a").get(&k).await.as_deref(), Some("for a"));

    // Tenant "hog" fills its cap; others still get L1.
    let big = "x".repeat(1000);
    for i in 0..50 {
        let v = big.clone();
        cache
            .tenant("hog")
            .get_or_load(&format!("k{i}"), move || async move { Ok::<_, String>(v) })
            .await
            .unwrap();
    }
    // Each value weighs ~1 090 bytes (1 002 encoded + overhead): three fit
    // under the cap, every other load was refused.
    let resident = (0..50)
        .filter(|i| cache.tenant("hog").get_fresh(&format!("k{i}")).is_some())
        .count();
    assert_eq!(resident, 3);
    assert_eq!(cache.stats().l1_tenant_capped, 47);
    assert_eq!(cache.tenant("a").get(&k).await.as_deref(), Some("for a"));

    // Invalidating a tenant drops only its entries.
    cache.tenant("a").invalidate_tenant().await;
    assert_eq!(cache.tenant("a").get(&k).await, None);
    assert_eq!(cache.tenant("b").get(&k).await.as_deref(), Some("for b"));
}

/// Each tenant's own cap (e.g. its plan's budget): asked on every write,
/// so a tenant without one is not capped, a changed cap holds from the
/// next write, and a tenant capped later is held to what it already has.
#[tokio::test]
async fn each_tenant_gets_its_own_cap() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let small = Arc::new(AtomicU64::new(4096));
    let later = Arc::new(AtomicU64::new(0));
    let (s, l) = (small.clone(), later.clone());
    let cache: Cache = TieredCache::builder()
        .tenant_l1_cap_with(move |tenant| match tenant {
            "small" => Some(s.load(Ordering::Relaxed)),
            "later" => Some(l.load(Ordering::Relaxed)).filter(|c| *c > 0),
            _ => None,
        })
        .build()
        .unwrap();
    let big = "x".repeat(1000);
    let resident = |tenant: &str| {
        (0..20)
            .filter(|i| cache.tenant(tenant).get_fresh(&format!("k{i}")).is_some())
            .count()
    };
    let fill = |tenant: &'static str, keys: std::ops::Range<usize>| {
        let (cache, big) = (cache.clone(), big.clone());
        async move {
            for i in keys {
                cache
                    .tenant(tenant)
                    .insert(format!("k{i}"), big.clone())
                    .await;
            }
        }
    };
    // ~1 090 bytes a value: three fit in 4 096; no cap keeps all.
    fill("small", 0..10).await;
    fill("free", 0..10).await;
    fill("later", 0..10).await;
    assert_eq!(resident("small"), 3);
    assert_eq!(resident("free"), 10);
    assert_eq!(resident("later"), 10);
    assert_eq!(cache.stats().l1_tenant_capped, 7);

    // A bigger cap holds from the next write: four more fit in 8 192.
    small.store(8192, Ordering::Relaxed);
    fill("small", 10..20).await;
    assert_eq!(resident("small"), 7);

    // A cap set later counts what the tenant already holds (~10 900
    // bytes): nothing more fits under 12 000 but one value.
    later.store(12_000, Ordering::Relaxed);
    fill("later", 10..20).await;
    assert_eq!(resident("later"), 11);
}

/// Tag invalidation, expiry and replacement give a capped tenant its room
/// back: its accounting never drifts into a lock-out.
#[tokio::test]
async fn a_capped_tenant_is_never_locked_out() {
    let cache: Cache = TieredCache::builder().tenant_l1_cap(4096).build().unwrap();
    let hog = cache.tenant("hog");
    let big = "x".repeat(1000);
    for round in 0..20 {
        let tagged = hog.tagged(["t"]);
        for i in 0..3 {
            tagged.insert(format!("k{i}"), big.clone()).await;
            // Replacing a key must not count it twice (nor zero times).
            tagged.insert(format!("k{i}"), big.clone()).await;
        }
        for i in 0..3 {
            assert!(
                hog.get_fresh(&format!("k{i}")).is_some(),
                "round {round}: k{i} refused"
            );
        }
        hog.invalidate_tag("t").await;
        // Expired entries are removed on the next read through.
        hog.insert_with_ttl("short".into(), big.clone(), Duration::ZERO)
            .await;
        let v = hog
            .get_or_load(&"short".to_owned(), || async {
                Ok::<_, String>("s".into())
            })
            .await
            .unwrap();
        assert_eq!(v, "s");
        hog.invalidate(&"short".to_owned()).await;
    }
    assert_eq!(cache.stats().l1_tenant_capped, 0);
}

/// Durations up to `Duration::MAX` saturate: no overflow (a panic in debug
/// builds, a wrapped deadline in release ones).
#[tokio::test]
async fn huge_ttls_and_windows_saturate() {
    let cache: Cache = TieredCache::builder()
        .ttl(Duration::MAX)
        .l1_ttl(Duration::MAX)
        .stale_while_revalidate(Duration::MAX)
        .stale_if_error(Duration::MAX)
        .negative_ttl(Duration::MAX)
        .build()
        .unwrap();
    let k = "k".to_owned();
    let v = cache
        .get_or_load(&k, || async { Ok::<_, String>("v".into()) })
        .await
        .unwrap();
    assert_eq!(v, "v");
    assert_eq!(cache.get_fresh(&k).as_deref(), Some("v"));
    cache
        .insert_with_ttl("m".into(), "w".into(), Duration::MAX)
        .await;
    assert_eq!(cache.get_fresh(&"m".to_owned()).as_deref(), Some("w"));
    let none = cache
        .get_or_load_optional(&"absent".to_owned(), || async { Ok::<_, String>(None) })
        .await
        .unwrap();
    assert_eq!(none, None);
}

/// A background refresh whose loader panics lets the next stale read
/// start another: the key is not left un-refreshable.
#[tokio::test]
async fn a_panicking_refresh_does_not_stop_later_ones() {
    let cache: Cache = TieredCache::builder()
        .ttl(Duration::from_millis(50))
        .ttl_jitter(0.0)
        .stale_while_revalidate(Duration::from_secs(60))
        .build()
        .unwrap();
    let k = "k".to_owned();
    cache
        .get_or_load(&k, || async { Ok::<_, String>("v1".into()) })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let stale = cache
        .get_or_load(&k, || async {
            if true {
                panic!("loader bug");
            }
            Ok::<_, String>("never".into())
        })
        .await;
    assert_eq!(stale.unwrap(), "v1");
    // The panicking refresh ends; the next stale read refreshes again.
    crate::support::eventually("a second refresh", async || {
        let v = cache
            .get_or_load(&k, || async { Ok::<_, String>("v2".into()) })
            .await
            .unwrap();
        v == "v2"
    })
    .await;
}

/// A load that was running when its key was invalidated answers its
/// caller but does not write its (possibly outdated) value back.
#[tokio::test]
async fn a_load_racing_an_invalidation_writes_nothing_back() {
    let cache: Cache = TieredCache::builder().build().unwrap();
    let k = "k".to_owned();
    for invalidate in ["key", "tag", "tenant"] {
        let view = cache.tenant("t").tagged(["tag"]);
        let started = Arc::new(tokio::sync::Notify::new());
        let release = Arc::new(tokio::sync::Notify::new());
        let load = {
            let (view, k) = (view.clone(), k.clone());
            let (started, release) = (started.clone(), release.clone());
            tokio::spawn(async move {
                view.get_or_load(&k, move || async move {
                    started.notify_one();
                    release.notified().await;
                    Ok::<_, String>("outdated".into())
                })
                .await
            })
        };
        started.notified().await;
        match invalidate {
            "key" => view.invalidate(&k).await,
            "tag" => view.invalidate_tag("tag").await,
            _ => view.invalidate_tenant().await,
        }
        release.notify_one();
        assert_eq!(load.await.unwrap().unwrap(), "outdated");
        assert_eq!(view.get_fresh(&k), None, "{invalidate}: written back");
    }
}

/// A million distinct tags (and keys, and tenants) leave nothing behind in
/// process beyond what L1's capacity holds.
#[tokio::test]
async fn a_million_distinct_tags_keys_and_tenants_stay_within_l1() {
    let cache: Cache = TieredCache::builder()
        .l1_capacity_bytes(1 << 20)
        .tenant_l1_cap(64 << 10)
        .build()
        .unwrap();
    for i in 0..1_000_000u32 {
        cache
            .tenant(&format!("t{}", i % 50_000))
            .tagged([format!("tag{i}")])
            .insert(format!("k{i}"), "v".into())
            .await;
    }
    let stats = format!("{cache:?}");
    let entries: usize = stats
        .split("l1_entries: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    // Each entry weighs ~90 bytes: at most ~12 000 fit in 1 MiB.
    assert!(entries <= 12_000, "{entries}");
    assert!(entries > 1_000, "{entries}");
}

/// Entries written together expire spread over `ttl × (1 ± jitter)`: with
/// a jitter of 1, about a quarter of them are gone by half the TTL and a
/// quarter are still there at one and a half. Without jitter, none and
/// none. (Before, L1 cut every entry at the TTL: jitter only shortened.)
#[tokio::test]
async fn ttls_spread_over_the_jitter() {
    let ttl = Duration::from_millis(400);
    let cache: Cache = TieredCache::builder()
        .ttl(ttl)
        .ttl_jitter(1.0)
        .build()
        .unwrap();
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    for k in &keys {
        cache.insert(k.clone(), "v".to_owned()).await;
    }
    let fresh = |cache: &Cache| keys.iter().filter(|k| cache.get_fresh(k).is_some()).count();
    tokio::time::sleep(ttl / 2).await;
    let early = fresh(&cache);
    assert!((50..=95).contains(&early), "{early} of 100 fresh at ttl/2");
    tokio::time::sleep(ttl).await;
    let late = fresh(&cache);
    assert!((5..=50).contains(&late), "{late} of 100 fresh at 1.5 ttl");
}

/// A value inserted with its own TTL stays fresh that long, longer than
/// the cache's TTL too (the HTTP cache stores responses so, for their
/// `max-age`); `l1_ttl`, when set, still caps it in L1.
#[tokio::test]
async fn an_entrys_own_ttl_outlasts_the_caches() {
    let cache: Cache = TieredCache::builder()
        .ttl(Duration::from_millis(50))
        .build()
        .unwrap();
    let k = "k".to_owned();
    cache
        .insert_with_ttl(k.clone(), "v".into(), Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(cache.get_fresh(&k).as_deref(), Some("v"));
    assert_eq!(cache.get(&k).await.as_deref(), Some("v"));

    let capped: Cache = TieredCache::builder()
        .ttl(Duration::from_secs(60))
        .l1_ttl(Duration::from_millis(50))
        .build()
        .unwrap();
    capped
        .insert_with_ttl(k.clone(), "v".into(), Duration::from_secs(60))
        .await;
    capped.insert("plain".into(), "v".into()).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(capped.get_fresh(&k), None);
    assert_eq!(capped.get_fresh(&"plain".to_owned()), None);
}

/// Without a weigher an entry weighs its serialized size plus 64 bytes
/// and `size_of::<V>()`: 1 000-byte strings (1 002 serialized) weigh
/// 1 090, so a cap one byte short of ten of them holds nine.
#[tokio::test]
async fn entries_weigh_their_serialized_size_and_a_fixed_overhead() {
    let cache: Cache = TieredCache::builder()
        .tenant_l1_cap(10 * 1090 - 1)
        .build()
        .unwrap();
    let value = "x".repeat(1000);
    for i in 0..9 {
        cache.insert(format!("k{i}"), value.clone()).await;
    }
    assert_eq!(cache.stats().l1_tenant_capped, 0);
    cache.insert("k9".into(), value.clone()).await;
    assert_eq!(cache.stats().l1_tenant_capped, 1);

    // A cap of exactly nine holds nine.
    let exact: Cache = TieredCache::builder()
        .tenant_l1_cap(9 * 1090)
        .build()
        .unwrap();
    for i in 0..9 {
        exact.insert(format!("k{i}"), value.clone()).await;
    }
    assert_eq!(exact.stats().l1_tenant_capped, 0);
}

/// A tag's invalidation takes out the tenant's entries with that tag and
/// nothing else: not its other entries, nor another tenant's with the
/// same tag.
#[tokio::test]
async fn a_tag_invalidation_takes_only_its_tenants_tagged_entries() {
    let cache = l1();
    let (a, b) = (cache.tenant("a"), cache.tenant("b"));
    a.tagged(["t"]).insert("tagged".into(), "v".into()).await;
    a.tagged(["u"]).insert("other-tag".into(), "v".into()).await;
    a.insert("plain".into(), "v".into()).await;
    b.tagged(["t"]).insert("tagged".into(), "v".into()).await;
    a.invalidate_tag("t").await;
    assert_eq!(a.get_fresh(&"tagged".to_owned()), None);
    for k in ["other-tag", "plain"] {
        assert_eq!(a.get_fresh(&k.to_owned()).as_deref(), Some("v"), "{k}");
    }
    assert_eq!(b.get_fresh(&"tagged".to_owned()).as_deref(), Some("v"));
}

/// A failed load is answered with the stale value only within
/// `stale_if_error` after the value expired; past it, the error.
#[tokio::test]
async fn stale_if_error_ends_with_its_window() {
    let ttl = Duration::from_millis(50);
    let cache: Cache = TieredCache::builder()
        .ttl(ttl)
        .ttl_jitter(0.0)
        .stale_if_error(Duration::from_millis(150))
        .build()
        .unwrap();
    let k = "k".to_owned();
    let started = std::time::Instant::now();
    cache
        .get_or_load(&k, || async { Ok::<_, String>("v1".into()) })
        .await
        .unwrap();
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(cache.get_or_load(&k, failing()).await.unwrap(), "v1");
    tokio::time::sleep((ttl + Duration::from_millis(200)).saturating_sub(started.elapsed())).await;
    assert!(cache.get_or_load(&k, failing()).await.is_err());
}
