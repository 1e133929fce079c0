//! The caching reverse proxy: [`HttpCacheLayer`] over a hyper client that
//! forwards every method, header and body to one upstream origin.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use cog_cache::TieredCache;
use cog_cache::http::{HttpCacheLayer, StoredResponse};
use http::header::{self, HeaderName};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body as _, Bytes};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, service_fn};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the proxy needs.
pub(crate) struct Settings {
    /// The origin, e.g. `http://127.0.0.1:8000`.
    pub(crate) upstream: Uri,
    /// Redis for a shared L2 (`redis://…`); `None` keeps the cache in
    /// memory.
    pub(crate) redis: Option<String>,
    /// Largest body stored.
    pub(crate) max_body: usize,
}

/// Largest request body read first so that an idempotent request can be
/// sent again (see `forward`).
const REPLAYED_BODY: u64 = 64 << 10;

/// Hop-by-hop fields (RFC 9110 §7.6.1): never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// The proxy's router: every request, whatever its method or path, goes
/// through the cache to the upstream.
///
/// # Errors
/// An upstream this proxy cannot forward to as given — not `http://`
/// (the client speaks plain HTTP: `https://` would answer every request
/// `502`), without a host, or with a path or query (requests keep their
/// own path: a base path would be dropped silently) — or a Redis that
/// cannot be set up.
pub(crate) async fn router(settings: Settings) -> Result<Router, BoxError> {
    check_upstream(&settings.upstream)?;
    let mut cache = TieredCache::<String, StoredResponse>::builder().l1_capacity_bytes(256 << 20);
    if let Some(url) = &settings.redis {
        cache = cache
            .redis(cog_ratelimit::store::connect(url).await?)
            .schema("cache-proxy-v1")
            .redis_timeout(Duration::from_millis(100));
    }
    let cache = cache.build()?;
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    let upstream = settings.upstream;
    let forward = service_fn(move |req: Request<Body>| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move { Ok::<_, Infallible>(forward(&client, &upstream, req).await) }
    });
    // The proxy acts for the origin, as a CDN does: `CDN-Cache-Control`
    // (RFC 9213) speaks to it, over `Cache-Control`.
    let cached = HttpCacheLayer::new(cache)
        .max_body(settings.max_body)
        .targeted([HeaderName::from_static("cdn-cache-control")])
        .layer(forward);
    Ok(Router::new().fallback_service(cached))
}

/// Refuses an upstream URL `forward` would not honour as written.
fn check_upstream(upstream: &Uri) -> Result<(), BoxError> {
    let refuse = |why: &str| Err(format!("--upstream {upstream}: {why}").into());
    if upstream.scheme_str() != Some("http") {
        return refuse(
            "only http:// origins are supported (put TLS in front of or behind the proxy)",
        );
    }
    if upstream.authority().is_none() {
        return refuse("no host");
    }
    if upstream.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return refuse("a path or query would be dropped: requests keep their own path");
    }
    Ok(())
}

/// Sends `req` to `upstream` (same method, path, query, headers — `Host`
/// included — and body, minus hop-by-hop fields, plus this proxy in `Via`);
/// a `502` when the upstream cannot be reached, or fails the request (an
/// idempotent one with a small body, or none, is tried twice when the
/// first try failed on an open connection).
async fn forward(
    client: &Client<HttpConnector, Body>,
    upstream: &Uri,
    req: Request<Body>,
) -> Response<BoxBody<Bytes, BoxError>> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut uri = Uri::builder().path_and_query(path);
    if let Some(scheme) = upstream.scheme() {
        uri = uri.scheme(scheme.clone());
    }
    if let Some(authority) = upstream.authority() {
        uri = uri.authority(authority.clone());
    }
    parts.uri = match uri.build() {
        Ok(uri) => uri,
        Err(_) => return bad_gateway(),
    };
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers, parts.version);
    // An idempotent request can be sent again: once, when the upstream
    // closed a kept-alive connection just as it was reused (a server's idle
    // timeout racing the request). Its body, if small and of a known
    // length, is read first to be sent twice; a larger or streamed one goes
    // as it comes, once.
    let replay = parts.method.is_idempotent()
        && body.size_hint().exact().is_some_and(|n| n <= REPLAYED_BODY);
    let sent = if replay {
        let Ok(bytes) = body
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
        else {
            return status(StatusCode::BAD_REQUEST, "the request body failed");
        };
        let again = Request::from_parts(clone_head(&parts), Body::from(bytes.clone()));
        match client
            .request(Request::from_parts(parts, Body::from(bytes)))
            .await
        {
            Err(e) if !e.is_connect() => client.request(again).await,
            sent => sent,
        }
    } else {
        client.request(Request::from_parts(parts, body)).await
    };
    match sent {
        Ok(res) => {
            let (mut parts, body) = res.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            add_via(&mut parts.headers, parts.version);
            Response::from_parts(parts, body.map_err(BoxError::from).boxed())
        }
        Err(_) => bad_gateway(),
    }
}

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // And whatever `Connection` names.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Appends this proxy to `Via` (RFC 9110 §7.6.3: every message a proxy
/// forwards says so), after the protocol the message came in.
fn add_via(headers: &mut http::HeaderMap, version: http::Version) {
    let via = match version {
        http::Version::HTTP_10 => "1.0 cog-cache-proxy",
        http::Version::HTTP_2 => "2 cog-cache-proxy",
        http::Version::HTTP_3 => "3 cog-cache-proxy",
        _ => "1.1 cog-cache-proxy",
    };
    headers.append(header::VIA, http::HeaderValue::from_static(via));
}

fn bad_gateway() -> Response<BoxBody<Bytes, BoxError>> {
    status(StatusCode::BAD_GATEWAY, "upstream unreachable")
}

fn status(status: StatusCode, text: &'static str) -> Response<BoxBody<Bytes, BoxError>> {
    let mut res = Response::new(
        http_body_util::Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(BoxError::from)
            .boxed(),
    );
    *res.status_mut() = status;
    res
}

/// A request's method, target, version and fields, for sending it again
/// (its extensions stay behind: the upstream never sees them).
fn clone_head(parts: &http::request::Parts) -> http::request::Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}
