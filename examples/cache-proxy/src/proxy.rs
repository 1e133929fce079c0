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
use hyper::body::Bytes;
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
    let cached = HttpCacheLayer::new(cache)
        .max_body(settings.max_body)
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
/// a `502` when the upstream cannot be reached.
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
    match client.request(Request::from_parts(parts, body)).await {
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
    let mut res = Response::new(
        http_body_util::Full::new(Bytes::from_static(b"upstream unreachable"))
            .map_err(BoxError::from)
            .boxed(),
    );
    *res.status_mut() = StatusCode::BAD_GATEWAY;
    res
}
