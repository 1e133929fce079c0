//! An HTTP response cache as tower middleware, on a [`TieredCache`].
//!
//! [`HttpCacheLayer`] answers `GET` and `HEAD` requests from the cache when
//! it can, and stores cacheable responses of the inner service:
//!
//! - the key is the method (`HEAD` shares `GET`'s entries), the effective
//!   request URI (scheme, host, path and query: two hosts served by one
//!   service never share entries), the values of the request headers the
//!   response's `Vary` names, and the tenant;
//! - a response is stored only if its `Cache-Control` allows a shared
//!   cache to (`max-age` or `s-maxage`, no `no-store`, no `private`), it
//!   has no `Set-Cookie`, its status is cacheable (200, 203, 204, 300, 301,
//!   404, 405, 410, 414, 501), `Vary` is not `*`, and its body is known to
//!   fit [`max_body`](HttpCacheLayer::max_body);
//! - `stale-while-revalidate=N`: a stale answer is served for N seconds
//!   while one background request refreshes it; `stale-if-error=N`: a stale
//!   answer is served for N seconds instead of a 5xx;
//! - requests with `Authorization` are neither answered from nor stored in
//!   the cache, unless [`cache_authorized`](HttpCacheLayer::cache_authorized)
//!   allows it for the request; the tenant then isolates entries, and
//!   without one (no [`tenant_with`](HttpCacheLayer::tenant_with), or it
//!   finds none) each credential gets a namespace of its own, named by the
//!   SHA-256 of its `Authorization` value;
//! - `max-age`, `s-maxage` and the `stale-*` windows are capped at 2^31
//!   seconds (RFC 9111 §1.2.2), and an upstream `Age` counts against the
//!   response's freshness;
//! - requests with `Cache-Control: no-cache` or `no-store` go to the inner
//!   service;
//! - every answer carries `Cache-Status` (RFC 9211), e.g.
//!   `cog; hit; ttl=27` or `cog; fwd=uri-miss; stored`, and hits carry
//!   `Age`.
//!
//! # Example
//!
//! ```
//! use cog_cache::TieredCache;
//! use cog_cache::http::{HttpCacheLayer, StoredResponse};
//!
//! let cache: TieredCache<String, StoredResponse> = TieredCache::builder().build().unwrap();
//! let layer = HttpCacheLayer::new(cache)
//!     .tenant_with(|parts| parts.headers.get("x-tenant")?.to_str().ok().map(str::to_owned));
//! # let _ = layer;
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full};
use serde::{Deserialize, Serialize};
use tower_layer::Layer;
use tower_service::Service;

use crate::cache::{TieredCache, unix_ms};
use crate::marker::Markers;

/// The response body of [`HttpCache`]: a cached (or buffered) body, or the
/// inner service's body passed through.
pub type CacheBody<B> = Either<Full<Bytes>, B>;

type TenantFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;
type AllowFn = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// A stored HTTP response, or the `Vary` header names of a URI.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredResponse {
    /// The response varies on these request headers (lower-case names):
    /// look again with their values in the key.
    Vary(Vec<String>),
    /// A complete response.
    Full(Stored),
}

/// A complete stored response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    status: u16,
    headers: Vec<(String, Bytes)>,
    body: Bytes,
    /// Unix ms.
    stored_at: u64,
    fresh_until: u64,
    swr_until: u64,
    sie_until: u64,
}

/// Caches HTTP responses; see the [module docs](self).
#[derive(Clone)]
pub struct HttpCacheLayer {
    shared: Arc<Shared>,
}

struct Shared {
    cache: TieredCache<String, StoredResponse>,
    tenant: Option<TenantFn>,
    authorized: Option<AllowFn>,
    max_body: usize,
    revalidating: Arc<Markers<String>>,
}

/// Most background revalidations running at once, per layer.
const MAX_REVALIDATIONS: usize = 10_000;

impl fmt::Debug for HttpCacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCacheLayer")
            .field("max_body", &self.shared.max_body)
            .finish_non_exhaustive()
    }
}

impl HttpCacheLayer {
    /// Caches responses in `cache` (its TTL settings do not matter: each
    /// entry lives as long as its `Cache-Control` says).
    pub fn new(cache: TieredCache<String, StoredResponse>) -> Self {
        HttpCacheLayer {
            shared: Arc::new(Shared {
                cache,
                tenant: None,
                authorized: None,
                max_body: 1 << 20,
                revalidating: Markers::new(MAX_REVALIDATIONS),
            }),
        }
    }

    fn with(self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::try_unwrap(self.shared).unwrap_or_else(|s| Shared {
            cache: s.cache.clone(),
            tenant: s.tenant.clone(),
            authorized: s.authorized.clone(),
            max_body: s.max_body,
            revalidating: Markers::new(MAX_REVALIDATIONS),
        });
        f(&mut shared);
        HttpCacheLayer {
            shared: Arc::new(shared),
        }
    }

    /// Namespaces entries by the tenant `tenant` finds in the request
    /// (`None`: the shared namespace). Tenant A never sees tenant B's
    /// responses.
    pub fn tenant_with(
        self,
        tenant: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.with(|s| s.tenant = Some(Arc::new(tenant)))
    }

    /// Allows caching for requests with `Authorization` when `allow` says so
    /// (e.g. for some routes). Off by default.
    pub fn cache_authorized(self, allow: impl Fn(&Parts) -> bool + Send + Sync + 'static) -> Self {
        self.with(|s| s.authorized = Some(Arc::new(allow)))
    }

    /// Largest body stored (default 1 MiB). Larger or unknown-length bodies
    /// are passed through, not stored.
    pub fn max_body(self, bytes: usize) -> Self {
        self.with(|s| s.max_body = bytes)
    }
}

impl<S> Layer<S> for HttpCacheLayer {
    type Service = HttpCache<S>;

    fn layer(&self, inner: S) -> HttpCache<S> {
        HttpCache {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Middleware built by [`HttpCacheLayer`].
#[derive(Clone)]
pub struct HttpCache<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for HttpCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCache")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> HttpCache<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the middleware, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Response future of [`HttpCache`].
pub type ResponseFuture<B, E> = cog_core::ResponseFuture<CacheBody<B>, E>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for HttpCache<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(run(self.shared.clone(), inner, req))
    }
}

/// Why a request bypassed the cache, for `Cache-Status: fwd=…`.
enum Bypass {
    Method,
    Request,
}

fn bypass(shared: &Shared, parts: &Parts) -> Option<Bypass> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return Some(Bypass::Method);
    }
    if parts.headers.contains_key(header::AUTHORIZATION)
        && !shared.authorized.as_ref().is_some_and(|f| f(parts))
    {
        return Some(Bypass::Request);
    }
    let cc = directives(&parts.headers);
    if cc.no_cache || cc.no_store {
        return Some(Bypass::Request);
    }
    None
}

/// The method (`HEAD` is answered from `GET`'s entries) and the effective
/// request URI (RFC 9110 §7.1): scheme (`http` unless the URI names one),
/// host (from the URI, else `Host`; lower-cased), path and query.
fn base_key(parts: &Parts) -> String {
    let scheme = parts.uri.scheme_str().unwrap_or("http");
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(header::HOST)?.to_str().ok())
        .unwrap_or("");
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut key = String::with_capacity(8 + scheme.len() + host.len() + path.len());
    key.push_str("GET ");
    key.push_str(scheme);
    key.push_str("://");
    key.extend(host.chars().map(|c| c.to_ascii_lowercase()));
    key.push_str(path);
    key
}

/// The namespace of a request's entries: its tenant; without one, for a
/// request with `Authorization` (allowed by `cache_authorized`), its own
/// credential's; else the shared one.
fn namespace(shared: &Shared, parts: &Parts) -> String {
    if let Some(tenant) = shared.tenant.as_ref().and_then(|f| f(parts)) {
        return tenant;
    }
    match parts.headers.get(header::AUTHORIZATION) {
        // A tenant would have to be this very string, digest included, to
        // share these entries.
        Some(auth) => format!("\u{1}auth:{}", cog_core::keys::sha256_hex(auth.as_bytes())),
        None => String::new(),
    }
}

fn vary_key(base: &str, names: &[String], headers: &HeaderMap) -> String {
    let mut key = String::with_capacity(base.len() + 32 * names.len());
    key.push_str(base);
    for name in names {
        key.push('\n');
        key.push_str(name);
        key.push('=');
        for (i, v) in headers.get_all(name.as_str()).iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
    }
    key
}

async fn run<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    if let Some(why) = bypass(&shared, &parts) {
        let status = match why {
            Bypass::Method => "cog; fwd=method",
            Bypass::Request => "cog; fwd=request",
        };
        let mut res = inner.call(Request::from_parts(parts, body)).await?;
        set_status(res.headers_mut(), status);
        return Ok(res.map(Either::Right));
    }
    let cache = shared.cache.tenant(&namespace(&shared, &parts));
    let base = base_key(&parts);
    let head = parts.method == Method::HEAD;

    // Look up: URI, then its Vary variant.
    let mut fwd = "uri-miss";
    let mut stale: Option<(String, Stored)> = None;
    let mut lookup_key = base.clone();
    let mut entry = cache.get(&base).await;
    if let Some(StoredResponse::Vary(names)) = &entry {
        lookup_key = vary_key(&base, names, &parts.headers);
        entry = cache.get(&lookup_key).await;
        fwd = "vary-miss";
    }
    if let Some(StoredResponse::Full(stored)) = entry {
        let now = unix_ms();
        if now < stored.fresh_until {
            return Ok(answer(&stored, head, now, "hit"));
        }
        if now < stored.swr_until {
            revalidate(&shared, &cache, inner, &parts, lookup_key);
            return Ok(answer(&stored, head, now, "hit"));
        }
        fwd = "stale";
        stale = Some((lookup_key, stored));
    }

    // Forward.
    let req_headers = parts.headers.clone();
    let requested_at = unix_ms();
    let result = inner.call(Request::from_parts(parts, body)).await;
    let res = match result {
        Ok(res) => res,
        Err(e) => {
            if let Some((_, s)) = stale.filter(|(_, s)| unix_ms() < s.sie_until) {
                return Ok(answer(&s, head, unix_ms(), "hit"));
            }
            return Err(e);
        }
    };
    if res.status().is_server_error()
        && let Some((_, s)) = stale.as_ref().filter(|(_, s)| unix_ms() < s.sie_until)
    {
        return Ok(answer(s, head, unix_ms(), "hit"));
    }
    let status_prefix = format!("cog; fwd={fwd}");
    if head {
        let mut res = res;
        set_status(res.headers_mut(), &status_prefix);
        return Ok(res.map(Either::Right));
    }
    let sent = Sent {
        base: &base,
        headers: &req_headers,
        at: requested_at,
    };
    Ok(store_response(&shared, &cache, sent, res, &status_prefix).await)
}

/// The forwarded request a response answers.
struct Sent<'a> {
    /// Its cache key before `Vary`.
    base: &'a str,
    headers: &'a HeaderMap,
    /// When it was sent (unix ms).
    at: u64,
}

/// Stores `res` if it is cacheable and answers with it.
async fn store_response<ResBody>(
    shared: &Shared,
    cache: &TieredCache<String, StoredResponse>,
    sent: Sent<'_>,
    res: Response<ResBody>,
    status_prefix: &str,
) -> Response<CacheBody<ResBody>>
where
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let plan = match storable(shared, &res) {
        Some(plan) => plan,
        None => {
            let mut res = res;
            set_status(res.headers_mut(), status_prefix);
            return res.map(Either::Right);
        }
    };
    let (mut head, body) = res.into_parts();
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            // The body failed midway: answer with an empty 502, store
            // nothing.
            let mut res = Response::new(Either::Left(Full::new(Bytes::new())));
            *res.status_mut() = StatusCode::BAD_GATEWAY;
            set_status(res.headers_mut(), status_prefix);
            return res;
        }
    };
    let now = unix_ms();
    // RFC 9111 §4.2.3: the age it had upstream, plus the time the request
    // took (it may have waited that long somewhere before answering).
    let initial_age_ms = plan
        .age
        .saturating_mul(1000)
        .saturating_add(now.saturating_sub(sent.at));
    let stored_at = now.saturating_sub(initial_age_ms);
    let secs = |s: u64| stored_at.saturating_add(s.saturating_mul(1000));
    let stored = Stored {
        status: head.status.as_u16(),
        headers: head
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
            .collect(),
        body: bytes.clone(),
        stored_at,
        fresh_until: secs(plan.max_age),
        swr_until: secs(plan.max_age + plan.swr),
        sie_until: secs(plan.max_age + plan.sie),
    };
    let until = stored.swr_until.max(stored.sie_until);
    if until <= now {
        // Already stale past every window on arrival: nothing to serve.
        set_status(&mut head.headers, status_prefix);
        return Response::from_parts(head, Either::Left(Full::new(bytes)));
    }
    let lifetime = Duration::from_millis(until - now).max(Duration::from_secs(1));
    let key = if plan.vary.is_empty() {
        sent.base.to_owned()
    } else {
        cache
            .insert_with_ttl(
                sent.base.to_owned(),
                StoredResponse::Vary(plan.vary.clone()),
                lifetime,
            )
            .await;
        vary_key(sent.base, &plan.vary, sent.headers)
    };
    cache
        .insert_with_ttl(key, StoredResponse::Full(stored), lifetime)
        .await;
    set_status(&mut head.headers, &format!("{status_prefix}; stored"));
    Response::from_parts(head, Either::Left(Full::new(bytes)))
}

struct Plan {
    /// `Age` as the response arrived (seconds).
    age: u64,
    max_age: u64,
    swr: u64,
    sie: u64,
    vary: Vec<String>,
}

fn storable<B: Body>(shared: &Shared, res: &Response<B>) -> Option<Plan> {
    const CACHEABLE: [u16; 10] = [200, 203, 204, 300, 301, 404, 405, 410, 414, 501];
    if !CACHEABLE.contains(&res.status().as_u16()) || res.headers().contains_key(header::SET_COOKIE)
    {
        return None;
    }
    let cc = directives(res.headers());
    if cc.no_store || cc.private || cc.no_cache {
        return None;
    }
    let max_age = cc.s_maxage.or(cc.max_age)?;
    let mut vary = Vec::new();
    for v in res.headers().get_all(header::VARY) {
        for name in v.to_str().ok()?.split(',') {
            let name = name.trim().to_ascii_lowercase();
            if name == "*" {
                return None;
            }
            if !name.is_empty() && !vary.contains(&name) {
                vary.push(name);
            }
        }
    }
    vary.sort();
    // Only bodies known to fit are buffered.
    let fits = res
        .body()
        .size_hint()
        .upper()
        .is_some_and(|n| n as usize <= shared.max_body);
    if !fits {
        return None;
    }
    let age = res
        .headers()
        .get(header::AGE)
        .and_then(|v| delta_seconds(v.to_str().ok()?.trim()))
        .unwrap_or(0);
    Some(Plan {
        age,
        max_age,
        swr: cc.swr.unwrap_or(0),
        sie: cc.sie.unwrap_or(0),
        vary,
    })
}

#[derive(Default)]
struct Directives {
    no_store: bool,
    no_cache: bool,
    private: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
    swr: Option<u64>,
    sie: Option<u64>,
}

/// Parses `Cache-Control`; malformed directives are ignored.
fn directives(headers: &HeaderMap) -> Directives {
    let mut d = Directives::default();
    for v in headers.get_all(header::CACHE_CONTROL) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(',') {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (part.trim(), None),
            };
            let secs = || value.and_then(delta_seconds);
            match name.to_ascii_lowercase().as_str() {
                "no-store" => d.no_store = true,
                "no-cache" => d.no_cache = true,
                "private" => d.private = true,
                "max-age" => d.max_age = secs(),
                "s-maxage" => d.s_maxage = secs(),
                "stale-while-revalidate" => d.swr = secs(),
                "stale-if-error" => d.sie = secs(),
                _ => {}
            }
        }
    }
    d
}

/// The largest delta-seconds value honoured; larger ones count as this
/// (RFC 9111 §1.2.2).
const MAX_DELTA: u64 = 1 << 31;

/// Parses delta-seconds: digits only, capped at [`MAX_DELTA`] however many
/// there are.
fn delta_seconds(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().map_or(MAX_DELTA, |n| n.min(MAX_DELTA)))
}

fn set_status(headers: &mut HeaderMap, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static("cache-status"), v);
    }
}

/// A response from a stored entry.
fn answer<B>(stored: &Stored, head: bool, now: u64, kind: &str) -> Response<CacheBody<B>> {
    let body = if head {
        Bytes::new()
    } else {
        stored.body.clone()
    };
    let mut res = Response::new(Either::Left(Full::new(body)));
    *res.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let headers = res.headers_mut();
    headers.reserve(stored.headers.len() + 2);
    for (name, value) in &stored.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_maybe_shared(value.clone()),
        ) {
            headers.append(n, v);
        }
    }
    let age = now.saturating_sub(stored.stored_at) / 1000;
    headers.insert(header::AGE, HeaderValue::from(age));
    let ttl = (stored.fresh_until as i64 - now as i64).div_euclid(1000);
    set_status(headers, &format!("cog; {kind}; ttl={ttl}"));
    res
}

/// Refreshes a stale entry in the background, once.
fn revalidate<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    cache: &TieredCache<String, StoredResponse>,
    mut inner: S,
    parts: &Parts,
    key: String,
) where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Released however the revalidation ends, panics included.
    let Some(mark) = shared
        .revalidating
        .mark(format!("{}\u{0}{key}", cache.tenant_id()))
    else {
        return;
    };
    let mut req = Request::new(ReqBody::default());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = parts.uri.clone();
    *req.headers_mut() = parts.headers.clone();
    let base = base_key(parts);
    let req_headers = parts.headers.clone();
    let (shared, cache) = (shared.clone(), cache.clone());
    tokio::spawn(async move {
        let _mark = mark;
        let at = unix_ms();
        // Readiness: a clone of a ready service may need polling first.
        if std::future::poll_fn(|cx| inner.poll_ready(cx))
            .await
            .is_ok()
            && let Ok(res) = inner.call(req).await
            && !res.status().is_server_error()
        {
            let sent = Sent {
                base: &base,
                headers: &req_headers,
                at,
            };
            store_response(&shared, &cache, sent, res, "cog").await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cache_control() {
        let mut h = HeaderMap::new();
        h.append(
            header::CACHE_CONTROL,
            "public, max-age=60, s-maxage=\"30\"".parse().unwrap(),
        );
        h.append(
            header::CACHE_CONTROL,
            "stale-while-revalidate=5, stale-if-error=x"
                .parse()
                .unwrap(),
        );
        let d = directives(&h);
        assert_eq!(
            (d.max_age, d.s_maxage, d.swr, d.sie),
            (Some(60), Some(30), Some(5), None)
        );
        assert!(!d.no_store && !d.private);
    }

    #[test]
    fn delta_seconds_are_digits_capped_at_two_to_the_31() {
        assert_eq!(delta_seconds("0"), Some(0));
        assert_eq!(delta_seconds("60"), Some(60));
        assert_eq!(delta_seconds("2147483648"), Some(MAX_DELTA));
        assert_eq!(delta_seconds("2147483649"), Some(MAX_DELTA));
        assert_eq!(delta_seconds("18446744073709551616"), Some(MAX_DELTA));
        assert_eq!(delta_seconds(&"9".repeat(100)), Some(MAX_DELTA));
        for junk in ["", "-1", "+5", "1.5", "1e3", " 5", "x"] {
            assert_eq!(delta_seconds(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn vary_keys_differ_by_header_value() {
        let mut a = HeaderMap::new();
        a.insert("accept-language", "en".parse().unwrap());
        let mut b = HeaderMap::new();
        b.insert("accept-language", "fr".parse().unwrap());
        let names = vec!["accept-language".to_owned()];
        assert_ne!(vary_key("GET /", &names, &a), vary_key("GET /", &names, &b));
        assert_eq!(
            vary_key("GET /", &names, &a),
            vary_key("GET /", &names, &a.clone())
        );
    }
}
