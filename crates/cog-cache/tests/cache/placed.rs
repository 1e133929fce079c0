//! Tenants' L2 entries on the Redis deployment their partition is placed
//! on, following a move: two real redis-servers, two instances each with
//! its own router (as two processes).

use std::sync::Arc;
use std::time::Duration;

use cog_cache::{BuildError, TieredCache};
use cog_core::placement::{Placement, Router, partition};
use cog_testkit::RedisServer;
use cog_testkit::Reply;

use crate::support::{Cache, client, dbsize, eventually};

/// An instance on `main`, placed over `main` and `big`, copying for
/// `window` after a move (`None`: the default, 24 h). The window is set
/// before the placement: settings hold in any order.
async fn instance(
    main: &RedisServer,
    big: &RedisServer,
    window: Option<Duration>,
) -> (Cache, Arc<Router>) {
    let placement = Placement::new(["main", "big"]).unwrap();
    let router = Arc::new(Router::new(["main", "big"], placement).unwrap());
    let mut builder = TieredCache::builder()
        .redis(client(&main.url()).await)
        .schema("v1")
        .ttl(Duration::from_secs(60));
    if let Some(window) = window {
        builder = builder.placed_window(window);
    }
    let cache: Cache = builder
        .placed(
            router.clone(),
            [
                ("main", client(&main.url()).await),
                ("big", client(&big.url()).await),
            ],
        )
        .build()
        .unwrap();
    cache.invalidations_ready().await;
    (cache, router)
}

fn has(server: &RedisServer, key: &str) -> bool {
    server.command(&["EXISTS", key]).unwrap() == Reply::Int(1)
}

fn pttl(server: &RedisServer, key: &str) -> i64 {
    match server.command(&["PTTL", key]).unwrap() {
        Reply::Int(ms) => ms,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_live_on_their_partitions_deployment_and_follow_a_move() {
    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let (a, router_a) = instance(&main, &big, None).await;
    let (b, router_b) = instance(&main, &big, None).await;
    let (acme_a, acme_b) = (a.tenant("acme"), b.tenant("acme"));
    let other = cog_testkit::placement::elsewhere("acme");

    // Before the move: everything on main.
    for k in ["hot", "dropped", "tagged"] {
        let view = if k == "tagged" {
            acme_a.tagged(["t"])
        } else {
            (*acme_a).clone()
        };
        view.insert(k.into(), format!("{k}-v")).await;
    }
    a.tenant(&other).insert("x".into(), "y".into()).await;
    let hot = acme_a.l2_key(&"hot".into()).unwrap();
    assert!(has(&main, &hot) && !has(&big, &hot));
    let ttl_before = pttl(&main, &hot);

    // acme's partition moves to big; both instances learn it.
    let moved = router_a
        .placement()
        .moved(partition("acme"), "big")
        .unwrap();
    router_a.set_placement(moved.clone()).unwrap();
    router_b.set_placement(moved).unwrap();

    // An invalidation right after the move clears both deployments: the
    // old copy cannot follow the tenant.
    acme_a.invalidate(&"dropped".into()).await;
    let dropped = acme_a.l2_key(&"dropped".into()).unwrap();
    assert!(!has(&main, &dropped) && !has(&big, &dropped));
    assert_eq!(acme_b.get(&"dropped".into()).await, None);

    // A hot entry follows on its first read (b has nothing in L1), with
    // what was left of its lifetime.
    assert_eq!(acme_b.get(&"hot".into()).await.as_deref(), Some("hot-v"));
    assert!(has(&big, &hot));
    let ttl_after = pttl(&big, &hot);
    assert!(
        ttl_after > 0 && ttl_after <= ttl_before,
        "{ttl_after} vs {ttl_before}"
    );
    // New writes go to big only.
    acme_a.insert("new".into(), "n".into()).await;
    let new = acme_a.l2_key(&"new".into()).unwrap();
    assert!(has(&big, &new) && !has(&main, &new));

    // A tagged entry keeps its tag on the new deployment.
    assert_eq!(
        acme_b.get(&"tagged".into()).await.as_deref(),
        Some("tagged-v")
    );
    acme_b.invalidate_tag("t").await;
    let tagged = acme_a.l2_key(&"tagged".into()).unwrap();
    assert!(!has(&big, &tagged) && !has(&main, &tagged));

    // The other tenant did not move.
    let x = a.tenant(&other).l2_key(&"x".into()).unwrap();
    assert!(has(&main, &x) && !has(&big, &x));

    // A tenant invalidation clears both deployments.
    acme_a.insert("again".into(), "v".into()).await;
    acme_a.invalidate_tenant().await;
    assert!(!has(&big, &hot) && !has(&main, &hot));
    // b drops its L1 copy when the message reaches it (pub/sub).
    eventually("b's copy dropped", async || {
        acme_b.get(&"hot".into()).await.is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_window_the_old_deployment_is_not_read() {
    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let (a, router_a) = instance(&main, &big, Some(Duration::from_millis(200))).await;
    let (b, router_b) = instance(&main, &big, Some(Duration::from_millis(200))).await;
    a.tenant("acme").insert("k".into(), "v".into()).await;
    let moved = router_a
        .placement()
        .moved(partition("acme"), "big")
        .unwrap();
    router_a.set_placement(moved.clone()).unwrap();
    router_b.set_placement(moved).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.tenant("acme").get(&"k".into()).await, None);
    let key = a.tenant("acme").l2_key(&"k".into()).unwrap();
    assert!(!has(&big, &key));
}

#[tokio::test]
async fn a_placed_cache_needs_every_deployment_and_a_home() {
    let main = RedisServer::start().unwrap();
    let placement = Placement::new(["main", "big"]).unwrap();
    let router = Arc::new(Router::new(["main", "big"], placement).unwrap());
    let missing = TieredCache::<String, String>::builder()
        .redis(client(&main.url()).await)
        .schema("v1")
        .placed(router.clone(), [("main", client(&main.url()).await)])
        .build();
    assert!(
        matches!(&missing, Err(BuildError::Placement(m)) if m.contains("big")),
        "{missing:?}"
    );
    let homeless = TieredCache::<String, String>::builder()
        .schema("v1")
        .placed(router, [("main", client(&main.url()).await)])
        .build();
    assert!(matches!(homeless, Err(BuildError::Placement(_))));
}

/// A partition moved away and back: entries written while away follow it
/// home on their first read, and an invalidation after the move back
/// clears them where they were too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_written_away_follow_a_move_back() {
    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let (a, router_a) = instance(&main, &big, None).await;
    let (b, router_b) = instance(&main, &big, None).await;
    let (acme_a, acme_b) = (a.tenant("acme"), b.tenant("acme"));
    let away = router_a
        .placement()
        .moved(partition("acme"), "big")
        .unwrap();
    let back = away.moved(partition("acme"), "main").unwrap();
    for r in [&router_a, &router_b] {
        r.set_placement(away.clone()).unwrap();
    }
    acme_a.insert("made-away".into(), "v".into()).await;
    acme_a.insert("dropped".into(), "v".into()).await;
    let key = acme_a.l2_key(&"made-away".into()).unwrap();
    assert!(has(&big, &key) && !has(&main, &key));
    for r in [&router_a, &router_b] {
        r.set_placement(back.clone()).unwrap();
    }
    assert_eq!(acme_b.get(&"made-away".into()).await.as_deref(), Some("v"));
    assert!(has(&main, &key), "copied home on its first read");
    acme_a.invalidate(&"dropped".into()).await;
    let dropped = acme_a.l2_key(&"dropped".into()).unwrap();
    assert!(!has(&main, &dropped) && !has(&big, &dropped));
    assert_eq!(acme_b.get(&"dropped".into()).await, None);
}

/// A delete that fails on the tenant's deployment is retried even though
/// the message (on the main Redis) went out: the entry would otherwise stay
/// in that L2 until its TTL, and the next read would bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_refused_by_the_tenants_deployment_is_retried() {
    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let proxy = cog_testkit::Proxy::start(&big.addr()).await.unwrap();
    let placement = Placement::new(["main", "big"]).unwrap();
    let moved = placement.moved(partition("acme"), "big").unwrap();
    let router = Arc::new(Router::new(["main", "big"], moved).unwrap());
    let cache: Cache = TieredCache::builder()
        .redis(client(&main.url()).await)
        .schema("v1")
        .redis_timeout(Duration::from_millis(300))
        .redis_retry_interval(Duration::from_millis(200))
        .placed(
            router,
            [
                ("main", client(&main.url()).await),
                ("big", client(&proxy.redis_url()).await),
            ],
        )
        .build()
        .unwrap();
    cache.invalidations_ready().await;
    let acme = cache.tenant("acme");
    acme.insert("k".into(), "v".into()).await;
    let key = acme.l2_key(&"k".into()).unwrap();
    assert!(has(&big, &key));

    proxy.cut();
    acme.invalidate(&"k".into()).await;
    assert_eq!(cache.invalidations_pending(), 1);
    assert!(has(&big, &key));
    proxy.restore();
    eventually("the delete landed", async || {
        cache.invalidations_pending() == 0
    })
    .await;
    assert!(!has(&big, &key));
}

/// Forgetting tenants placed over two deployments walks each deployment's
/// keys once for all the tenants it may hold — a moved tenant's both, in
/// the window — and leaves nothing of theirs on either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_tenants_leave_every_deployment_in_one_walk_each() {
    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let (a, router) = instance(&main, &big, None).await;
    let other = cog_testkit::placement::elsewhere("acme");
    let bystander = cog_testkit::placement::elsewhere(&other);
    for t in ["acme", other.as_str(), bystander.as_str()] {
        a.tenant(t).insert("old".into(), "v".into()).await;
    }
    let moved = router.placement().moved(partition("acme"), "big").unwrap();
    router.set_placement(moved).unwrap();
    a.tenant("acme").insert("new".into(), "v".into()).await;
    assert_eq!((dbsize(&main), dbsize(&big)), (3, 1));

    let scans = (main.calls("scan"), big.calls("scan"));
    a.forget_tenants(["acme", other.as_str()]).await;
    assert_eq!(
        (main.calls("scan"), big.calls("scan")),
        (scans.0 + 1, scans.1 + 1),
        "one walk of each"
    );
    assert_eq!(
        (dbsize(&main), dbsize(&big)),
        (1, 0),
        "the bystander's alone"
    );
    let kept = a.tenant(&bystander).l2_key(&"old".into()).unwrap();
    assert!(has(&main, &kept));
    assert_eq!(a.invalidations_pending(), 0);
}
