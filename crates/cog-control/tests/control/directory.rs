//! The live directory: authentication and quotas follow the store without
//! restarts.

use std::sync::Arc;
use std::time::Duration;

use cog_control::auth::AuthenticateLayer;
use cog_control::store::{FileStore, RedisStore, Store};
use cog_control::{Control, Directory, Refusal, Status, Tenant, TenantContext};
use cog_testkit::RedisServer;
use http::{Request, Response, StatusCode};
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::suite::plan;

/// Waits (bounded) until `cond` holds, refreshing nothing by itself.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: not seen within 5 s");
}

async fn seeded(store: Arc<dyn Store>) -> (Control, String, String) {
    let c = Control::new(store);
    c.create_plan("free", plan("rps=2/1m")).await.unwrap();
    c.create_tenant("acme", Tenant::new("free")).await.unwrap();
    let key = c.create_key("acme", None).await.unwrap();
    (c, key.id, key.secret)
}

#[tokio::test]
async fn keys_authenticate_their_tenant_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FileStore::new(dir.path().join("s.json")));
    let (c, id, secret) = seeded(store.clone()).await;
    let expired = c.create_key("acme", Some(Duration::ZERO)).await.unwrap();
    let d = Directory::start(store).await.unwrap();

    assert_eq!(&*d.authenticate(&secret).unwrap().id, "acme");
    // Same id, wrong secret; unknown shapes; expired.
    // The last character changed (to one it is not).
    let last = if secret.ends_with('x') { "y" } else { "x" };
    let forged = format!("{}{last}", &secret[..secret.len() - 1]);
    assert_eq!(
        d.authenticate(&forged).unwrap_err(),
        Refusal::Unauthenticated
    );
    assert_eq!(
        d.authenticate("hunter2").unwrap_err(),
        Refusal::Unauthenticated
    );
    assert_eq!(
        d.authenticate(&expired.secret).unwrap_err(),
        Refusal::Unauthenticated
    );

    c.set_status("acme", Status::Suspended).await.unwrap();
    d.refresh().await.unwrap();
    assert_eq!(d.authenticate(&secret).unwrap_err(), Refusal::Suspended);
    c.set_status("acme", Status::Active).await.unwrap();
    c.revoke_key(&id).await.unwrap();
    d.refresh().await.unwrap();
    assert_eq!(
        d.authenticate(&secret).unwrap_err(),
        Refusal::Unauthenticated
    );
}

fn ok_service() -> impl Service<
    Request<String>,
    Response = Response<String>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(|req: Request<String>| async move {
        let tenant = req
            .extensions()
            .get::<Arc<TenantContext>>()
            .map(|t| t.id.to_string())
            .unwrap_or_default();
        Ok(Response::new(tenant))
    })
}

/// One request through a clone of `svc` (the rate limiter's body wraps
/// the inner one).
async fn send<S>(svc: &S, req: Request<String>) -> Response<String>
where
    S: Service<
            Request<String>,
            Response = Response<cog_ratelimit::RateLimitBody<String>>,
            Error = std::convert::Infallible,
        > + Clone,
{
    svc.clone()
        .oneshot(req)
        .await
        .unwrap()
        .map(|b| b.into_inner())
}

fn request(key: Option<&str>) -> Request<String> {
    let mut b = Request::get("/v1/items/1");
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.body(String::new()).unwrap()
}

/// The authenticator and the rate limiter over a file store: a CLI-style
/// change (another `Control` on the same file) takes effect without a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_a_running_authenticator_and_limiter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let (c, _, secret) = seeded(Arc::new(FileStore::new(&path))).await;
    let d = Directory::start_with(Arc::new(FileStore::new(&path)), Duration::from_millis(50))
        .await
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(AuthenticateLayer::new(d.clone()))
        .layer(cog_ratelimit::RateLimitLayer::new(
            cog_ratelimit::store::MemoryStore::new(),
            Directory::tenant_key(),
            d.clone(),
        ))
        .service(ok_service());

    let res = send(&svc, request(None)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let res = send(&svc, request(Some("cog_nope0000_x"))).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // The plan allows 2 a minute.
    for _ in 0..2 {
        let res = send(&svc, request(Some(&secret))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.body(), "acme");
    }
    let res = send(&svc, request(Some(&secret))).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);

    // New plan limits, written elsewhere: seen without a restart.
    c.update_plan("free", |p| *p = plan("rps=1000/1m"))
        .await
        .unwrap();
    let d2 = d.clone();
    let revision = c.state().await.unwrap().revision;
    eventually("the new plan", || d2.revision() == revision).await;
    let res = send(&svc, request(Some(&secret))).await;
    assert_eq!(res.status(), StatusCode::OK);

    // Suspended: 403 from the running layer.
    c.set_status("acme", Status::Suspended).await.unwrap();
    let revision = c.state().await.unwrap().revision;
    eventually("the suspension", || d2.revision() == revision).await;
    let res = send(&svc, request(Some(&secret))).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

/// A plan's `cost` reaches the limiter through `Directory::request_cost`:
/// each request is charged it on every limit (it used to be stored and
/// ignored — every request cost 1). A cost no limit could hold is refused
/// when written, for a plan and for a tenant's overrides.
#[tokio::test]
async fn a_plans_cost_is_what_each_request_is_charged() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FileStore::new(dir.path().join("s.json")));
    let c = Control::new(store.clone());
    let mut p = plan("rps=9/1m,cost=3");
    p.quotas
        .push(cog_control::LimitSpec::parse("daily=100/1d").unwrap());
    c.create_plan("metered", p).await.unwrap();
    c.create_tenant("acme", Tenant::new("metered"))
        .await
        .unwrap();
    let key = c.create_key("acme", None).await.unwrap();
    let d = Directory::start(store).await.unwrap();
    assert_eq!(d.authenticate(&key.secret).unwrap().cost, 3);
    let svc = ServiceBuilder::new()
        .layer(AuthenticateLayer::new(d.clone()))
        .layer(
            cog_ratelimit::RateLimitLayer::new(
                cog_ratelimit::store::MemoryStore::new(),
                Directory::tenant_key(),
                d.clone(),
            )
            .cost_with(Directory::request_cost()),
        )
        .service(ok_service());
    // Nine units a minute at three a request: three requests, and the
    // daily quota counts three per request too.
    for left in [6, 3, 0] {
        let res = send(&svc, request(Some(&key.secret))).await;
        assert_eq!(res.status(), StatusCode::OK);
        let current = res.headers()["ratelimit"].to_str().unwrap();
        assert!(current.contains(&format!("\"rps\";r={left}")), "{current}");
        assert!(
            current.contains(&format!("\"daily\";r={}", 97 - (6 - left))),
            "{current}"
        );
    }
    let res = send(&svc, request(Some(&key.secret))).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);

    // A cost larger than a limit's burst, or a quota's rate, would let no
    // request through.
    let e = c
        .create_plan("never", plan("rps=2/1s,cost=3"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("plans.never") && e.to_string().contains("burst of `rps` (2)"),
        "{e}"
    );
    let e = c
        .update_plan("metered", |p| p.quotas[0].rate = 2)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("rate of `daily` (2)"), "{e}");
    let e = c
        .update_tenant("acme", |t| {
            t.quota_overrides
                .push(cog_control::LimitSpec::parse("daily=2/1d").unwrap())
        })
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("tenants.acme") && e.to_string().contains("rate of `daily` (2)"),
        "{e}"
    );
    // An override of the limit that gave the cost takes the cost with it.
    c.update_tenant("acme", |t| {
        t.overrides
            .push(cog_control::LimitSpec::parse("rps=2/1s").unwrap())
    })
    .await
    .unwrap();
    d.refresh().await.unwrap();
    assert_eq!(d.authenticate(&key.secret).unwrap().cost, 1);
}

/// `Directory::cache_budget` gives each tenant its plan's budget as the
/// directory has it now (a cache asks on every write): a plan change
/// reaches it, and a tenant without a budget, or unknown, has none.
#[tokio::test]
async fn each_tenant_gets_its_plans_cache_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FileStore::new(dir.path().join("s.json")));
    let c = Control::new(store.clone());
    let mut small = plan("rps=10/1s");
    small.cache_budget_bytes = Some(4096);
    c.create_plan("small", small).await.unwrap();
    c.create_plan("open", plan("rps=10/1s")).await.unwrap();
    c.create_tenant("acme", Tenant::new("small")).await.unwrap();
    c.create_tenant("zeta", Tenant::new("open")).await.unwrap();
    let d = Directory::start(store).await.unwrap();
    let budget = d.cache_budget();
    assert_eq!(budget("acme"), Some(4096));
    assert_eq!(budget("zeta"), None);
    assert_eq!(budget("ghost"), None);
    c.update_plan("small", |p| p.cache_budget_bytes = Some(1 << 20))
        .await
        .unwrap();
    c.update_tenant("zeta", |t| t.plan = "small".into())
        .await
        .unwrap();
    d.refresh().await.unwrap();
    assert_eq!(budget("acme"), Some(1 << 20));
    assert_eq!(budget("zeta"), Some(1 << 20));
}

/// The authenticator is ready exactly when its inner service is (its
/// backpressure kept).
#[tokio::test]
async fn readiness_is_the_inner_services() {
    use cog_testkit::service::{Gate, assert_ready_with_inner};
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FileStore::new(dir.path().join("s.json")));
    let d = Directory::start(store).await.unwrap();
    let gate = Gate::<String>::new();
    let mut svc = tower::Layer::layer(&AuthenticateLayer::new(d), gate.clone());
    assert_ready_with_inner::<_, Request<String>, _>(&mut svc, &gate);
}

/// With Redis, a change is announced: a directory that would poll only
/// once an hour still sees it at once. Then Redis dies: the last view
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_announces_changes_and_a_dead_redis_keeps_the_last_view() {
    let server = RedisServer::start().unwrap();
    let writer = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let (c, id, secret) = seeded(writer).await;
    let reader = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let d = Directory::start_with(reader, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(d.authenticate(&secret).is_ok());
    // Give the subscriber its connection before the change.
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.revoke_key(&id).await.unwrap();
    let d2 = d.clone();
    eventually("the revocation", || d2.authenticate(&secret).is_err()).await;

    let fresh = c.create_key("acme", None).await.unwrap();
    let d3 = d.clone();
    eventually("the new key", || d3.authenticate(&fresh.secret).is_ok()).await;
    server.kill().unwrap();
    assert!(d.refresh().await.is_err());
    assert_eq!(&*d.authenticate(&fresh.secret).unwrap().id, "acme");

    // Back, but empty (no persistence): the view is not wiped.
    server.restart().unwrap();
    let mut refreshed = false;
    for _ in 0..50 {
        if d.refresh().await.is_ok() {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refreshed, "the store did not come back");
    assert_eq!(&*d.authenticate(&fresh.secret).unwrap().id, "acme");
}

/// A change subscription Redis refuses (the reader's ACL user may not use
/// the change channel) is tried again; once Redis allows it, the directory
/// catches up at once — a key revoked meanwhile stops working — instead of
/// at its next poll (an hour here). Before, fred's `Ok` to the refused
/// `SUBSCRIBE` was taken for a subscription, and changes came only with
/// the polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_subscription_is_tried_again() {
    let server = RedisServer::start().unwrap();
    let url = server.acl_user("reader", false).unwrap();
    let writer = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let (c, id, secret) = seeded(writer).await;
    let reader = Arc::new(RedisStore::connect(&url).await.unwrap());
    let d = Directory::start_with(reader, Duration::from_secs(3600))
        .await
        .unwrap();
    c.revoke_key(&id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        d.authenticate(&secret).is_ok(),
        "not heard while Redis refuses the channel"
    );
    server.acl_user("reader", true).unwrap();
    let mut seen = false;
    for _ in 0..100 {
        if d.authenticate(&secret).is_err() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the revocation, once Redis allows the channel");

    // The channel taken away while listening (Redis closes the
    // subscription's connection) and given back: a change made in between
    // is seen once the listener is subscribed again, not at the next poll.
    server.acl_user("reader", false).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = c.create_key("acme", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        d.authenticate(&fresh.secret).is_err(),
        "not heard while Redis refuses the channel"
    );
    server.acl_user("reader", true).unwrap();
    let mut seen = false;
    for _ in 0..100 {
        if d.authenticate(&fresh.secret).is_ok() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the new key, once Redis allows the channel again");
}

/// On a real Redis Cluster: the whole control plane lives in one slot
/// (`{control}`), writes stay atomic, and the change announcement reaches
/// a directory that would poll only hourly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_works_on_redis_cluster() {
    let cluster = cog_testkit::RedisCluster::start().unwrap();
    let url = cluster.url();
    let writer = Arc::new(RedisStore::connect(&url).await.unwrap());
    let (c, id, secret) = seeded(writer).await;
    let other = Control::new(Arc::new(RedisStore::connect(&url).await.unwrap()));
    assert_eq!(
        other.state().await.unwrap().spec.tenants["acme"].plan,
        "free"
    );

    let reader = Arc::new(RedisStore::connect(&url).await.unwrap());
    let d = Directory::start_with(reader, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(d.authenticate(&secret).is_ok());
    tokio::time::sleep(Duration::from_millis(300)).await;
    other.revoke_key(&id).await.unwrap();
    let d2 = d.clone();
    eventually("the revocation, announced across the cluster", || {
        d2.authenticate(&secret).is_err()
    })
    .await;
    // Concurrent writers through different nodes' connections lose nothing.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let w = if i % 2 == 0 { c.clone() } else { other.clone() };
        tasks.push(tokio::spawn(async move {
            w.create_tenant(&format!("t{i}"), Tenant::new("free")).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(c.state().await.unwrap().spec.tenants.len(), 11);
}

#[tokio::test]
async fn the_authenticator_is_built_directly_or_through_its_layer() {
    use cog_control::auth::Authenticate;
    use tower::Layer;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FileStore::new(dir.path().join("s.json")));
    let (_c, _, secret) = seeded(store.clone()).await;
    let d = Directory::start(store).await.unwrap();
    let direct = Authenticate::new(ok_service(), d.clone());
    let layered = Authenticate::<()>::layer(d).layer(ok_service());
    let ok = direct
        .clone()
        .oneshot(request(Some(&secret)))
        .await
        .unwrap();
    assert_eq!(ok.into_body(), "acme");
    let refused = direct.oneshot(request(None)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let ok = layered
        .clone()
        .oneshot(request(Some(&secret)))
        .await
        .unwrap();
    assert_eq!(ok.into_body(), "acme");
    let refused = layered.oneshot(request(None)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}

/// Across regions: the control plane lives in one region's Redis; a
/// directory 80 ms away (through a proxy) sees a change within a round
/// trip or so, keeps serving its last view while cut off, and catches up
/// with every write acknowledged meanwhile once the link is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_region_follows_the_control_plane_and_rides_out_a_partition() {
    let server = RedisServer::start().unwrap();
    let writer = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let (c, _id, secret) = seeded(writer).await;
    let addr = server.url().trim_start_matches("redis://").to_owned();
    let link = cog_testkit::Proxy::start(&addr).await.unwrap();
    link.set_latency(Duration::from_millis(80));
    let far = Arc::new(RedisStore::connect(&link.redis_url()).await.unwrap());
    let d = Directory::start_with(far, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(d.authenticate(&secret).is_ok());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let t = std::time::Instant::now();
    let key = c.create_key("acme", None).await.unwrap();
    let d2 = d.clone();
    eventually("the new key, far away", || {
        d2.authenticate(&key.secret).is_ok()
    })
    .await;
    eprintln!("a change reached the far region in {:?}", t.elapsed());

    // Cut off: the far region serves its last view; writes go on at home.
    link.cut();
    let during: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(c.create_key("acme", None).await.unwrap());
        }
        v
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(d.authenticate(&secret).is_ok(), "the last view serves");
    assert!(during.iter().all(|k| d.authenticate(&k.secret).is_err()));

    // Healed: every write acknowledged during the partition arrives.
    link.restore();
    let d3 = d.clone();
    eventually("the partition's writes", || {
        during.iter().all(|k| d3.authenticate(&k.secret).is_ok())
    })
    .await;
}

/// `cog placement move` reaches the routers of a running instance: a
/// directory hands each newer placement to the routers following it; one
/// that names a deployment the instance cannot reach is refused and the
/// router keeps routing by the last it could follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_follow_the_placement_in_the_store() {
    use cog_core::placement::{Placement, Router, partition};

    let server = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let (c, _, _) = seeded(store.clone()).await;
    let d = Directory::start_with(store, Duration::from_secs(5))
        .await
        .unwrap();
    let router = Arc::new(Router::new(["main", "big"], Placement::new(["main"]).unwrap()).unwrap());
    // No table yet: nothing to follow.
    d.follow(&router).unwrap();
    assert_eq!(d.placement(), None);

    c.add_deployment("main").await.unwrap();
    c.add_deployment("big").await.unwrap();
    c.move_partition(partition("acme"), "big").await.unwrap();
    let r = router.clone();
    eventually("the move, announced", || r.route("acme").to == 1).await;
    let moved = router.placement().revision();
    assert_eq!(d.placement().unwrap(), router.placement());

    // A deployment this instance has no connection to: not followed.
    c.add_deployment("eu").await.unwrap();
    // A table naming eu without a partition on it is followed.
    let r = router.clone();
    eventually("the table naming eu", || r.placement().revision() > moved).await;
    let named = router.placement().revision();
    let other = cog_testkit::placement::elsewhere("acme");
    c.move_partition(partition(&other), "eu").await.unwrap();
    let d2 = d.clone();
    eventually("the directory's view", || {
        d2.placement().is_some_and(|p| p.revision() > named)
    })
    .await;
    assert_eq!(router.placement().revision(), named);
    assert_eq!(router.route(&other).to, 0);
    // Another router, built with a connection to eu, follows it at once.
    let full =
        Arc::new(Router::new(["main", "big", "eu"], Placement::new(["main"]).unwrap()).unwrap());
    d.follow(&full).unwrap();
    assert_eq!(full.route(&other).to, 2);
    assert!(
        d.follow(&Arc::new(
            Router::new(["main"], Placement::new(["main"]).unwrap()).unwrap()
        ))
        .is_err()
    );
}

/// The control plane's store went back (restored from a backup, failed
/// over to a replica without its last writes) and lost a partition move:
/// the routers follow the table it holds now — as instances started since
/// do — and the moves made after it, whose revisions are newer than the
/// lost table's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_follow_a_store_that_went_back() {
    use cog_core::placement::{Placement, Router, partition};

    let server = RedisServer::start().unwrap();
    let store = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let (c, _, _) = seeded(store.clone()).await;
    c.add_deployment("main").await.unwrap();
    c.add_deployment("big").await.unwrap();
    let d = Directory::start_with(store, Duration::from_millis(50))
        .await
        .unwrap();
    let router = Arc::new(Router::new(["main", "big"], Placement::new(["main"]).unwrap()).unwrap());
    d.follow(&router).unwrap();
    let key = "cog:{control}:state";
    let backup = server.dump(key);
    let lost = c.move_partition(partition("acme"), "big").await.unwrap();
    let r = router.clone();
    eventually("the move", || r.route("acme").to == 1).await;

    server.restore(key, &backup);
    let r = router.clone();
    eventually("the restored table", || r.route("acme").to == 0).await;
    assert_eq!(router.placement(), d.placement().unwrap());
    assert_eq!(
        router.route("acme").from,
        Some(1),
        "its data follows it back"
    );

    let other = cog_testkit::placement::elsewhere("acme");
    let next = c.move_partition(partition(&other), "big").await.unwrap();
    assert!(
        next.revision > lost.revision,
        "a revision the lost table had: {} after {}",
        next.revision,
        lost.revision
    );
    let r = router.clone();
    eventually("the move after the restore", || r.route(&other).to == 1).await;
}

/// The same when the store was written again after going back, past the
/// revision the directory had seen, before the directory looked: an
/// older table in a newer state is a store that went back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_follow_a_store_that_went_back_and_was_written_again() {
    use cog_core::placement::{Placement, Router, partition};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let (c, _, _) = seeded(Arc::new(FileStore::new(&path))).await;
    c.add_deployment("main").await.unwrap();
    c.add_deployment("big").await.unwrap();
    let d = Directory::start_with(Arc::new(FileStore::new(&path)), Duration::from_secs(60))
        .await
        .unwrap();
    let router = Arc::new(Router::new(["main", "big"], Placement::new(["main"]).unwrap()).unwrap());
    d.follow(&router).unwrap();
    let backup = std::fs::read(&path).unwrap();
    c.move_partition(partition("acme"), "big").await.unwrap();
    d.refresh().await.unwrap();
    assert_eq!(router.route("acme").to, 1);

    std::fs::write(&path, backup).unwrap();
    for name in ["p1", "p2", "p3"] {
        c.create_plan(name, plan("rps=1/1s")).await.unwrap();
    }
    d.refresh().await.unwrap();
    assert_eq!(router.route("acme").to, 0, "the restored table");
    assert_eq!(router.placement(), d.placement().unwrap());
}

/// The store went back to before it had a placement table (restored from
/// an older backup): the routers go back to every partition on their first
/// deployment, as an instance started then routes — also when the store
/// was written again past the revision the directory had seen, and for a
/// router that started from the table. They used to keep the lost table:
/// two instances, two deployments for one tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_go_back_to_their_own_placement_when_the_table_is_lost() {
    use cog_core::placement::{Placement, Router, partition};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let (c, _, _) = seeded(Arc::new(FileStore::new(&path))).await;
    let d = Directory::start_with(Arc::new(FileStore::new(&path)), Duration::from_secs(60))
        .await
        .unwrap();
    let own = Placement::new(["main"]).unwrap();
    let router = Arc::new(Router::new(["main", "big"], own.clone()).unwrap());
    d.follow(&router).unwrap();
    let backup = std::fs::read(&path).unwrap();

    for written_again in [false, true] {
        c.add_deployment("main").await.unwrap();
        c.add_deployment("big").await.unwrap();
        c.move_partition(partition("acme"), "big").await.unwrap();
        d.refresh().await.unwrap();
        assert_eq!(router.route("acme").to, 1);
        // An instance started now, from the table.
        let late = Arc::new(Router::new(["main", "big"], d.placement().unwrap()).unwrap());
        d.follow(&late).unwrap();
        assert_eq!(late.route("acme").to, 1);

        std::fs::write(&path, &backup).unwrap();
        if written_again {
            for i in 0..5 {
                c.create_plan(&format!("p{i}"), plan("rps=1/1s"))
                    .await
                    .unwrap();
            }
        }
        d.refresh().await.unwrap();
        assert_eq!(d.placement(), None);
        assert_eq!(router.route("acme").to, 0, "written again: {written_again}");
        assert_eq!(router.placement(), own);
        assert_eq!(late.route("acme").to, 0, "written again: {written_again}");
    }
}

/// A tenant's overrides replace its plan's limits (and quotas) of the same
/// name and add the others; the plan's other limits stay.
#[tokio::test]
async fn a_tenants_overrides_replace_and_add_to_its_plans_limits() {
    use cog_control::LimitSpec;
    let spec = |s| LimitSpec::parse(s).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FileStore::new(dir.path().join("s.json")));
    let c = Control::new(store.clone());
    let mut free = plan("rps=2/1m");
    free.limits.push(spec("rph=100/1h"));
    free.quotas.push(spec("daily=1000/1d"));
    c.create_plan("free", free).await.unwrap();
    let mut t = Tenant::new("free");
    t.overrides = vec![spec("rps=5/1m"), spec("spike=1/1s")];
    t.quota_overrides = vec![spec("daily=2000/1d")];
    c.create_tenant("acme", t).await.unwrap();
    let d = Directory::start(store).await.unwrap();
    let quota = d.tenant("acme").unwrap().quota.clone().unwrap();
    let mut limits: Vec<(String, u64)> = quota
        .limits()
        .iter()
        .map(|l| (l.name().into_owned(), l.policy().0))
        .collect();
    limits.sort();
    let expected = [("daily", 2000), ("rph", 100), ("rps", 5), ("spike", 1)];
    assert_eq!(
        limits,
        expected.map(|(n, q)| (n.to_owned(), q)),
        "replaced, kept and added"
    );
}

/// The directory as the limiter's quota source: the authenticated
/// tenant's quota for its own id, another subject's own quota (or none:
/// unlimited) for any other — never the authenticated tenant's.
#[tokio::test]
async fn quotas_are_the_subjects_own() {
    use cog_ratelimit::QuotaSource;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FileStore::new(dir.path().join("s.json")));
    let (c, _, secret) = seeded(store.clone()).await;
    c.create_plan("big", plan("rps=50/1m")).await.unwrap();
    c.create_tenant("globex", Tenant::new("big")).await.unwrap();
    let d = Directory::start(store).await.unwrap();
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.extensions.insert(d.authenticate(&secret).unwrap());
    let first = |q: Option<cog_ratelimit::Quota>| q.map(|q| q.limits()[0].policy().0);
    for subject in ["acme", "globex", "nobody"] {
        let now = d.quota_now(subject, &parts).unwrap().unwrap();
        let later = d.quota(subject, &parts).await.unwrap();
        let want = match subject {
            "acme" => Some(2),
            "globex" => Some(50),
            _ => None,
        };
        assert_eq!((first(now), first(later)), (want, want), "{subject}");
    }
}

/// The authenticator is ready when the service it guards is, not before:
/// backpressure passes through it.
#[tokio::test]
async fn the_authenticator_is_ready_when_its_inner_service_is() {
    use cog_control::auth::Authenticate;
    use std::task::{Context, Poll, Waker};

    struct NotReady;
    impl Service<Request<String>> for NotReady {
        type Response = Response<String>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Response<String>, Self::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Pending
        }
        fn call(&mut self, _: Request<String>) -> Self::Future {
            std::future::ready(Ok(Response::new(String::new())))
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FileStore::new(dir.path().join("s.json")));
    seeded(store.clone()).await;
    let d = Directory::start(store).await.unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        Authenticate::new(NotReady, d.clone())
            .poll_ready(&mut cx)
            .is_pending()
    );
    assert!(
        Authenticate::new(ok_service(), d)
            .poll_ready(&mut cx)
            .is_ready()
    );
}

/// What each `refresh` handed the removal hooks, by tenant id.
fn recorder(d: &Directory) -> Arc<parking_lot::Mutex<Vec<Vec<String>>>> {
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let s = seen.clone();
    d.on_removed(move |gone: Vec<Arc<TenantContext>>| {
        let mut ids: Vec<String> = gone.iter().map(|t| t.id.to_string()).collect();
        ids.sort();
        s.lock().push(ids);
        async {}
    });
    seen
}

/// The removal hooks get each tenant a new view drops — deleted; deleted
/// and created again between two views; lost with a store that went back
/// — and none that is only changed, suspended or new, nor any when the
/// store is found empty (the last view stays).
#[tokio::test]
async fn tenants_a_view_drops_are_handed_to_the_removal_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let (c, _, _) = seeded(Arc::new(FileStore::new(&path))).await;
    for id in ["bob", "carol"] {
        c.create_tenant(id, Tenant::new("free")).await.unwrap();
    }
    let d = Directory::start_with(Arc::new(FileStore::new(&path)), Duration::from_secs(60))
        .await
        .unwrap();
    let seen = recorder(&d);
    let take = || std::mem::take(&mut *seen.lock());

    c.set_status("bob", Status::Suspended).await.unwrap();
    c.update_tenant("carol", |t| t.display_name = "Carol".into())
        .await
        .unwrap();
    c.create_tenant("dave", Tenant::new("free")).await.unwrap();
    d.refresh().await.unwrap();
    assert_eq!(take(), Vec::<Vec<String>>::new(), "nothing removed");

    c.delete_tenant("bob").await.unwrap();
    d.refresh().await.unwrap();
    assert_eq!(take(), [["bob"]]);
    d.refresh().await.unwrap();
    assert_eq!(take(), Vec::<Vec<String>>::new(), "handed once");

    // Deleted and created again before this instance looked: the same id,
    // another tenant.
    c.delete_tenant("acme").await.unwrap();
    c.create_tenant("acme", Tenant::new("free")).await.unwrap();
    c.delete_tenant("dave").await.unwrap();
    d.refresh().await.unwrap();
    assert_eq!(take(), [["acme", "dave"]]);
    assert!(d.tenant("acme").is_some());

    let backup = std::fs::read(&path).unwrap();
    c.create_tenant("erin", Tenant::new("free")).await.unwrap();
    d.refresh().await.unwrap();
    std::fs::write(&path, backup).unwrap();
    d.refresh().await.unwrap();
    assert_eq!(take(), [["erin"]], "lost with the store's last write");

    std::fs::remove_file(&path).unwrap();
    d.refresh().await.unwrap();
    assert_eq!(take(), Vec::<Vec<String>>::new(), "an emptied store");
    assert!(d.tenant("carol").is_some(), "the last view stays");
}

/// A directory following a store by itself hands its hooks what it drops,
/// in the order they were added; a hook that panics does not keep
/// `refresh` waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_hooks_run_in_the_background_and_a_panic_ends_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let (c, _, _) = seeded(Arc::new(FileStore::new(&path))).await;
    c.create_tenant("bob", Tenant::new("free")).await.unwrap();
    let d = Directory::start_with(Arc::new(FileStore::new(&path)), Duration::from_millis(20))
        .await
        .unwrap();
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    for n in 0..3 {
        let order = order.clone();
        d.on_removed(move |gone: Vec<Arc<TenantContext>>| {
            let order = order.clone();
            async move {
                // Later hooks would overtake an earlier one run alongside.
                tokio::time::sleep(Duration::from_millis(30 - 10 * n)).await;
                if gone.iter().any(|t| &*t.id == "bob") && n == 1 {
                    panic!("a hook that fails");
                }
                order.lock().push((n, gone[0].id.to_string()));
            }
        });
    }

    c.delete_tenant("acme").await.unwrap();
    let o = order.clone();
    eventually("the hooks", || o.lock().len() == 3).await;
    assert_eq!(
        *order.lock(),
        [(0, "acme".into()), (1, "acme".into()), (2, "acme".into())]
    );

    c.delete_tenant("bob").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while d.tenant("bob").is_some() {
            d.refresh().await.unwrap();
        }
        d.refresh().await.unwrap();
    })
    .await
    .expect("refresh waits for no panicked run");
    assert_eq!(order.lock()[3..], [(0, String::from("bob"))]);
}

/// A directory dropped is freed — its watcher stops, its store is let go —
/// even when a removal hook holds its cache budget, as a cache built with
/// it does (the demo's hook holds its caches): the budget does not hold the
/// directory that holds the hook.
#[tokio::test]
async fn a_hook_holding_the_cache_budget_lets_the_directory_go() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FileStore::new(dir.path().join("s.json")));
    drop(seeded(store.clone()).await);
    let d = Directory::start_with(store.clone(), Duration::from_millis(20))
        .await
        .unwrap();
    let budget = d.cache_budget();
    d.on_removed(move |gone: Vec<Arc<TenantContext>>| {
        for t in &gone {
            let _ = budget(&t.id);
        }
        async {}
    });
    drop(d);
    eventually("the directory freed", || Arc::strong_count(&store) == 1).await;
}

/// A failover to a replica that had not seen the last write (or a backup
/// restored), then a write on the new primary: the store is back at the
/// revision this instance saw, from another commit. The instance used to
/// take it for the state it had (the same revision) and went on accepting
/// a key revoked since — until the next write. Each commit's stamp tells
/// the two apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_revision_from_another_commit_is_followed() {
    use std::sync::atomic::Ordering::SeqCst;

    for backing in crate::suite::Backing::both() {
        let watched = Arc::new(crate::suite::Watched::over(backing.store().await));
        let store: Arc<dyn Store> = watched.clone();
        let (c, id, secret) = seeded(store.clone()).await;
        let d = Directory::start_with(store, Duration::from_secs(3600))
            .await
            .unwrap();
        let replica = backing.copy();
        // The write the replica never saw.
        let lost = c.create_key("acme", None).await.unwrap();
        d.refresh().await.unwrap();
        assert!(d.authenticate(&lost.secret).is_ok());
        let seen = d.revision();

        // The failover, and a write on the new primary.
        backing.put_back(&replica);
        c.revoke_key(&id).await.unwrap();
        assert_eq!(c.state().await.unwrap().revision, seen, "the same revision");
        d.refresh().await.unwrap();
        assert!(
            d.authenticate(&secret).is_err(),
            "revoked on the new primary"
        );
        assert!(
            d.authenticate(&lost.secret).is_err(),
            "lost with the failover"
        );
        // Nothing changed since: the view stays (the version read, no
        // load).
        let loads = watched.loads.load(SeqCst);
        d.refresh().await.unwrap();
        assert_eq!(
            watched.loads.load(SeqCst),
            loads,
            "rebuilt with nothing changed"
        );
    }
}
