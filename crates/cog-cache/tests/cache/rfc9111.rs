//! The HTTP layer as a shared cache (RFC 9111), against a scripted origin
//! that records what it was asked.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cog_cache::TieredCache;
use cog_cache::http::{CacheBody, HttpCacheLayer, StoredResponse};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt, service_fn};

type Origin = BoxCloneSyncService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;
type Script = dyn Fn(&Request<Full<Bytes>>, usize) -> Response<Full<Bytes>> + Send + Sync;

/// What the origin saw: method, path and headers of each request.
#[derive(Default, Clone)]
struct Seen(Arc<Mutex<Vec<(String, String, HeaderMap)>>>);

impl Seen {
    fn count(&self) -> usize {
        self.0.lock().len()
    }

    fn last_header(&self, name: &str) -> Option<String> {
        let seen = self.0.lock();
        let (_, _, h) = seen.last()?;
        Some(h.get(name)?.to_str().ok()?.to_owned())
    }
}

struct Cache {
    svc: cog_cache::http::HttpCache<Origin>,
    seen: Seen,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

impl Cache {
    /// A cache in front of an origin answering `script(request, n)` for
    /// its `n`-th request (from 1).
    fn new(
        script: impl Fn(&Request<Full<Bytes>>, usize) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Self {
        Self::over(TieredCache::builder().build().unwrap(), script)
    }

    /// The same, storing in `cache`.
    fn over(
        cache: TieredCache<String, StoredResponse>,
        script: impl Fn(&Request<Full<Bytes>>, usize) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Self {
        Self::with(HttpCacheLayer::new(cache), script)
    }

    /// The same, through `layer`.
    fn with(
        layer: HttpCacheLayer,
        script: impl Fn(&Request<Full<Bytes>>, usize) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Self {
        let seen = Seen::default();
        let script: Arc<Script> = Arc::new(script);
        let s = seen.clone();
        let origin = BoxCloneSyncService::new(service_fn(move |req: Request<Full<Bytes>>| {
            let n = {
                let mut seen = s.0.lock();
                seen.push((
                    req.method().to_string(),
                    req.uri().path().to_owned(),
                    req.headers().clone(),
                ));
                seen.len()
            };
            let res = script(&req, n);
            async move { Ok::<_, Infallible>(res) }
        }));
        Cache {
            svc: layer.layer(origin),
            seen,
        }
    }

    async fn send(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> Answer {
        let raw: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        self.send_bytes(method, uri, &raw).await
    }

    /// [`send`](Self::send), with field values that need not be text.
    async fn send_bytes(&self, method: &str, uri: &str, headers: &[(&str, &[u8])]) -> Answer {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "origin.test");
        for (k, v) in headers {
            b = b.header(*k, HeaderValue::from_bytes(v).unwrap());
        }
        let res: Response<CacheBody<Full<Bytes>>> = self
            .svc
            .clone()
            .oneshot(b.body(Full::default()).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap(),
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send("GET", uri, &[]).await
    }
}

fn respond(
    status: u16,
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(body.into())).unwrap()
}

fn date(offset_secs: i64) -> String {
    let t = if offset_secs >= 0 {
        SystemTime::now() + Duration::from_secs(offset_secs as u64)
    } else {
        SystemTime::now() - Duration::from_secs((-offset_secs) as u64)
    };
    httpdate::fmt_http_date(t)
}

#[tokio::test]
async fn expires_and_date_give_freshness() {
    let c = Cache::new(|req, n| match req.uri().path() {
        "/future" => respond(
            200,
            &[("date", date(0)), ("expires", date(60))],
            format!("#{n}"),
        ),
        "/past" => respond(
            200,
            &[("date", date(0)), ("expires", date(-60))],
            format!("#{n}"),
        ),
        // Invalid Expires: already expired.
        _ => respond(200, &[("expires", "0".into())], format!("#{n}")),
    });
    c.get("/future").await;
    let a = c.get("/future").await;
    assert!(
        a.header("cache-status").starts_with("cog; hit"),
        "{}",
        a.header("cache-status")
    );
    assert_eq!(a.body, "#1");
    c.get("/past").await;
    assert_eq!(c.get("/past").await.body, "#3");
    c.get("/zero").await;
    assert_eq!(c.get("/zero").await.body, "#5");
    assert_eq!(c.seen.count(), 5);
}

/// A cache told to obey `CDN-Cache-Control` (RFC 9213) takes it over
/// `Cache-Control` and `Expires` — which still reach the client as they
/// are — unless it is invalid or empty; one not told so ignores it.
#[tokio::test]
async fn a_targeted_field_speaks_for_the_cache_that_obeys_it() {
    let script = |req: &Request<Full<Bytes>>, n: usize| {
        let (cc, cdn): (&str, &str) = match req.uri().path() {
            "/kept-here-only" => ("no-store", "max-age=600"),
            "/not-here" => ("max-age=600", "no-store"),
            "/private-here" => ("max-age=600", "private"),
            "/invalid" => ("no-store", "max-age=\"600\""),
            "/empty" => ("max-age=600", ""),
            "/shorter" => ("max-age=600", "max-age=0"),
            _ => ("max-age=600", "max-age=600"),
        };
        respond(
            200,
            &[
                ("cache-control", cc.into()),
                ("cdn-cache-control", cdn.into()),
                ("date", date(0)),
                ("expires", date(600)),
            ],
            format!("#{n}"),
        )
    };
    let cdn = http::HeaderName::from_static("cdn-cache-control");
    let layer = HttpCacheLayer::new(TieredCache::builder().build().unwrap()).targeted([cdn]);
    assert!(format!("{layer:?}").contains(r#"targets: ["cdn-cache-control"]"#));
    let c = Cache::with(layer, script);
    let twice = |path: &'static str| {
        let c = &c;
        async move {
            c.get(path).await;
            c.get(path).await
        }
    };
    let a = twice("/kept-here-only").await;
    assert!(
        a.header("cache-status").starts_with("cog; hit"),
        "{}",
        a.header("cache-status")
    );
    assert_eq!(
        a.header("cache-control"),
        "no-store",
        "the client's directives are untouched"
    );
    assert_eq!(a.header("cdn-cache-control"), "max-age=600");
    for not_stored in ["/not-here", "/private-here", "/invalid", "/shorter"] {
        let a = twice(not_stored).await;
        assert!(
            !a.header("cache-status").starts_with("cog; hit"),
            "{not_stored}"
        );
    }
    // Empty: Cache-Control decides.
    assert!(
        twice("/empty")
            .await
            .header("cache-status")
            .starts_with("cog; hit")
    );

    // A layer that was not told to obey it.
    let plain = Cache::new(script);
    plain.get("/kept-here-only").await;
    assert_eq!(plain.get("/kept-here-only").await.body, "#2");
    plain.get("/not-here").await;
    assert!(
        plain
            .get("/not-here")
            .await
            .header("cache-status")
            .starts_with("cog; hit")
    );
}

#[tokio::test]
async fn heuristic_freshness_only_for_heuristically_cacheable_statuses() {
    let c = Cache::new(|req, n| {
        let lm = ("last-modified", date(-100_000));
        match req.uri().path() {
            "/ok" => respond(200, &[lm, ("date", date(0))], format!("#{n}")),
            "/gone" => respond(410, &[lm, ("date", date(0))], format!("#{n}")),
            // 302 and 201 are not heuristically cacheable.
            "/moved" => respond(
                302,
                &[lm, ("date", date(0)), ("location", "/x".into())],
                format!("#{n}"),
            ),
            _ => respond(201, &[lm, ("date", date(0))], format!("#{n}")),
        }
    });
    for path in ["/ok", "/gone"] {
        c.get(path).await;
        assert!(
            c.get(path)
                .await
                .header("cache-status")
                .starts_with("cog; hit"),
            "{path}"
        );
    }
    for path in ["/moved", "/created"] {
        c.get(path).await;
        assert!(
            !c.get(path)
                .await
                .header("cache-status")
                .starts_with("cog; hit"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn explicit_freshness_stores_other_statuses() {
    let c = Cache::new(|_, n| {
        respond(
            302,
            &[
                ("cache-control", "max-age=60".into()),
                ("location", "/x".into()),
            ],
            format!("#{n}"),
        )
    });
    c.get("/r").await;
    let a = c.get("/r").await;
    assert_eq!(a.status, StatusCode::FOUND);
    assert_eq!(a.header("location"), "/x");
    assert_eq!(c.seen.count(), 1);
}

/// `no-cache` (response): stored, but every use is revalidated; a 304
/// updates the stored headers and the stored body answers.
#[tokio::test]
async fn no_cache_responses_are_revalidated_with_their_etag() {
    let c = Cache::new(|req, n| {
        let inm = req
            .headers()
            .get("if-none-match")
            .map(|v| v.to_str().unwrap().to_owned());
        if inm.as_deref() == Some("\"v1\"") {
            return respond(
                304,
                &[("etag", "\"v1\"".into()), ("x-revalidated", format!("{n}"))],
                "",
            );
        }
        respond(
            200,
            &[
                ("cache-control", "no-cache".into()),
                ("etag", "\"v1\"".into()),
            ],
            "body v1",
        )
    });
    assert_eq!(c.get("/r").await.body, "body v1");
    let a = c.get("/r").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, "body v1");
    assert_eq!(
        c.seen.last_header("if-none-match").as_deref(),
        Some("\"v1\"")
    );
    assert!(
        a.header("cache-status")
            .starts_with("cog; fwd=stale; fwd-status=304"),
        "{}",
        a.header("cache-status")
    );
    assert_eq!(a.header("x-revalidated"), "2");
    // Every use revalidates.
    assert_eq!(c.get("/r").await.header("x-revalidated"), "3");
    assert_eq!(c.seen.count(), 3);
}

/// A stale entry with `Last-Modified` is revalidated with
/// `If-Modified-Since`, and the 304's freshness applies afterwards.
#[tokio::test]
async fn stale_entries_are_revalidated_and_refreshed_by_304() {
    let lm = date(-3600);
    let c = Cache::new(move |req, _| {
        if req.headers().contains_key("if-modified-since") {
            return respond(304, &[("cache-control", "max-age=60".into())], "");
        }
        respond(
            200,
            &[
                ("cache-control", "max-age=0".into()),
                ("last-modified", lm.clone()),
            ],
            "v",
        )
    });
    c.get("/r").await;
    let a = c.get("/r").await;
    assert_eq!(a.body, "v");
    assert!(c.seen.last_header("if-modified-since").is_some());
    // Fresh for 60 s now: no more trips.
    let a = c.get("/r").await;
    assert!(
        a.header("cache-status").starts_with("cog; hit"),
        "{}",
        a.header("cache-status")
    );
    assert_eq!(c.seen.count(), 2);
}

/// Within `stale-while-revalidate` the stale entry answers at once, and the
/// revalidation behind it is conditional (the entry's `ETag`): its 304
/// makes the entry fresh again, so later requests stay off the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_revalidation_is_conditional_and_its_304_refreshes() {
    let c = Cache::new(move |req, _| {
        if req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"e\"")
        {
            return respond(304, &[("cache-control", "max-age=600".into())], "");
        }
        respond(
            200,
            &[
                // Stale on arrival, served while revalidated.
                (
                    "cache-control",
                    "max-age=1, stale-while-revalidate=60".into(),
                ),
                ("age", "5".into()),
                ("etag", "\"e\"".into()),
            ],
            "v",
        )
    });
    c.get("/r").await;
    let a = c.get("/r").await;
    assert_eq!(a.body, "v");
    assert!(
        a.header("cache-status").starts_with("cog; hit"),
        "{}",
        a.header("cache-status")
    );
    // The revalidation behind it, then fresh for 600 s.
    for _ in 0..200 {
        if c.seen.count() == 2 && c.get("/r").await.header("cache-control") == "max-age=600" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        c.seen.last_header("if-none-match").as_deref(),
        Some("\"e\"")
    );
    let a = c.get("/r").await;
    assert_eq!(a.header("cache-control"), "max-age=600");
    assert!(
        a.header("cache-status").starts_with("cog; hit"),
        "{}",
        a.header("cache-status")
    );
    assert_eq!(c.seen.count(), 2, "one revalidation, then hits");
}

/// A background revalidation the origin answers in full (the entry
/// changed) stores the new answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_revalidation_answered_in_full_stores_it() {
    let c = Cache::new(move |req, n| {
        let cc = if req.headers().contains_key("if-none-match") {
            "max-age=600"
        } else {
            "max-age=1, stale-while-revalidate=60"
        };
        respond(
            200,
            &[
                ("cache-control", cc.into()),
                ("age", "5".into()),
                ("etag", format!("\"v{n}\"")),
            ],
            format!("#{n}"),
        )
    });
    c.get("/r").await;
    assert_eq!(c.get("/r").await.body, "#1");
    let mut body = String::new();
    for _ in 0..200 {
        body = c.get("/r").await.body;
        if body == "#2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(body, "#2");
    assert_eq!(c.seen.count(), 2);
}

/// A URI's list of varied-on headers lives as long as its longest-lived
/// variant, no longer: once they are gone, the URI misses as a whole.
#[tokio::test]
async fn the_vary_record_goes_with_its_variants() {
    let c = Cache::new(|_, n| {
        respond(
            200,
            &[
                ("cache-control", "max-age=1".into()),
                ("vary", "accept-language".into()),
            ],
            format!("#{n}"),
        )
    });
    let en = [("accept-language", "en")];
    let a = c.send("GET", "/r", &en).await;
    assert_eq!(a.header("cache-status"), "cog; fwd=uri-miss; stored");
    assert!(
        c.send("GET", "/r", &en)
            .await
            .header("cache-status")
            .starts_with("cog; hit")
    );
    // Both gone after their second (with room for a busy machine's clock).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let a = c.send("GET", "/r", &en).await;
    assert_eq!(a.header("cache-status"), "cog; fwd=uri-miss; stored");
}

/// A 304's fields replace the stored ones in every later answer — also
/// when the entry had already answered hits (which parse its fields once
/// and keep them with the entry).
#[tokio::test]
async fn fields_from_a_304_reach_later_hits() {
    let c = Cache::new(move |req, _| {
        if req.headers().contains_key("if-none-match") {
            return respond(304, &[("cache-control", "max-age=60".into())], "");
        }
        respond(
            200,
            &[
                ("cache-control", "max-age=1".into()),
                ("etag", "\"a\"".into()),
            ],
            "v",
        )
    });
    c.get("/r").await;
    let hit = c.get("/r").await;
    assert!(hit.header("cache-status").starts_with("cog; hit"));
    assert_eq!(hit.header("cache-control"), "max-age=1");
    // Stale after a second: revalidated, refreshed by the 304.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    c.get("/r").await;
    assert_eq!(c.seen.count(), 2);
    let hit = c.get("/r").await;
    assert!(
        hit.header("cache-status").starts_with("cog; hit"),
        "{}",
        hit.header("cache-status")
    );
    assert_eq!(hit.header("cache-control"), "max-age=60");
    assert_eq!(c.seen.count(), 2);
}

/// `must-revalidate`: once stale it is never served without the origin's
/// say-so — not in place of a 5xx, whatever `stale-if-error` says.
#[tokio::test]
async fn must_revalidate_forbids_stale_serving() {
    let c = Cache::new(|req, n| {
        let cc = match req.uri().path() {
            "/must" => "max-age=0, must-revalidate, stale-if-error=60, stale-while-revalidate=60",
            "/proxy" => "max-age=0, proxy-revalidate, stale-if-error=60",
            "/shared" => "s-maxage=0, stale-if-error=60",
            _ => "max-age=0, stale-if-error=60",
        };
        if n % 2 == 0 {
            return respond(503, &[], "down");
        }
        respond(
            200,
            &[("cache-control", cc.into()), ("etag", format!("\"{n}\""))],
            "ok",
        )
    });
    for path in ["/must", "/proxy", "/shared"] {
        c.get(path).await;
        assert_eq!(
            c.get(path).await.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}"
        );
    }
    c.get("/lenient").await;
    let a = c.get("/lenient").await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "ok"));
}

/// Unsafe methods that succeed drop the entries of their URI, `Location`
/// and `Content-Location` on the same host (RFC 9111 §4.4).
#[tokio::test]
async fn unsafe_methods_invalidate() {
    let c = Cache::new(|req, n| match (req.method().as_str(), req.uri().path()) {
        ("POST", "/items") => respond(
            201,
            &[
                ("location", "/items/7".into()),
                ("content-location", "http://origin.test/items/latest".into()),
            ],
            "",
        ),
        ("DELETE", "/other") => respond(
            204,
            &[("location", "http://elsewhere.test/items/8".into())],
            "",
        ),
        ("PUT", _) => respond(500, &[], ""),
        _ => respond(
            200,
            &[("cache-control", "max-age=60".into())],
            format!("#{n}"),
        ),
    });
    for p in ["/items", "/items/7", "/items/latest", "/items/8"] {
        c.get(p).await;
    }
    let hit = async |p: &str| {
        c.get(p)
            .await
            .header("cache-status")
            .starts_with("cog; hit")
    };
    for p in ["/items", "/items/7", "/items/latest", "/items/8"] {
        assert!(hit(p).await, "{p}");
    }
    // A failed unsafe request invalidates nothing.
    assert_eq!(
        c.send("PUT", "/items", &[]).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert!(hit("/items").await);
    assert_eq!(
        c.send("POST", "/items", &[]).await.header("cache-status"),
        "cog; fwd=method"
    );
    assert!(!hit("/items").await);
    assert!(!hit("/items/7").await);
    assert!(!hit("/items/latest").await);
    // Another host's Location is left alone.
    c.send("DELETE", "/other", &[]).await;
    assert!(hit("/items/8").await);
}

/// Invalidating a URI whose responses vary retires every variant.
#[tokio::test]
async fn invalidation_retires_every_variant() {
    let c = Cache::new(|req, n| {
        if req.method() == "POST" {
            return respond(200, &[], "");
        }
        let lang = req
            .headers()
            .get("accept-language")
            .map_or("-", |v| v.to_str().unwrap())
            .to_owned();
        respond(
            200,
            &[
                ("cache-control", "max-age=60".into()),
                ("vary", "accept-language".into()),
            ],
            format!("{lang} #{n}"),
        )
    });
    let get = async |lang: &str| c.send("GET", "/v", &[("accept-language", lang)]).await.body;
    assert_eq!(get("en").await, "en #1");
    assert_eq!(get("fr").await, "fr #2");
    assert_eq!(get("en").await, "en #1");
    c.send("POST", "/v", &[]).await;
    assert_eq!(get("fr").await, "fr #4");
    assert_eq!(get("en").await, "en #5");
}

#[tokio::test]
async fn vary_star_is_never_stored() {
    let c = Cache::new(|_, n| {
        respond(
            200,
            &[("cache-control", "max-age=60".into()), ("vary", "*".into())],
            format!("#{n}"),
        )
    });
    c.get("/s").await;
    assert_eq!(c.get("/s").await.body, "#2");
}

#[tokio::test]
async fn request_directives() {
    let c = Cache::new(|_, n| {
        respond(
            200,
            &[
                ("cache-control", "max-age=60".into()),
                ("etag", "\"e\"".into()),
            ],
            format!("#{n}"),
        )
    });
    // only-if-cached on a miss: 504, the origin untouched.
    let a = c
        .send("GET", "/r", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(c.seen.count(), 0);
    c.get("/r").await;
    let a = c
        .send("GET", "/r", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "#1"));
    // max-age=0: too old for this client; min-fresh past what is left too.
    assert_eq!(
        c.send("GET", "/r", &[("cache-control", "max-age=0")])
            .await
            .body,
        "#2"
    );
    assert_eq!(
        c.send("GET", "/r", &[("cache-control", "min-fresh=120")])
            .await
            .body,
        "#3"
    );
    // Pragma: no-cache without Cache-Control revalidates.
    assert_eq!(
        c.send("GET", "/r", &[("pragma", "no-cache")]).await.body,
        "#4"
    );
    assert_eq!(c.seen.count(), 4);
    // A conditional request that the fresh entry matches: 304, no body.
    let a = c
        .send("GET", "/r", &[("if-none-match", "W/\"x\", \"e\"")])
        .await;
    assert_eq!(a.status, StatusCode::NOT_MODIFIED);
    assert_eq!(a.header("etag"), "\"e\"");
    assert!(a.body.is_empty());
    let a = c.send("GET", "/r", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(c.seen.count(), 4);
}

/// A `304` answered from the cache carries the entry's `Age` in seconds,
/// counting the age it arrived with.
#[tokio::test]
async fn not_modified_answers_carry_the_entrys_age() {
    let c = Cache::new(|_, _| {
        respond(
            200,
            &[
                ("cache-control", "max-age=600".into()),
                ("etag", "\"e\"".into()),
                ("age", "30".into()),
            ],
            "v",
        )
    });
    c.get("/r").await;
    let a = c.send("GET", "/r", &[("if-none-match", "\"e\"")]).await;
    assert_eq!(a.status, StatusCode::NOT_MODIFIED);
    let age: u64 = a.header("age").parse().unwrap();
    assert!((30..=31).contains(&age), "{age}");
}

/// `max-stale` lets a client take a stale answer the origin allowed.
#[tokio::test]
async fn max_stale() {
    let c = Cache::new(|_, n| {
        respond(
            200,
            &[
                ("cache-control", "max-age=0".into()),
                ("etag", "\"e\"".into()),
            ],
            format!("#{n}"),
        )
    });
    c.get("/r").await;
    let a = c
        .send("GET", "/r", &[("cache-control", "max-stale=60")])
        .await;
    assert_eq!(a.body, "#1");
    assert!(
        a.header("cache-status").starts_with("cog; hit"),
        "{}",
        a.header("cache-status")
    );
    // Without it, the stale entry is revalidated.
    let a = c.get("/r").await;
    assert!(
        a.header("cache-status").starts_with("cog; fwd=stale"),
        "{}",
        a.header("cache-status")
    );
}

/// `max-stale=N` counts seconds: an entry stale by 60 s (it came 90 s old,
/// fresh for 30; kept for its validator) is taken with `max-stale=100`,
/// not with `max-stale=30`.
#[tokio::test]
async fn max_stale_counts_seconds() {
    let c = Cache::new(|_, n| {
        respond(
            200,
            &[
                ("cache-control", "max-age=30".into()),
                ("age", "90".into()),
                ("etag", format!("\"v{n}\"")),
            ],
            format!("#{n}"),
        )
    });
    c.get("/r").await;
    let a = c
        .send("GET", "/r", &[("cache-control", "max-stale=100")])
        .await;
    assert_eq!(a.body, "#1", "{}", a.header("cache-status"));
    let a = c
        .send("GET", "/r", &[("cache-control", "max-stale=30")])
        .await;
    assert_eq!(a.body, "#2", "{}", a.header("cache-status"));
}

/// A client's own conditional goes to the origin as it sent it: the cache
/// does not put its stale entry's validators in their place (the answer is
/// about the client's copy, not the cache's).
#[tokio::test]
async fn a_clients_conditional_is_forwarded_as_sent() {
    let c = Cache::new(|req, n| {
        let asked = req
            .headers()
            .get("if-none-match")
            .map(|v| v.to_str().unwrap().to_owned());
        if asked.as_deref() == Some("\"mine\"") {
            return respond(304, &[("etag", "\"mine\"".into())], "");
        }
        respond(
            200,
            &[
                ("cache-control", "max-age=0".into()),
                ("etag", format!("\"v{n}\"")),
            ],
            format!("#{n}"),
        )
    });
    c.get("/r").await;
    let a = c.send("GET", "/r", &[("if-none-match", "\"mine\"")]).await;
    assert_eq!(
        c.seen.last_header("if-none-match").as_deref(),
        Some("\"mine\"")
    );
    assert_eq!(a.status, StatusCode::NOT_MODIFIED);
}

/// A `HEAD` that misses is forwarded and nothing is stored: its empty body
/// must never answer a later `GET`.
#[tokio::test]
async fn a_head_miss_stores_nothing() {
    let c = Cache::new(|req, n| {
        let body = if req.method() == http::Method::HEAD {
            String::new()
        } else {
            format!("#{n}")
        };
        respond(200, &[("cache-control", "max-age=600".into())], body)
    });
    let a = c.send("HEAD", "/r", &[]).await;
    assert_eq!(a.body, "");
    let a = c.get("/r").await;
    assert_eq!(a.body, "#2");
    assert_eq!(c.seen.count(), 2);
}

/// `Age` on every answer from the cache includes the age on arrival.
#[tokio::test]
async fn age_counts_from_the_origin() {
    let c = Cache::new(|_, _| {
        respond(
            200,
            &[
                ("cache-control", "max-age=600".into()),
                ("date", date(-100)),
            ],
            "x",
        )
    });
    c.get("/r").await;
    let a = c.get("/r").await;
    let age: u64 = a.header("age").parse().unwrap();
    assert!((100..=102).contains(&age), "{age}");
}

/// Fields for one hop — the hop-by-hop ones and those `Connection` names —
/// are neither stored nor replayed, nor taken from a 304; a 304's
/// `Content-Length` does not replace the stored body's (RFC 9111 §3.1,
/// §3.2).
#[tokio::test]
async fn fields_for_one_hop_are_not_stored() {
    let c = Cache::new(move |req, _| {
        if req.headers().contains_key("if-none-match") {
            return respond(
                304,
                &[
                    ("cache-control", "max-age=60".into()),
                    ("connection", "x-hop-too".into()),
                    ("x-hop-too", "1".into()),
                    ("x-new", "1".into()),
                    ("content-length", "999".into()),
                ],
                "",
            );
        }
        respond(
            200,
            &[
                ("cache-control", "max-age=1".into()),
                ("etag", "\"a\"".into()),
                ("connection", "X-Hop, keep-alive".into()),
                ("keep-alive", "timeout=5".into()),
                ("proxy-connection", "keep-alive".into()),
                ("upgrade", "h2c".into()),
                ("x-hop", "1".into()),
                ("x-end", "1".into()),
            ],
            "body",
        )
    });
    c.get("/r").await;
    let hit = c.get("/r").await;
    assert!(hit.header("cache-status").starts_with("cog; hit"));
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "x-hop",
    ] {
        assert!(!hit.headers.contains_key(name), "{name} replayed");
    }
    assert_eq!(hit.header("x-end"), "1");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    c.get("/r").await;
    assert_eq!(c.seen.count(), 2, "revalidated");
    let hit = c.get("/r").await;
    assert!(hit.header("cache-status").starts_with("cog; hit"));
    assert_eq!((hit.header("x-new"), hit.header("x-end")), ("1", "1"));
    assert!(!hit.headers.contains_key("x-hop-too"));
    assert!(!hit.headers.contains_key("connection"));
    assert_ne!(hit.header("content-length"), "999");
    assert_eq!(hit.body, "body");
}

/// When the origin changes what it varies on, the variants stored under
/// the old list are retired: varying on the old list again later does not
/// bring their answers back.
#[tokio::test]
async fn a_new_vary_list_retires_the_old_variants() {
    let c = Cache::new(|_, n| {
        let vary = if n == 2 { "accept-language" } else { "accept" };
        respond(
            200,
            &[
                ("cache-control", "max-age=60".into()),
                ("vary", vary.into()),
            ],
            format!("#{n}"),
        )
    });
    let get = async |h: &[(&str, &str)]| c.send("GET", "/v", h).await.body;
    assert_eq!(get(&[("accept", "x")]).await, "#1");
    assert_eq!(get(&[("accept", "x")]).await, "#1", "a hit");
    // A miss for another variant: the origin now varies on the language.
    assert_eq!(get(&[("accept", "y")]).await, "#2");
    // Another language: a miss, and the origin varies on `accept` again.
    assert_eq!(get(&[("accept-language", "fr")]).await, "#3");
    // `accept: x` was stored under the first list: not served again.
    assert_eq!(get(&[("accept", "x")]).await, "#4");
}

/// A response is fresh for its own lifetime, however short the TieredCache's
/// TTL: it was stored for `max-age`, and L1 keeps it that long (before,
/// L1 cut it at the cache's TTL and, without L2, the origin was asked
/// again).
#[tokio::test]
async fn a_response_outlives_the_caches_ttl() {
    let cache = TieredCache::builder()
        .ttl(Duration::from_millis(50))
        .build()
        .unwrap();
    let c = Cache::over(cache, |_, n| {
        respond(
            200,
            &[("cache-control", "max-age=60".into())],
            format!("#{n}"),
        )
    });
    c.get("/a").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = c.get("/a").await;
    assert_eq!(a.body, "#1", "{}", a.header("cache-status"));
    assert_eq!(c.seen.count(), 1);
}

/// A short-lived variant does not take its longer-lived siblings with it:
/// the record of which headers a URL varies on outlives every variant
/// stored under it.
#[tokio::test]
async fn a_short_lived_variant_leaves_the_others_cached() {
    let c = Cache::new(|req, n| {
        let lang = req
            .headers()
            .get("accept-language")
            .unwrap()
            .to_str()
            .unwrap();
        let age = if lang == "fr" { "1" } else { "60" };
        respond(
            200,
            &[
                ("cache-control", format!("max-age={age}")),
                ("vary", "accept-language".into()),
            ],
            format!("#{n}"),
        )
    });
    let get = async |lang: &str| c.send("GET", "/v", &[("accept-language", lang)]).await;
    assert_eq!(get("en").await.body, "#1");
    assert_eq!(get("fr").await.body, "#2");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let en = get("en").await;
    assert_eq!(en.body, "#1", "{}", en.header("cache-status"));
    assert_eq!(get("fr").await.body, "#3", "fr expired");
}

/// RFC 9111 §4.1: a header the stored request did not carry matches only
/// requests without it — one carrying it empty is another variant (they
/// used to share one).
#[tokio::test]
async fn an_absent_header_and_an_empty_one_are_different_variants() {
    let c = Cache::new(|_, n| {
        respond(
            200,
            &[
                ("cache-control", "max-age=60".into()),
                ("vary", "x-flag".into()),
            ],
            format!("#{n}"),
        )
    });
    assert_eq!(c.get("/v").await.body, "#1");
    assert_eq!(c.get("/v").await.body, "#1", "absent again: a hit");
    assert_eq!(c.send("GET", "/v", &[("x-flag", "")]).await.body, "#2");
    assert_eq!(c.send("GET", "/v", &[("x-flag", "")]).await.body, "#2");
    assert_eq!(c.get("/v").await.body, "#1");
}

/// RFC 9111 §4.1 compares field values, not text: two values that are not
/// UTF-8 (Latin-1 names, say) are two variants. Read lossily, both were
/// one — the answer for one user served to the other.
#[tokio::test]
async fn values_that_are_not_text_are_different_variants() {
    let c = Cache::new(|_, n| {
        respond(
            200,
            &[
                ("cache-control", "max-age=60".into()),
                ("vary", "x-user".into()),
            ],
            format!("#{n}"),
        )
    });
    let user = async |name: &[u8]| c.send_bytes("GET", "/me", &[("x-user", name)]).await.body;
    assert_eq!(user(b"J\xfcrgen").await, "#1");
    assert_eq!(user(b"J\xfcrgen").await, "#1", "the same bytes: a hit");
    assert_eq!(user(b"J\xe4rgen").await, "#2");
    assert_eq!(user("J\u{fffd}rgen".as_bytes()).await, "#3");
    assert_eq!(user(b"J\xe4rgen").await, "#2");
}
