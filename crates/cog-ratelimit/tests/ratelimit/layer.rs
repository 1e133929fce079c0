//! The tower layer end to end: statuses, headers, shadow mode, failure
//! answers and concurrency slots.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cog_ratelimit::extract::{Global, Header};
use cog_ratelimit::store::{FailurePolicy, MemoryStore, RedisStore};
use cog_ratelimit::{Limit, Quota, RateLimitLayer, StaticQuotas};
use cog_testkit::RedisServer;
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::sync::Notify;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt, service_fn};

use crate::support::client;

type Body = Full<bytes::Bytes>;

type Inner = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

fn counting_service(calls: Arc<AtomicUsize>) -> Inner {
    BoxCloneSyncService::new(service_fn(move |_req: Request<Body>| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Infallible>(Response::new(Body::from("ok")))
        }
    }))
}

fn req(tenant: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().uri("/v1/x");
    if let Some(t) = tenant {
        b = b.header("x-tenant", t);
    }
    b.body(Body::default()).unwrap()
}

/// Waits for the inner service to be called; a call that never comes
/// fails the test instead of hanging it.
async fn called(started: &Notify) {
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("the inner service was never called");
}

fn tenant() -> Header {
    Header(HeaderName::from_static("x-tenant"))
}

#[tokio::test]
async fn admits_then_answers_429_with_headers_without_calling_inner() {
    let calls = Arc::new(AtomicUsize::new(0));
    let quota = Quota::new([Limit::per_minute(2), Limit::per_day(100).named("daily")]).unwrap();
    let svc = RateLimitLayer::new(MemoryStore::new(), tenant(), quota)
        .layer(counting_service(calls.clone()));

    let r = svc.clone().oneshot(req(Some("a"))).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["ratelimit-policy"],
        "\"2-per-1m\";q=2;w=60, \"daily\";q=100;w=86400"
    );
    assert_eq!(
        r.headers()["ratelimit"],
        "\"2-per-1m\";r=1;t=30, \"daily\";r=99;t=864"
    );

    assert_eq!(
        svc.clone().oneshot(req(Some("a"))).await.unwrap().status(),
        StatusCode::OK
    );
    let r = svc.clone().oneshot(req(Some("a"))).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((29..=30).contains(&retry), "{retry}");
    assert!(
        r.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"2-per-1m\";r=0;")
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "inner called for a rejected request"
    );

    // Another subject is unaffected; no subject means no limit.
    assert_eq!(
        svc.clone().oneshot(req(Some("b"))).await.unwrap().status(),
        StatusCode::OK
    );
    for _ in 0..5 {
        let r = svc.clone().oneshot(req(None)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get("ratelimit").is_none());
    }
}

#[tokio::test]
async fn cost_and_static_overrides() {
    let calls = Arc::new(AtomicUsize::new(0));
    let quotas = StaticQuotas::new(Quota::single(Limit::per_day(10)).unwrap())
        .with("vip", Quota::single(Limit::per_day(1000)).unwrap())
        .unlimited("ops");
    let svc = RateLimitLayer::new(MemoryStore::new(), tenant(), quotas)
        .cost_with(|parts| if parts.uri.path() == "/v1/x" { 4 } else { 1 })
        .layer(counting_service(calls));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(svc.clone().oneshot(req(Some("t"))).await.unwrap().status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    for _ in 0..3 {
        assert_eq!(
            svc.clone()
                .oneshot(req(Some("vip")))
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    let r = svc.clone().oneshot(req(Some("ops"))).await.unwrap();
    assert!(r.headers().get("ratelimit-policy").is_none());
}

#[tokio::test]
async fn shadow_mode_never_rejects_and_adds_no_headers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let store = MemoryStore::new();
    let quota = Quota::single(Limit::per_day(1)).unwrap();
    let svc = RateLimitLayer::new(store.clone(), Global, quota.clone())
        .shadow(true)
        .layer(counting_service(calls.clone()));
    for _ in 0..5 {
        let r = svc.clone().oneshot(req(None)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get("ratelimit").is_none());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    // ...but it did decide: the subject's state was spent.
    use cog_ratelimit::store::Store;
    let status = store.inspect("global", &quota).await.unwrap().statuses()[0];
    assert_eq!(status.remaining, 0);
}

#[tokio::test]
async fn concurrency_slots_are_held_for_the_request_and_freed_after() {
    let gate = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let (g, s) = (gate.clone(), started.clone());
    let slow = service_fn(move |_req: Request<Body>| {
        let (g, s) = (g.clone(), s.clone());
        async move {
            s.notify_one();
            g.notified().await;
            Ok::<_, Infallible>(Response::new(Body::from("done")))
        }
    });
    let quota = Quota::single(Limit::concurrency(1)).unwrap();
    let svc = RateLimitLayer::new(MemoryStore::new(), Global, quota).layer(slow);

    let first = tokio::spawn(svc.clone().oneshot(req(None)));
    called(&started).await;
    let r = svc.clone().oneshot(req(None)).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.headers()["ratelimit-policy"]
            .to_str()
            .unwrap()
            .contains("qu=\"concurrent-requests\"")
    );
    gate.notify_one();
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);

    // A request abandoned mid-flight (its future dropped) frees its slot.
    let abandoned = tokio::spawn(svc.clone().oneshot(req(None)));
    called(&started).await;
    abandoned.abort();
    let _ = abandoned.await;
    let next = tokio::spawn(svc.clone().oneshot(req(None)));
    called(&started).await;
    gate.notify_one();
    assert_eq!(next.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn redis_failure_policies_as_http_answers() {
    let server = RedisServer::start().unwrap();
    let quota = Quota::single(Limit::per_day(100)).unwrap();
    let url = server.url();
    let mk = |policy| {
        let url = url.clone();
        async move {
            RedisStore::new(client(&url).await)
                .timeout(Duration::from_millis(200))
                .on_failure(policy)
        }
    };
    let closed = RateLimitLayer::new(mk(FailurePolicy::FailClosed).await, Global, quota.clone())
        .layer(counting_service(Arc::default()));
    let open = RateLimitLayer::new(mk(FailurePolicy::FailOpen).await, Global, quota.clone())
        .layer(counting_service(Arc::default()));
    assert_eq!(
        closed.clone().oneshot(req(None)).await.unwrap().status(),
        StatusCode::OK
    );

    server.kill().unwrap();
    let r = closed.clone().oneshot(req(None)).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let r = open.clone().oneshot(req(None)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers().get("ratelimit").is_none(),
        "fail-open knows no state"
    );
}

/// While the local fallback decides, `RateLimit-Policy` and `RateLimit`
/// both describe this instance's share of the quota.
#[tokio::test]
async fn fallback_headers_describe_the_share_applied() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::new(client(&server.url()).await)
        .timeout(Duration::from_millis(200))
        .on_failure(FailurePolicy::Local { instances: 2 });
    let quota = Quota::single(Limit::per_day(10)).unwrap();
    let svc = RateLimitLayer::new(store, Global, quota).layer(counting_service(Arc::default()));
    let r = svc.clone().oneshot(req(None)).await.unwrap();
    assert_eq!(
        r.headers()["ratelimit-policy"],
        "\"10-per-1d\";q=10;w=86400"
    );
    assert_eq!(r.headers()["ratelimit"], "\"10-per-1d\";r=9;t=8640");

    server.kill().unwrap();
    let r = svc.clone().oneshot(req(None)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["ratelimit-policy"], "\"10-per-1d\";q=5;w=86400");
    assert_eq!(r.headers()["ratelimit"], "\"10-per-1d\";r=4;t=17280");
}

/// A client whose address cannot be told is counted in one shared bucket
/// by default — never unlimited — or refused with 400 when configured.
#[tokio::test]
async fn unknown_client_addresses_share_a_bucket_or_are_refused() {
    use cog_ratelimit::extract::{PeerIp, UnknownClient};
    let quota = Quota::single(Limit::per_day(2)).unwrap();
    let shared = RateLimitLayer::new(
        MemoryStore::new(),
        PeerIp::new().trusted_hops(1),
        quota.clone(),
    )
    .layer(counting_service(Arc::default()));
    // No peer address extension and a forged chain: three "different"
    // clients, one bucket.
    let forged = |xff: &str| {
        Request::builder()
            .uri("/")
            .header("x-forwarded-for", xff)
            .body(Body::default())
            .unwrap()
    };
    let statuses: Vec<_> = [forged("junk"), forged("also junk"), forged("")]
        .into_iter()
        .map(|r| shared.clone().oneshot(r))
        .collect();
    let mut got = Vec::new();
    for s in statuses {
        got.push(s.await.unwrap().status());
    }
    assert_eq!(
        got,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );

    let calls = Arc::new(AtomicUsize::new(0));
    let strict = RateLimitLayer::new(
        MemoryStore::new(),
        PeerIp::new().when_unknown(UnknownClient::Reject),
        quota,
    )
    .layer(counting_service(calls.clone()));
    let r = strict.clone().oneshot(req(None)).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // With the address there, it is limited as usual.
    let mut known = req(None);
    known
        .extensions_mut()
        .insert("10.0.0.7:4000".parse::<std::net::SocketAddr>().unwrap());
    assert_eq!(
        strict.clone().oneshot(known).await.unwrap().status(),
        StatusCode::OK
    );
}

/// An IPv6 client cannot step around its limit by changing address
/// within its `/64`; another `/64` is another client.
#[tokio::test]
async fn ipv6_clients_are_limited_by_network() {
    use cog_ratelimit::extract::PeerIp;
    let svc = RateLimitLayer::new(
        MemoryStore::new(),
        PeerIp::new(),
        Quota::single(Limit::per_day(2)).unwrap(),
    )
    .layer(counting_service(Arc::default()));
    let from = |peer: &str| {
        let mut r = req(None);
        r.extensions_mut()
            .insert(peer.parse::<std::net::SocketAddr>().unwrap());
        r
    };
    let mut got = Vec::new();
    for peer in [
        "[2001:db8:0:1::1]:4000",
        "[2001:db8:0:1::2]:4000",
        "[2001:db8:0:1:ffff::3]:4000",
        "[2001:db8:0:2::1]:4000",
    ] {
        got.push(svc.clone().oneshot(from(peer)).await.unwrap().status());
    }
    assert_eq!(
        got,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::OK
        ]
    );
}

/// A streaming response holds its concurrency slot until its body ends
/// (or is dropped), not just until its headers are out.
#[tokio::test]
async fn concurrency_slots_are_held_until_the_body_ends() {
    use bytes::Bytes;
    use http_body_util::combinators::UnsyncBoxBody;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;

    type Chunks = mpsc::UnboundedSender<Result<http_body::Frame<Bytes>, Infallible>>;
    let senders: Arc<std::sync::Mutex<Vec<Chunks>>> = Arc::default();
    let s = senders.clone();
    let streaming = service_fn(move |_req: Request<Body>| {
        let (tx, mut rx) = mpsc::unbounded_channel();
        s.lock().unwrap().push(tx);
        let body = StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        // Boxed: the layer answers 429s with a `Default` body.
        async move { Ok::<_, Infallible>(Response::new(UnsyncBoxBody::new(body))) }
    });
    let quota = Quota::single(Limit::concurrency(1)).unwrap();
    let svc = RateLimitLayer::new(MemoryStore::new(), Global, quota).layer(streaming);
    let get = || svc.clone().oneshot(req(None));

    let first = get().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    // Headers are out, the body is still streaming: the slot is taken.
    assert_eq!(get().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    let tx = senders.lock().unwrap().remove(0);
    tx.send(Ok(http_body::Frame::data(Bytes::from("part"))))
        .unwrap();
    let mut body = first.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "part");
    assert_eq!(get().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    // The stream ends: the slot is given back.
    drop(tx);
    assert!(body.frame().await.is_none());
    let second = get().await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    // A body dropped unread gives it back too.
    drop(second);
    assert_eq!(get().await.unwrap().status(), StatusCode::OK);
}

/// `Route` keys on the template axum matched: every item id shares the
/// route's limit, so varying the path mints no new subjects.
#[tokio::test]
async fn route_keys_on_the_matched_template() {
    use axum::Router;
    use axum::routing::get;
    use cog_ratelimit::extract::Route;

    let quota = Quota::single(Limit::per_day(2)).unwrap();
    let app = Router::new()
        .route("/v1/items/{id}", get(|| async { "item" }))
        .route("/v1/users/{id}", get(|| async { "user" }))
        .layer(RateLimitLayer::new(MemoryStore::new(), Route, quota));
    let get = |uri: &str| {
        let req = Request::builder()
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        app.clone().oneshot(req)
    };
    assert_eq!(get("/v1/items/1").await.unwrap().status(), StatusCode::OK);
    assert_eq!(get("/v1/items/2").await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        get("/v1/items/3").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another route has its own limit.
    assert_eq!(get("/v1/users/1").await.unwrap().status(), StatusCode::OK);
}

/// Behind axum served with connect info, `PeerIp` reads the peer from
/// axum's `ConnectInfo` (nothing to copy): clients are told apart, none
/// is "unknown".
#[tokio::test]
async fn peer_ip_reads_axum_connect_info() {
    use axum::Router;
    use axum::routing::get;
    use cog_ratelimit::extract::{PeerIp, UnknownClient};
    use cog_testkit::peer::{get_from, serve_with_peers};

    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(RateLimitLayer::new(
            MemoryStore::new(),
            PeerIp::new().when_unknown(UnknownClient::Reject),
            Quota::single(Limit::per_day(1)).unwrap(),
        ));
    let addr = serve_with_peers(app).await;
    assert_eq!(get_from("127.0.0.1", addr, "/").await, 200);
    assert_eq!(get_from("127.0.0.1", addr, "/").await, 429);
    assert_eq!(
        get_from("127.0.0.2", addr, "/").await,
        200,
        "another client"
    );
}

#[tokio::test]
async fn the_service_is_built_directly_or_through_its_layer() {
    use cog_ratelimit::RateLimit;
    let quota = Quota::new([Limit::per_minute(1)]).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let direct = RateLimit::new(
        counting_service(calls.clone()),
        MemoryStore::new(),
        Global,
        quota.clone(),
    );
    let layered = RateLimit::<Inner, _, _, _>::layer(MemoryStore::new(), Global, quota)
        .layer(counting_service(calls.clone()));
    for svc in [direct, layered] {
        assert_eq!(svc.clone().oneshot(req(None)).await.unwrap().status(), 200);
        let denied = svc.oneshot(req(None)).await.unwrap();
        assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A quota source that only answers asynchronously: the layer takes its
/// general path (no `quota_now`).
#[derive(Clone)]
struct AsyncOnly(Quota);

impl cog_ratelimit::QuotaSource for AsyncOnly {
    fn quota(
        &self,
        _: &str,
        _: &http::request::Parts,
    ) -> impl Future<Output = Result<Option<Quota>, cog_ratelimit::BoxError>> + Send {
        let q = self.0.clone();
        async move {
            tokio::task::yield_now().await;
            Ok(Some(q))
        }
    }
}

type Seen = (StatusCode, Option<String>, Option<String>, Option<String>);

/// Six requests of two subjects through `svc`: what each got.
async fn script<S, B>(svc: S) -> Vec<Seen>
where
    S: tower::Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone,
{
    let mut seen = Vec::new();
    for t in ["a", "a", "b", "a", "a", "b"] {
        let r = svc.clone().oneshot(req(Some(t))).await.unwrap();
        let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
        seen.push((
            r.status(),
            h("ratelimit-policy"),
            h("ratelimit"),
            h("retry-after"),
        ));
    }
    seen
}

/// The decision made without waiting (an in-memory source and store) and
/// the general asynchronous path answer the same requests the same way:
/// statuses, both headers, `Retry-After`, calls of the inner service, and
/// concurrency slots given back.
#[tokio::test]
async fn the_immediate_path_answers_as_the_general_one() {
    let quota = Quota::new([
        Limit::per_minute(3),
        Limit::per_day(100).named("daily"),
        Limit::concurrency(10),
    ])
    .unwrap();
    let mut answers = Vec::new();
    for immediate in [true, false] {
        let calls = Arc::new(AtomicUsize::new(0));
        let store = MemoryStore::new();
        let inner = counting_service(calls.clone());
        let seen = if immediate {
            script(RateLimitLayer::new(store.clone(), tenant(), quota.clone()).layer(inner)).await
        } else {
            script(
                RateLimitLayer::new(store.clone(), tenant(), AsyncOnly(quota.clone())).layer(inner),
            )
            .await
        };
        let inspect = cog_ratelimit::store::Store::inspect(&store, "a", &quota)
            .await
            .unwrap();
        answers.push((
            seen,
            calls.load(Ordering::SeqCst),
            inspect
                .statuses()
                .iter()
                .map(|s| (s.remaining, s.allowed))
                .collect::<Vec<_>>(),
        ));
    }
    assert_eq!(answers[0].0, answers[1].0);
    assert_eq!(answers[0].1, 5, "a: 3 of 4 admitted, b: 2");
    assert_eq!(answers[0].1, answers[1].1);
    assert_eq!(answers[0].2, answers[1].2, "slots given back alike");
}

/// An inner service that counts its clones.
#[derive(Default)]
struct CountsClones(Arc<AtomicUsize>);

impl Clone for CountsClones {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, Ordering::SeqCst);
        CountsClones(self.0.clone())
    }
}

impl tower::Service<Request<Body>> for CountsClones {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Body>) -> Self::Future {
        std::future::ready(Ok(Response::new(Body::from("ok"))))
    }
}

/// With an in-memory source and store the decision is made in `call`: the
/// inner service made ready is called at once, never cloned; a source that
/// only answers asynchronously takes the general path, which clones it.
#[tokio::test]
async fn an_immediate_decision_calls_the_ready_service_without_cloning_it() {
    use tower::Service as _;
    let quota = Quota::single(Limit::per_minute(100)).unwrap();
    for (immediate, clones_per_call) in [(true, 0), (false, 1)] {
        let clones = Arc::new(AtomicUsize::new(0));
        let inner = CountsClones(clones.clone());
        let mut svc = if immediate {
            tower::util::Either::Left(
                RateLimitLayer::new(MemoryStore::new(), tenant(), quota.clone()).layer(inner),
            )
        } else {
            tower::util::Either::Right(
                RateLimitLayer::new(MemoryStore::new(), tenant(), AsyncOnly(quota.clone()))
                    .layer(inner),
            )
        };
        for _ in 0..3 {
            std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
            let before = clones.load(Ordering::SeqCst);
            let res = svc.call(req(Some("a"))).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(
                clones.load(Ordering::SeqCst) - before,
                clones_per_call,
                "immediate: {immediate}"
            );
        }
    }
}

/// The layer is ready when its inner service is, and not before: a
/// service behind it (a concurrency limit, a buffer) keeps its
/// backpressure.
#[tokio::test]
async fn readiness_is_the_inner_services() {
    let gate = cog_testkit::service::Gate::<Body>::new();
    let mut svc = RateLimitLayer::new(
        MemoryStore::new(),
        Global,
        Quota::single(Limit::per_minute(5)).unwrap(),
    )
    .layer(gate.clone());
    assert!(format!("{svc:?}").starts_with("RateLimit"), "{svc:?}");
    cog_testkit::service::assert_ready_with_inner::<_, Request<Body>, _>(&mut svc, &gate);
    let res = tower::Service::call(&mut svc, req(None)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
