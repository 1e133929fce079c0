//! The HTTP response cache through a real tower stack.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cog_cache::TieredCache;
use cog_cache::http::{CacheBody, HttpCacheLayer, StoredResponse};
use cog_testkit::RedisServer;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt, service_fn};

use crate::support::{client, eventually};

type Origin = BoxCloneSyncService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

/// An origin whose answers depend on the path; counts its calls.
fn origin(calls: Arc<AtomicUsize>) -> Origin {
    BoxCloneSyncService::new(service_fn(move |req: Request<Full<Bytes>>| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let h = |name: &str| {
                req.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            let mut res = Response::builder().status(200);
            let body = match req.uri().path() {
                "/vary" => {
                    res = res
                        .header("cache-control", "max-age=60")
                        .header("vary", "Accept-Language");
                    format!("lang={} #{n}", h("accept-language"))
                }
                "/nostore" => {
                    res = res.header("cache-control", "no-store");
                    format!("#{n}")
                }
                "/private" => {
                    res = res.header("cache-control", "private, max-age=60");
                    format!("#{n}")
                }
                "/cookie" => {
                    res = res
                        .header("cache-control", "max-age=60")
                        .header("set-cookie", "s=1");
                    format!("#{n}")
                }
                "/swr" => {
                    res = res.header("cache-control", "max-age=1, stale-while-revalidate=30");
                    format!("#{n}")
                }
                "/sie" if n > 1 => {
                    res = res.status(500);
                    "boom".to_owned()
                }
                "/sie" => {
                    res = res.header("cache-control", "max-age=1, stale-if-error=30");
                    format!("#{n}")
                }
                "/huge" => {
                    res = res.header(
                        "cache-control",
                        "max-age=18446744073709551615, stale-while-revalidate=99999999999999999999999, stale-if-error=18446744073709551615",
                    );
                    format!("#{n}")
                }
                "/aged" => {
                    res = res
                        .header("cache-control", "max-age=60")
                        .header("age", "50");
                    format!("#{n}")
                }
                "/too-old" => {
                    res = res
                        .header("cache-control", "max-age=60")
                        .header("age", "100");
                    format!("#{n}")
                }
                "/swr-panic" if n == 2 => panic!("origin bug"),
                "/swr-panic" => {
                    res = res.header("cache-control", "max-age=0, stale-while-revalidate=60");
                    format!("#{n}")
                }
                "/host" => {
                    res = res.header("cache-control", "max-age=60");
                    format!("host={} #{n}", h("host"))
                }
                "/big" => {
                    res = res.header("cache-control", "max-age=60");
                    "x".repeat(4096)
                }
                _ => {
                    res = res.header("cache-control", "public, max-age=60");
                    format!("tenant={} #{n}", h("x-tenant"))
                }
            };
            Ok::<_, Infallible>(res.body(Full::new(Bytes::from(body))).unwrap())
        }
    }))
}

fn layer(cache: TieredCache<String, StoredResponse>) -> HttpCacheLayer {
    HttpCacheLayer::new(cache)
        .tenant_with(|p| p.headers.get("x-tenant")?.to_str().ok().map(str::to_owned))
}

struct Client {
    svc: cog_cache::http::HttpCache<Origin>,
    calls: Arc<AtomicUsize>,
}

impl Client {
    fn new(layer: HttpCacheLayer) -> Self {
        let calls = Arc::new(AtomicUsize::new(0));
        Client {
            svc: layer.layer(origin(calls.clone())),
            calls,
        }
    }

    async fn send(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String, String, String) {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let res: Response<CacheBody<Full<Bytes>>> = self
            .svc
            .clone()
            .oneshot(b.body(Full::default()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let cs = res
            .headers()
            .get("cache-status")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let age = res
            .headers()
            .get("age")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec())
            .unwrap();
        (status, body, cs, age)
    }

    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> (String, String) {
        let (_, body, cs, _) = self.send("GET", uri, headers).await;
        (body, cs)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn l1() -> TieredCache<String, StoredResponse> {
    TieredCache::builder().build().unwrap()
}

#[tokio::test]
async fn stores_and_serves_with_cache_status_and_age() {
    let c = Client::new(layer(l1()));
    let (body, cs) = c.get("/public", &[]).await;
    assert_eq!(
        (body.as_str(), cs.as_str()),
        ("tenant=- #1", "cog; fwd=uri-miss; stored")
    );
    let (status, body, cs, age) = c.send("GET", "/public", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "tenant=- #1");
    assert!(cs.starts_with("cog; hit; ttl="), "{cs}");
    assert_eq!(age, "0");
    // HEAD is answered from the GET entry, without a body.
    let (_, body, cs, _) = c.send("HEAD", "/public", &[]).await;
    assert!(body.is_empty() && cs.starts_with("cog; hit"));
    // Other methods go through.
    let (_, _, cs, _) = c.send("POST", "/public", &[]).await;
    assert_eq!(cs, "cog; fwd=method");
    assert_eq!(c.calls(), 2);
}

#[tokio::test]
async fn vary_keeps_variants_apart() {
    let c = Client::new(layer(l1()));
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    assert_eq!(c.get("/vary", &en).await.0, "lang=en #1");
    assert_eq!(c.get("/vary", &en).await.0, "lang=en #1");
    let (body, cs) = c.get("/vary", &fr).await;
    assert_eq!(
        (body.as_str(), cs.as_str()),
        ("lang=fr #2", "cog; fwd=vary-miss; stored")
    );
    assert_eq!(c.get("/vary", &en).await.0, "lang=en #1");
    assert_eq!(c.get("/vary", &fr).await.0, "lang=fr #2");
    assert_eq!(c.calls(), 2);
}

#[tokio::test]
async fn no_store_private_and_set_cookie_are_never_stored() {
    let c = Client::new(layer(l1()));
    for path in ["/nostore", "/private", "/cookie"] {
        let (_, cs) = c.get(path, &[]).await;
        assert_eq!(cs, "cog; fwd=uri-miss", "{path}");
        assert_eq!(c.get(path, &[]).await.1, "cog; fwd=uri-miss", "{path}");
    }
    assert_eq!(c.calls(), 6);
    // A client's own no-cache goes to the origin (and its answer is
    // stored); its no-store goes there and nothing is stored.
    c.get("/public", &[]).await;
    assert_eq!(
        c.get("/public", &[("cache-control", "no-cache")]).await.1,
        "cog; fwd=request; stored"
    );
    assert_eq!(
        c.get("/public", &[("cache-control", "no-store")]).await.1,
        "cog; fwd=request"
    );
    assert!(c.get("/public", &[]).await.1.starts_with("cog; hit"));
}

#[tokio::test]
async fn authorization_bypasses_unless_allowed() {
    let c = Client::new(layer(l1()));
    let auth = [("authorization", "Bearer secret")];
    assert_eq!(c.get("/a", &auth).await.1, "cog; fwd=request");
    // The authorized response was not stored for anonymous callers.
    assert_eq!(c.get("/a", &[]).await.1, "cog; fwd=uri-miss; stored");
    // Nor is the anonymous entry served to an authorized caller.
    assert_eq!(c.get("/a", &auth).await.1, "cog; fwd=request");
    assert_eq!(c.calls(), 3);

    let allowed = Client::new(layer(l1()).cache_authorized(|p| p.uri.path() == "/ok"));
    let auth_t = [("authorization", "Bearer k"), ("x-tenant", "t1")];
    allowed.get("/ok", &auth_t).await;
    assert!(allowed.get("/ok", &auth_t).await.1.starts_with("cog; hit"));
    assert_eq!(allowed.get("/no", &auth_t).await.1, "cog; fwd=request");
    // An entry the tenant's anonymous callers stored is not served to an
    // authorized request the predicate refuses, fresh in L1 or not.
    let anon_t = [("x-tenant", "t1")];
    assert_eq!(
        allowed.get("/no", &anon_t).await.1,
        "cog; fwd=uri-miss; stored"
    );
    assert!(allowed.get("/no", &anon_t).await.1.starts_with("cog; hit"));
    assert_eq!(allowed.get("/no", &auth_t).await.1, "cog; fwd=request");
}

#[tokio::test]
async fn tenant_a_never_sees_tenant_b() {
    let server = RedisServer::start().unwrap();
    // Through Redis too: a second instance reads L2 with the tenant in the key.
    let shared = |_: ()| async {
        TieredCache::builder()
            .redis(client(&server.url()).await)
            .schema("http-v1")
            .build()
            .unwrap()
    };
    let one = Client::new(layer(shared(()).await));
    let two = Client::new(layer(shared(()).await));
    assert_eq!(one.get("/t", &[("x-tenant", "a")]).await.0, "tenant=a #1");
    assert_eq!(one.get("/t", &[("x-tenant", "b")]).await.0, "tenant=b #2");
    assert_eq!(one.get("/t", &[("x-tenant", "a")]).await.0, "tenant=a #1");
    assert_eq!(two.get("/t", &[("x-tenant", "b")]).await.0, "tenant=b #2");
    assert_eq!(two.get("/t", &[("x-tenant", "a")]).await.0, "tenant=a #1");
    let (body, cs) = two.get("/t", &[]).await;
    assert_eq!(
        (body.as_str(), cs.as_str()),
        ("tenant=- #1", "cog; fwd=uri-miss; stored")
    );
    assert_eq!(one.calls() + two.calls(), 3);
}

#[tokio::test]
async fn stale_while_revalidate_and_stale_if_error() {
    let c = Client::new(layer(l1()));
    assert_eq!(c.get("/swr", &[]).await.0, "#1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (body, cs) = c.get("/swr", &[]).await;
    assert_eq!(body, "#1");
    assert!(cs.starts_with("cog; hit; ttl=-"), "{cs}");
    eventually("background revalidation", async || {
        c.get("/swr", &[]).await.0 == "#2"
    })
    .await;

    let c = Client::new(layer(l1()));
    assert_eq!(c.get("/sie", &[]).await.0, "#1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The origin now fails with 500: the stale answer stands in.
    let (status, body, _, _) = c.send("GET", "/sie", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "#1"));
}

/// Two hosts served by one service never share entries: the key is the
/// effective request URI, host included.
#[tokio::test]
async fn hosts_do_not_share_entries() {
    let c = Client::new(layer(l1()));
    let a = [("host", "a.example")];
    let b = [("host", "B.example")];
    assert_eq!(c.get("/host", &a).await.0, "host=a.example #1");
    assert_eq!(c.get("/host", &b).await.0, "host=B.example #2");
    assert_eq!(c.get("/host", &a).await.0, "host=a.example #1");
    // Host names are case-insensitive.
    assert_eq!(
        c.get("/host", &[("host", "b.EXAMPLE")]).await.0,
        "host=B.example #2"
    );
    // An absolute URI names its host itself.
    assert_eq!(
        c.get("http://a.example/host", &[]).await.0,
        "host=a.example #1"
    );
    assert_eq!(c.get("https://a.example/host", &[]).await.0, "host=- #3");
    assert_eq!(c.calls(), 3);
}

/// Without a tenant function, responses to authorized requests (where
/// caching them is allowed) are kept per credential, never shared.
#[tokio::test]
async fn authorized_responses_are_per_credential_without_a_tenant() {
    let c = Client::new(HttpCacheLayer::new(l1()).cache_authorized(|_| true));
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    assert_eq!(c.get("/p", &alice).await.0, "tenant=- #1");
    assert!(c.get("/p", &alice).await.1.starts_with("cog; hit"));
    let (body, cs) = c.get("/p", &bob).await;
    assert_eq!(
        (body.as_str(), cs.as_str()),
        ("tenant=- #2", "cog; fwd=uri-miss; stored")
    );
    let (body, _) = c.get("/p", &[]).await;
    assert_eq!(body, "tenant=- #3");
    assert_eq!(c.calls(), 3);
}

/// Delta-seconds past 2^31 count as 2^31 (RFC 9111 §1.2.2), whatever
/// their size: stored and served, no overflow.
#[tokio::test]
async fn huge_delta_seconds_are_capped() {
    let c = Client::new(layer(l1()));
    assert_eq!(c.get("/huge", &[]).await.1, "cog; fwd=uri-miss; stored");
    let (body, cs) = c.get("/huge", &[]).await;
    assert_eq!(body, "#1");
    assert!(cs.starts_with("cog; hit; ttl=2147483"), "{cs}");
}

/// The age a response had upstream counts: `Age` on answers includes it,
/// and it shortens the freshness left.
#[tokio::test]
async fn upstream_age_is_honoured() {
    let c = Client::new(layer(l1()));
    c.get("/aged", &[]).await;
    let (_, body, cs, age) = c.send("GET", "/aged", &[]).await;
    assert_eq!(body, "#1");
    let age: u64 = age.parse().unwrap();
    assert!((50..=51).contains(&age), "{age}");
    let ttl: i64 = cs.strip_prefix("cog; hit; ttl=").unwrap().parse().unwrap();
    assert!((8..=10).contains(&ttl), "{cs}");
    // Older than its max-age on arrival: not served from the cache.
    c.get("/too-old", &[]).await;
    assert_eq!(c.get("/too-old", &[]).await.0, "#3");
}

/// A background revalidation that panics lets the next stale answer start
/// another.
#[tokio::test]
async fn a_panicking_revalidation_does_not_stop_later_ones() {
    let c = Client::new(layer(l1()));
    assert_eq!(c.get("/swr-panic", &[]).await.0, "#1");
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Stale: served, and revalidated behind — the origin panics (call 2).
    assert_eq!(c.get("/swr-panic", &[]).await.0, "#1");
    eventually("a second revalidation", async || {
        c.get("/swr-panic", &[]).await;
        c.calls() >= 3
    })
    .await;
}

#[tokio::test]
async fn the_service_is_built_directly_or_through_its_layer() {
    use cog_cache::http::HttpCache;
    let calls = Arc::new(AtomicUsize::new(0));
    let direct = Client {
        svc: HttpCache::new(origin(calls.clone()), l1()),
        calls: calls.clone(),
    };
    let through_layer = Client {
        svc: HttpCache::<Origin>::layer(l1()).layer(origin(calls.clone())),
        calls,
    };
    for c in [&direct, &through_layer] {
        c.get("/public", &[]).await;
        let (_, cs) = c.get("/public", &[]).await;
        assert!(cs.starts_with("cog; hit"), "{cs}");
    }
    assert_eq!(direct.calls(), 2, "one origin call per cache");
    // `get_ref` reaches the inner service.
    let _: &Origin = direct.svc.get_ref();
}

/// What an outer layer (authentication, say) put on the request.
#[derive(Clone)]
struct Who(&'static str);

/// A background revalidation is the request that triggered it, extensions
/// included: a handler that needs what an outer layer inserted answers it
/// as it answered the original (before, it got a request without them and
/// failed, so a stale entry was never refreshed in the background).
#[tokio::test]
async fn a_revalidation_carries_the_requests_extensions() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let origin = service_fn(move |req: Request<Full<Bytes>>| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        let res = match req.extensions().get::<Who>() {
            Some(Who(who)) => Response::builder()
                .header("cache-control", "max-age=0, stale-while-revalidate=60")
                .body(Full::new(Bytes::from(format!("{who} #{n}")))),
            None => Response::builder().status(500).body(Full::default()),
        };
        async move { Ok::<_, Infallible>(res.unwrap()) }
    });
    let svc = HttpCacheLayer::new(l1()).layer(origin);
    let get = async || {
        let mut req = Request::get("/e").body(Full::default()).unwrap();
        req.extensions_mut().insert(Who("ann"));
        let res = svc.clone().oneshot(req).await.unwrap();
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    };
    assert_eq!(get().await, "ann #1");
    // Stale at once: served, and revalidated behind.
    assert_eq!(get().await, "ann #1");
    eventually("revalidated with the extension", async || {
        get().await == "ann #2"
    })
    .await;
}

/// The layer is ready exactly when its origin is (its backpressure kept).
#[tokio::test]
async fn readiness_is_the_origins() {
    let gate = cog_testkit::service::Gate::<Full<Bytes>>::new();
    let mut svc = HttpCacheLayer::new(l1()).layer(gate.clone());
    cog_testkit::service::assert_ready_with_inner::<_, Request<Full<Bytes>>, _>(&mut svc, &gate);
}
