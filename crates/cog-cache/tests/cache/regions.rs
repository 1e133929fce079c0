//! Invalidations across three regions: three real redis-servers, each
//! region's instance on its own as L2, the links between regions through
//! proxies adding 1 / 40 / 80 ms and cut for a partition.

use std::time::{Duration, Instant};

use cog_cache::TieredCache;
use cog_testkit::Regions;

use crate::support::{Cache, client};

struct World {
    regions: Regions,
    caches: Vec<Cache>,
}

async fn world() -> World {
    let regions = Regions::start(3, Regions::one_forty_eighty).await.unwrap();
    let mut caches = Vec::new();
    for i in 0..3 {
        // The local L2's default 50 ms timeout, shorter than the 80 / 160
        // ms round trips to other regions: those calls have their own.
        let mut b = TieredCache::builder()
            .redis(client(&regions.url(i)).await)
            .schema("v1")
            .redis_retry_interval(Duration::from_millis(100));
        for j in (0..3).filter(|&j| j != i) {
            b = b.region(client(&regions.link_url(i, j)).await);
        }
        let cache: Cache = b.build().unwrap();
        cache.invalidations_ready().await;
        caches.push(cache);
    }
    World { regions, caches }
}

/// Every region holds its own copy of `key` (in L1 and its L2).
async fn fill(w: &World, key: &str) {
    for (i, c) in w.caches.iter().enumerate() {
        c.insert(key.to_owned(), format!("v{i}")).await;
        assert!(c.get(&key.to_owned()).await.is_some());
    }
}

/// How long until no region has `key` any more (L1 or L2).
async fn gone_everywhere(w: &World, key: &str, started: Instant) -> Duration {
    let key = key.to_owned();
    loop {
        let mut any = false;
        for c in &w.caches {
            any |= c.get(&key).await.is_some();
        }
        if !any {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still cached");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_reach_every_region_and_wait_out_a_partition() {
    let w = world().await;

    // A key, a tag and a tenant, each invalidated in eu (region 0).
    fill(&w, "k").await;
    let t = Instant::now();
    w.caches[0].invalidate(&"k".to_owned()).await;
    let key_window = gone_everywhere(&w, "k", t).await;

    for (i, c) in w.caches.iter().enumerate() {
        c.tagged(["t"])
            .insert("tagged".into(), format!("v{i}"))
            .await;
    }
    let t = Instant::now();
    w.caches[0].invalidate_tag("t").await;
    let tag_window = gone_everywhere(&w, "tagged", t).await;

    let tenant: Vec<_> = w.caches.iter().map(|c| c.tenant("acme")).collect();
    for (i, c) in tenant.iter().enumerate() {
        c.insert("x".into(), format!("v{i}")).await;
    }
    let t = Instant::now();
    tenant[0].invalidate_tenant().await;
    loop {
        let mut any = false;
        for c in &tenant {
            any |= c.get(&"x".to_owned()).await.is_some();
        }
        if !any {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "tenant still cached");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let tenant_window = t.elapsed();
    eprintln!(
        "invalidation windows: key {key_window:?}, tag {tag_window:?}, tenant {tenant_window:?}"
    );
    // eu reaches ap through 40 ms each way: a delete and a publish (a tag:
    // a read, a delete, a publish) are 160–240 ms of links. Under a second
    // even on a loaded machine; docs/regions.md has the measured figures.
    for d in [key_window, tag_window, tenant_window] {
        assert!(d < Duration::from_secs(1), "{d:?}");
    }

    // ap (region 2) cut off from eu: an invalidation in eu waits for it,
    // and lands once the link is back. (First, every earlier one has been
    // acknowledged: the last answers are still on their way back.)
    crate::support::eventually("the outboxes are empty", async || {
        w.caches[0].regions_pending() == 0
    })
    .await;
    fill(&w, "p").await;
    w.regions.link(0, 2).cut();
    w.caches[0].invalidate(&"p".to_owned()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(w.caches[1].get(&"p".to_owned()).await.is_none());
    assert!(
        w.caches[2].get(&"p".to_owned()).await.is_some(),
        "ap is cut off: it still has its copy"
    );
    assert_eq!(w.caches[0].regions_pending(), 1);
    let t = Instant::now();
    w.regions.link(0, 2).restore();
    let healed = gone_everywhere(&w, "p", t).await;
    eprintln!("after the link came back: {healed:?}");
    crate::support::eventually("the outbox is empty", async || {
        w.caches[0].regions_pending() == 0
    })
    .await;
}

/// Calls to another region are bounded by `region_timeout`, not the local
/// L2's timeout: a region slower than it counts as unreachable and its
/// invalidations wait; one within it — if slower than the local 50 ms —
/// gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_is_given_its_own_timeout() {
    let regions = Regions::start(2, |_, _| Duration::ZERO).await.unwrap();
    let cache: Cache = TieredCache::builder()
        .redis(client(&regions.url(0)).await)
        .schema("v1")
        .redis_retry_interval(Duration::from_millis(50))
        .region(client(&regions.link_url(0, 1)).await)
        .region_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    // 2 × 200 ms a round trip: past the 300 ms timeout.
    regions.link(0, 1).set_latency(Duration::from_millis(200));
    cache.invalidate(&"k".to_owned()).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(cache.regions_pending(), 1, "not delivered while slow");
    // 2 × 60 ms: within it, and past the local 50 ms.
    regions.link(0, 1).set_latency(Duration::from_millis(60));
    crate::support::eventually("delivered once in time", async || {
        cache.regions_pending() == 0
    })
    .await;
}

/// A region cut off for longer than its outbox holds (10 000
/// invalidations): the busiest tenant's invalidations fold into one of the
/// whole tenant, so an entry whose invalidation was among the first still
/// goes once the link is back (it used to be dropped, the entry kept until
/// its TTL), and other tenants' entries stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_still_invalidates_what_it_held() {
    let w = world().await;
    let acme: Vec<_> = w.caches.iter().map(|c| c.tenant("acme")).collect();
    let beta: Vec<_> = w.caches.iter().map(|c| c.tenant("beta")).collect();
    for c in acme.iter().chain(&beta) {
        c.insert("x".into(), "v".into()).await;
    }
    w.regions.link(0, 1).cut();
    w.regions.link(0, 2).cut();
    acme[0].invalidate(&"x".to_owned()).await;
    for i in 1..=10_000 {
        acme[0].invalidate(&format!("k{i}")).await;
    }
    assert!(
        w.caches[0].regions_pending() < 10,
        "{} waiting: folded into the tenant's",
        w.caches[0].regions_pending()
    );
    assert!(acme[2].get(&"x".to_owned()).await.is_some(), "cut off");
    w.regions.link(0, 1).restore();
    w.regions.link(0, 2).restore();
    crate::support::eventually("the outbox is empty", async || {
        w.caches[0].regions_pending() == 0
    })
    .await;
    for i in 1..3 {
        assert!(acme[i].get(&"x".to_owned()).await.is_none(), "region {i}");
        assert!(beta[i].get(&"x".to_owned()).await.is_some(), "region {i}");
    }
}
