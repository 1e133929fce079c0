//! The `cache-proxy` example in front of a real origin over real TCP: it
//! forwards every method, header and body, caches what RFC 9111 lets a
//! shared cache keep, revalidates, and invalidates on unsafe methods.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes as AxumBytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[path = "../src/proxy.rs"]
mod proxy;

/// The origin counts what it serves.
#[derive(Clone, Default)]
struct Origin {
    items: Arc<AtomicUsize>,
    revalidations: Arc<AtomicUsize>,
    streamed: Arc<AtomicUsize>,
}

/// A body of unknown length, sent chunked, as a streaming origin's.
struct Chunked(std::collections::VecDeque<Bytes>);

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

async fn streamed(State(o): State<Origin>) -> impl IntoResponse {
    let n = o.streamed.fetch_add(1, Ordering::SeqCst) + 1;
    let parts = [Bytes::from("streamed "), Bytes::from(format!("#{n}"))];
    (
        [("cache-control", "max-age=60")],
        axum::body::Body::new(Chunked(parts.into())),
    )
}

/// For this proxy only: the client is told not to store it.
async fn edge_only(State(o): State<Origin>) -> impl IntoResponse {
    let n = o.items.fetch_add(1, Ordering::SeqCst) + 1;
    (
        [
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=60"),
        ],
        format!("edge #{n}"),
    )
}

async fn item(State(o): State<Origin>) -> impl IntoResponse {
    let n = o.items.fetch_add(1, Ordering::SeqCst) + 1;
    (
        [("cache-control", "max-age=60"), ("etag", "\"item\"")],
        format!("item #{n}"),
    )
}

async fn post_item(headers: HeaderMap, body: AxumBytes) -> impl IntoResponse {
    let custom = headers
        .get("x-custom")
        .map_or("-", |v| v.to_str().unwrap())
        .to_owned();
    let via: Vec<String> = headers
        .get_all("via")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    (
        StatusCode::CREATED,
        [("x-echo", custom), ("x-via", via.join(", "))],
        format!("posted {}", String::from_utf8_lossy(&body)),
    )
}

async fn validated(State(o): State<Origin>, headers: HeaderMap) -> axum::response::Response {
    if headers.get("if-none-match").is_some_and(|v| v == "\"v1\"") {
        o.revalidations.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::NOT_MODIFIED, [("etag", "\"v1\"")]).into_response();
    }
    (
        [("cache-control", "no-cache"), ("etag", "\"v1\"")],
        "validated body",
    )
        .into_response()
}

async fn start_origin() -> (SocketAddr, Origin) {
    let origin = Origin::default();
    let app = Router::new()
        .route(
            "/item",
            get(item)
                .post(post_item)
                .put(post_item)
                .delete(post_item)
                .patch(post_item),
        )
        .route("/validated", get(validated))
        .route("/streamed", get(streamed))
        .route("/edge-only", get(edge_only))
        .with_state(origin.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, origin)
}

async fn start_proxy(upstream: SocketAddr) -> SocketAddr {
    let app = proxy::router(proxy::Settings {
        upstream: format!("http://{upstream}").parse().unwrap(),
        redis: None,
        max_body: 1 << 20,
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn cache_status(&self) -> &str {
        self.headers
            .get("cache-status")
            .map_or("", |v| v.to_str().unwrap())
    }
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    proxy: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_caches_a_real_origin() {
    let (origin_addr, origin) = start_origin().await;
    let proxy = start_proxy(origin_addr).await;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();

    // Stored, then answered from the cache.
    let a = send(&client, proxy, Method::GET, "/item", &[], "").await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "item #1"));
    assert_eq!(a.cache_status(), "cog; fwd=uri-miss; stored");
    let a = send(&client, proxy, Method::GET, "/item", &[], "").await;
    assert_eq!(a.body, "item #1");
    assert!(
        a.cache_status().starts_with("cog; hit"),
        "{}",
        a.cache_status()
    );
    assert_eq!(a.headers["age"], "0");
    let a = send(&client, proxy, Method::HEAD, "/item", &[], "").await;
    assert!(a.cache_status().starts_with("cog; hit") && a.body.is_empty());
    assert_eq!(origin.items.load(Ordering::SeqCst), 1);

    // Every unsafe method reaches the origin with its headers and body,
    // and invalidates the URI.
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let a = send(
            &client,
            proxy,
            method.clone(),
            "/item",
            &[("x-custom", "hi"), ("via", "1.0 edge")],
            "payload",
        )
        .await;
        assert_eq!(a.status, StatusCode::CREATED, "{method}");
        assert_eq!(a.body, "posted payload", "{method}");
        assert_eq!(a.headers["x-echo"], "hi", "{method}");
        // Both ways, the proxy says it was there, after any proxy before.
        assert_eq!(
            a.headers["x-via"], "1.0 edge, 1.1 cog-cache-proxy",
            "{method}"
        );
        let via: Vec<_> = a.headers.get_all("via").iter().collect();
        assert_eq!(via, ["1.1 cog-cache-proxy"], "{method}");
        let a = send(&client, proxy, Method::GET, "/item", &[], "").await;
        assert_eq!(a.cache_status(), "cog; fwd=uri-miss; stored", "{method}");
    }
    assert_eq!(origin.items.load(Ordering::SeqCst), 5);

    // no-cache: revalidated each time, the 304 answered with the stored body.
    send(&client, proxy, Method::GET, "/validated", &[], "").await;
    let a = send(&client, proxy, Method::GET, "/validated", &[], "").await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (StatusCode::OK, "validated body")
    );
    assert!(
        a.cache_status()
            .starts_with("cog; fwd=stale; fwd-status=304"),
        "{}",
        a.cache_status()
    );
    assert_eq!(origin.revalidations.load(Ordering::SeqCst), 1);

    // Unknown paths go through (404 from the origin, not stored without
    // freshness information).
    let a = send(&client, proxy, Method::GET, "/nothing", &[], "").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start_proxy(closed).await;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let a = send(&client, proxy, Method::GET, "/x", &[], "").await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
}

/// An upstream the proxy would not honour as written is refused when the
/// proxy starts, by what is wrong with it — not answered `502` on every
/// request (`https://`: the client speaks plain HTTP) or forwarded to
/// another path than the one given.
#[tokio::test]
async fn an_upstream_the_proxy_cannot_honour_is_refused_at_start() {
    for (upstream, why) in [
        ("https://127.0.0.1:8443", "only http://"),
        ("/just/a/path", "only http://"),
        ("http://127.0.0.1:8000/api", "path or query"),
        ("http://127.0.0.1:8000/?k=v", "path or query"),
        ("http://127.0.0.1:8000?k=v", "path or query"),
    ] {
        let err = proxy::router(proxy::Settings {
            upstream: upstream.parse().unwrap(),
            redis: None,
            max_body: 1 << 20,
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("{upstream} was taken"));
        assert!(err.to_string().contains(why), "{upstream}: {err}");
    }
    for upstream in [
        "http://127.0.0.1:8000",
        "http://127.0.0.1:8000/",
        "http://origin",
    ] {
        let settings = proxy::Settings {
            upstream: upstream.parse().unwrap(),
            redis: None,
            max_body: 1 << 20,
        };
        assert!(proxy::router(settings).await.is_ok(), "{upstream}");
    }
}

/// An answer the origin streams (chunked, its length unknown) is passed on
/// and then stored; `CDN-Cache-Control` speaks to this proxy, while the
/// client still gets the origin's `Cache-Control`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_stores_streamed_answers_and_obeys_cdn_cache_control() {
    let (origin_addr, origin) = start_origin().await;
    let proxy = start_proxy(origin_addr).await;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();

    let a = send(&client, proxy, Method::GET, "/streamed", &[], "").await;
    assert_eq!(a.body, "streamed #1");
    assert_eq!(a.headers["transfer-encoding"], "chunked");
    let mut hit = None;
    for _ in 0..200 {
        let a = send(&client, proxy, Method::GET, "/streamed", &[], "").await;
        if a.cache_status().starts_with("cog; hit") {
            hit = Some(a.body);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let hit = hit.expect("stored once it had ended");
    let fetched = origin.streamed.load(Ordering::SeqCst);
    assert_eq!(hit, format!("streamed #{fetched}"), "the last one fetched");

    let a = send(&client, proxy, Method::GET, "/edge-only", &[], "").await;
    assert_eq!(a.cache_status(), "cog; fwd=uri-miss; stored");
    let a = send(&client, proxy, Method::GET, "/edge-only", &[], "").await;
    assert!(
        a.cache_status().starts_with("cog; hit"),
        "{}",
        a.cache_status()
    );
    assert_eq!(a.body, "edge #1");
    assert_eq!(a.headers["cache-control"], "no-store");
}

/// An upstream that closes a kept-alive connection under the next request
/// on it (as a server's idle timeout can, just as the proxy reuses the
/// connection): an idempotent request is sent again, on a new connection,
/// and answered — its body too, if small; a `POST` is not (`502`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_lost_with_a_reused_connection_is_sent_again_if_it_can_be() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(parking_lot::Mutex::new(String::new()));
    let (s, l) = (served.clone(), last.clone());
    tokio::spawn(async move {
        // Each connection: one request answered, the next one read and
        // dropped with the connection.
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let (s, l) = (s.clone(), l.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut answered = false;
                loop {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 || answered {
                        return;
                    }
                    answered = true;
                    *l.lock() = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let n = s.fetch_add(1, Ordering::SeqCst) + 1;
                    let body = format!("answer #{n}");
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncache-control: no-store\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    conn.write_all(format!("{head}{body}").as_bytes())
                        .await
                        .unwrap();
                }
            });
        }
    });
    let proxy = start_proxy(origin_addr).await;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();

    let a = send(&client, proxy, Method::GET, "/x", &[], "").await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "answer #1"));
    // The proxy reuses its connection; the upstream drops it under each
    // of these, then answers them on a new one.
    let a = send(&client, proxy, Method::GET, "/x", &[], "").await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "answer #2"));
    let a = send(&client, proxy, Method::PUT, "/x", &[], "payload").await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "answer #3"));
    let put = last.lock().clone();
    assert!(
        put.starts_with("PUT /x") && put.contains("content-length: 7\r\n"),
        "{put}"
    );
    // A POST lost the same way is not sent again.
    let a = send(&client, proxy, Method::POST, "/x", &[], "payload").await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(served.load(Ordering::SeqCst), 3);
}
