//! An HTTP response cache as tower middleware, on a [`TieredCache`]: a
//! shared cache in the sense of RFC 9111.
//!
//! [`HttpCacheLayer`] answers `GET` and `HEAD` requests from the cache when
//! it can, and stores cacheable responses of the inner service:
//!
//! - **Key**: the method (`HEAD` is answered from `GET`'s entries), the
//!   effective request URI (scheme, host, path and query: two hosts served
//!   by one service never share entries), the values of the request
//!   headers the response's `Vary` names, and the tenant.
//! - **Storing** (§3): final responses other than `206` and `304`, without
//!   `no-store`, `private` or `Set-Cookie`, `Vary` not `*`, the body known
//!   to fit [`max_body`](HttpCacheLayer::max_body), and with explicit
//!   freshness (`s-maxage`, `max-age`, `Expires`), or a heuristically
//!   cacheable status (`200`, `203`, `204`, `300`, `301`, `308`, `404`,
//!   `405`, `410`, `414`, `501`: 10 % of the time since `Last-Modified`, at
//!   most a day), or validators to revalidate with.
//! - **Freshness** (§4.2): `s-maxage`, then `max-age`, then `Expires` −
//!   `Date`; delta-seconds capped at 2^31; the age a response had on
//!   arrival (`Age`, `Date`, the time the request took) counts against it
//!   and shows in `Age` on every answer from the cache.
//! - **Revalidation** (§4.3): a stale entry (or one stored with
//!   `no-cache`) with an `ETag` or `Last-Modified` is revalidated with
//!   `If-None-Match` / `If-Modified-Since`; a `304` updates the stored
//!   headers and freshness and the stored response answers. `must-revalidate`,
//!   `proxy-revalidate` and `s-maxage` forbid serving it stale otherwise.
//! - **Stale serving**: `stale-while-revalidate=N` serves a stale answer
//!   for N seconds while one background request revalidates it;
//!   `stale-if-error=N` serves it instead of a `5xx` or an error.
//! - **Request directives**: `no-store` (forwarded, nothing stored),
//!   `no-cache` and `Pragma: no-cache` (revalidated), `max-age`,
//!   `min-fresh`, `max-stale`, `only-if-cached` (`504` on a miss). A
//!   conditional request (`If-None-Match`, `If-Modified-Since`) that a
//!   fresh entry matches is answered `304`.
//! - **Invalidation** (§4.4): a non-error answer to an unsafe method
//!   (`POST`, `PUT`, `DELETE`, `PATCH`, …) drops the entries of its URI and
//!   of its `Location` and `Content-Location` on the same host — in the
//!   request's namespace and the shared one, on every instance.
//! - **Authorization**: requests with `Authorization` are neither answered
//!   from nor stored in the cache, unless
//!   [`cache_authorized`](HttpCacheLayer::cache_authorized) allows it for
//!   the request; the tenant then isolates entries, and without one (no
//!   [`tenant_with`](HttpCacheLayer::tenant_with), or it finds none) each
//!   credential gets a namespace of its own, named by the SHA-256 of its
//!   `Authorization` value.
//! - Every answer carries `Cache-Status` (RFC 9211), e.g.
//!   `cog; hit; ttl=27`, `cog; fwd=uri-miss; stored` or
//!   `cog; fwd=stale; fwd-status=304; stored`.
//!
//! Entries with validators are kept an hour past their freshness (and
//! stale windows) for revalidation.
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

mod cache_control;
mod freshness;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full};
use serde::{Deserialize, Serialize};
use tower_layer::Layer;
use tower_service::Service;

use self::cache_control::CacheControl;
use self::freshness::{Reuse, unix_ms};
use crate::cache::TieredCache;
use crate::marker::Markers;

/// The response body of [`HttpCache`]: a cached (or buffered) body, or the
/// inner service's body passed through.
pub type CacheBody<B> = Either<Full<Bytes>, B>;

type TenantFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;
type AllowFn = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// What [`HttpCacheLayer`] keeps in its [`TieredCache`]: a stored response,
/// or the list of request headers a URI's responses vary on. Opaque; name
/// it as the cache's value type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredResponse(Entry);

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Entry {
    /// The URI's responses vary on these request headers (lower-case
    /// names). Its variants live under keys carrying `id`, new for every
    /// such entry: dropping this entry retires all of them at once.
    Variants { names: Vec<String>, id: u64 },
    /// A complete response.
    Response(Box<Stored>),
}

/// A complete stored response.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    status: u16,
    headers: Vec<(String, Bytes)>,
    body: Bytes,
    /// When its age was zero (unix ms): arrival minus its age on arrival.
    born_ms: u64,
    lifetime_ms: u64,
    swr_ms: u64,
    sie_ms: u64,
    must_revalidate: bool,
    no_cache: bool,
}

impl Stored {
    fn fresh_until(&self) -> u64 {
        self.born_ms.saturating_add(self.lifetime_ms)
    }

    fn age_ms(&self, now: u64) -> u64 {
        now.saturating_sub(self.born_ms)
    }

    fn header(&self, name: &HeaderName) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(n, _)| n == name.as_str())
            .map(|(_, v)| v)
    }

    fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_maybe_shared(value.clone()),
            ) {
                map.append(n, v);
            }
        }
        map
    }

    /// May answer `req` without contacting the origin at `now`.
    fn fresh_for(&self, req: &CacheControl, now: u64) -> bool {
        if self.no_cache || req.no_cache {
            return false;
        }
        let age = self.age_ms(now);
        if age >= self.lifetime_ms {
            return false;
        }
        // `max-age=0` from a client means "revalidate", as every cache
        // reads it: an age of 0 s is not below 0 s.
        let max_age_ok = req.max_age.is_none_or(|s| age < s * 1000);
        let min_fresh_ok = req
            .min_fresh
            .is_none_or(|s| self.lifetime_ms - age >= s * 1000);
        max_age_ok && min_fresh_ok
    }

    /// May be served stale: not forbidden by the response or the request.
    fn may_serve_stale(&self, req: &CacheControl) -> bool {
        !self.must_revalidate && !req.no_cache
    }
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

/// How long an entry with validators is kept past its freshness and stale
/// windows, to be revalidated rather than fetched again.
const KEEP_FOR_REVALIDATION: u64 = 3_600_000;

impl fmt::Debug for HttpCacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCacheLayer")
            .field("max_body", &self.shared.max_body)
            .finish_non_exhaustive()
    }
}

impl HttpCacheLayer {
    /// Caches responses in `cache` (its TTL settings do not matter: each
    /// entry lives as long as its response's freshness says).
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

cog_core::inner_service!(HttpCache<S>);

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

/// The method (`HEAD` is answered from `GET`'s entries) and the effective
/// request URI (RFC 9110 §7.1): scheme (`http` unless the URI names one),
/// host (from the URI, else `Host`; lower-cased), path and query.
fn base_key(parts: &Parts) -> String {
    let (scheme, host) = origin(parts);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    key_of(scheme, host, path)
}

/// The request's scheme (`http` unless the URI names one) and host (from
/// the URI, else `Host`; as sent).
fn origin(parts: &Parts) -> (&str, &str) {
    let scheme = parts.uri.scheme_str().unwrap_or("http");
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(header::HOST)?.to_str().ok())
        .unwrap_or("");
    (scheme, host)
}

fn key_of(scheme: &str, host: &str, path: &str) -> String {
    let mut key = String::with_capacity(8 + scheme.len() + host.len() + path.len());
    key.push_str("GET ");
    key.push_str(scheme);
    key.push_str("://");
    key.extend(host.chars().map(|c| c.to_ascii_lowercase()));
    key.push_str(path);
    key
}

/// The key of a variant: the base key, the variants' id, and the values of
/// the request headers they vary on.
fn variant_key(base: &str, id: u64, names: &[String], headers: &HeaderMap) -> String {
    let mut key = String::with_capacity(base.len() + 20 + 32 * names.len());
    key.push_str(base);
    key.push_str("\n#");
    key.push_str(&id.to_string());
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

/// Whether the request carries conditionals of its own.
fn is_conditional(headers: &HeaderMap) -> bool {
    [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ]
    .iter()
    .any(|h| headers.contains_key(h))
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
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return forward_other_method(&shared, inner, parts, body).await;
    }
    let authorized_bypass = parts.headers.contains_key(header::AUTHORIZATION)
        && !shared.authorized.as_ref().is_some_and(|f| f(&parts));
    let req_cc = CacheControl::of_request(&parts.headers);
    if authorized_bypass || req_cc.no_store {
        let mut res = inner.call(Request::from_parts(parts, body)).await?;
        set_status(res.headers_mut(), "cog; fwd=request");
        return Ok(res.map(Either::Right));
    }
    let cache = shared.cache.tenant(&namespace(&shared, &parts));
    let base = base_key(&parts);
    let head = parts.method == Method::HEAD;

    // Look up: the URI, then its variant.
    let mut fwd = "uri-miss";
    let mut lookup_key = base.clone();
    let mut entry = cache.get(&base).await;
    if let Some(StoredResponse(Entry::Variants { names, id })) = &entry {
        lookup_key = variant_key(&base, *id, names, &parts.headers);
        entry = cache.get(&lookup_key).await;
        fwd = "vary-miss";
    }
    let mut stale = None;
    if let Some(StoredResponse(Entry::Response(stored))) = entry {
        let now = unix_ms();
        if stored.fresh_for(&req_cc, now) {
            return Ok(answer_or_not_modified(&stored, &parts.headers, head, now));
        }
        let staleness = now.saturating_sub(stored.fresh_until());
        if stored.may_serve_stale(&req_cc) {
            if staleness < stored.swr_ms {
                revalidate(&shared, &cache, inner, &parts, &stored, lookup_key);
                return Ok(answer(&stored, head, now, "hit"));
            }
            if req_cc.max_stale.is_some_and(|s| staleness <= s * 1000) {
                return Ok(answer(&stored, head, now, "hit"));
            }
        }
        fwd = if req_cc.no_cache { "request" } else { "stale" };
        stale = Some(stored);
    }
    if req_cc.only_if_cached {
        let mut res = Response::new(Either::Left(Full::new(Bytes::new())));
        *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        set_status(res.headers_mut(), "cog; fwd=miss");
        return Ok(res);
    }

    // Forward, conditionally when there is a stale entry to revalidate.
    let req_headers = parts.headers.clone();
    let mut parts = parts;
    let validating = match &stale {
        Some(s) if !is_conditional(&parts.headers) => add_validators(&mut parts.headers, s),
        _ => false,
    };
    let sent_at = unix_ms();
    let result = inner.call(Request::from_parts(parts, body)).await;
    let stand_in = |s: &Stored| {
        s.may_serve_stale(&req_cc) && unix_ms() < s.fresh_until().saturating_add(s.sie_ms)
    };
    let res = match result {
        Ok(res) => res,
        Err(e) => {
            if let Some(s) = stale.as_ref().filter(|s| stand_in(s)) {
                return Ok(answer(s, head, unix_ms(), "hit"));
            }
            return Err(e);
        }
    };
    if res.status().is_server_error()
        && let Some(s) = stale.as_ref().filter(|s| stand_in(s))
    {
        return Ok(answer(s, head, unix_ms(), "hit"));
    }
    let sent = Sent {
        base: &base,
        key: &lookup_key,
        headers: &req_headers,
        at: sent_at,
    };
    if validating
        && res.status() == StatusCode::NOT_MODIFIED
        && let Some(stored) = stale
    {
        let updated = merge_not_modified(&cache, &sent, *stored, res.headers()).await;
        let now = unix_ms();
        let mut answer = answer(&updated, head, now, "fwd=stale");
        set_status(
            answer.headers_mut(),
            &format!(
                "cog; fwd=stale; fwd-status=304; stored; ttl={}",
                ttl(&updated, now)
            ),
        );
        return Ok(answer);
    }
    let status_prefix = format!("cog; fwd={fwd}");
    if head || res.status() == StatusCode::NOT_MODIFIED {
        let mut res = res;
        set_status(res.headers_mut(), &status_prefix);
        return Ok(res.map(Either::Right));
    }
    Ok(store_response(&shared, &cache, &sent, res, &status_prefix).await)
}

/// A method other than `GET` and `HEAD`: forwarded; an unsafe one that
/// succeeds invalidates what it names (RFC 9111 §4.4).
async fn forward_other_method<S, ReqBody, ResBody>(
    shared: &Shared,
    mut inner: S,
    parts: Parts,
    body: ReqBody,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    let safe = matches!(parts.method, Method::OPTIONS | Method::TRACE);
    let namespaces = if safe {
        Vec::new()
    } else {
        let own = namespace(shared, &parts);
        if own.is_empty() {
            vec![own]
        } else {
            vec![own, String::new()]
        }
    };
    let (scheme, host) = origin(&parts);
    let (scheme, host) = (scheme.to_owned(), host.to_owned());
    let target = base_key(&parts);
    let mut res = inner.call(Request::from_parts(parts, body)).await?;
    let status = res.status();
    if !safe && (status.is_success() || status.is_redirection()) {
        let mut keys = vec![target];
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(key) = res
                .headers()
                .get(&name)
                .and_then(|v| same_origin_key(v, &scheme, &host))
            {
                keys.push(key);
            }
        }
        for ns in &namespaces {
            let cache = shared.cache.tenant(ns);
            for key in &keys {
                cache.invalidate(key).await;
            }
        }
    }
    set_status(res.headers_mut(), "cog; fwd=method");
    Ok(res.map(Either::Right))
}

/// The cache key a `Location` / `Content-Location` names, if it is on the
/// request's own host (a relative reference always is).
fn same_origin_key(value: &HeaderValue, scheme: &str, host: &str) -> Option<String> {
    let uri: Uri = value.to_str().ok()?.parse().ok()?;
    match uri.authority() {
        Some(authority) if authority.as_str().eq_ignore_ascii_case(host) => {
            let scheme = uri.scheme_str().unwrap_or(scheme);
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            Some(key_of(scheme, host, path))
        }
        Some(_) => None,
        // Relative: resolved against the request (absolute paths only).
        None => {
            let path = uri.path_and_query()?.as_str();
            path.starts_with('/').then(|| key_of(scheme, host, path))
        }
    }
}

/// Adds `If-None-Match` / `If-Modified-Since` from `stored`'s validators;
/// whether there were any.
fn add_validators(headers: &mut HeaderMap, stored: &Stored) -> bool {
    let mut added = false;
    if let Some(etag) = stored.header(&header::ETAG)
        && let Ok(v) = HeaderValue::from_maybe_shared(etag.clone())
    {
        headers.insert(header::IF_NONE_MATCH, v);
        added = true;
    }
    if let Some(lm) = stored.header(&header::LAST_MODIFIED)
        && let Ok(v) = HeaderValue::from_maybe_shared(lm.clone())
    {
        headers.insert(header::IF_MODIFIED_SINCE, v);
        added = true;
    }
    added
}

/// The forwarded request a response answers.
struct Sent<'a> {
    /// Its cache key before `Vary`.
    base: &'a str,
    /// The key its stored response was found under (the base key, or a
    /// variant's).
    key: &'a str,
    headers: &'a HeaderMap,
    /// When it was sent (unix ms).
    at: u64,
}

/// Updates `stored` with a `304`'s headers and freshness (RFC 9111
/// §4.3.4), stores it again (or drops it, if it may no longer be stored),
/// and returns it.
async fn merge_not_modified(
    cache: &TieredCache<String, StoredResponse>,
    sent: &Sent<'_>,
    mut stored: Stored,
    not_modified: &HeaderMap,
) -> Stored {
    let now = unix_ms();
    stored.headers.retain(|(name, _)| {
        HeaderName::from_bytes(name.as_bytes()).map_or(true, |n| {
            !(freshness::is_updated_by_304(&n) && not_modified.contains_key(&n))
        })
    });
    for (name, value) in not_modified {
        if freshness::is_updated_by_304(name) {
            stored.headers.push((
                name.as_str().to_owned(),
                Bytes::copy_from_slice(value.as_bytes()),
            ));
        }
    }
    let headers = stored.header_map();
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    match freshness::storable(status, &headers, now) {
        Some(reuse) => {
            let age = freshness::initial_age_ms(not_modified, sent.at, now);
            set_reuse(&mut stored, reuse, now.saturating_sub(age));
            if let Some(ttl) = entry_ttl(&stored, now) {
                cache
                    .insert_with_ttl(
                        sent.key.to_owned(),
                        StoredResponse(Entry::Response(Box::new(stored.clone()))),
                        ttl,
                    )
                    .await;
            }
        }
        None => cache.invalidate(&sent.key.to_owned()).await,
    }
    stored
}

fn set_reuse(stored: &mut Stored, reuse: Reuse, born_ms: u64) {
    stored.born_ms = born_ms;
    stored.lifetime_ms = reuse.lifetime_ms;
    stored.swr_ms = reuse.swr_ms;
    stored.sie_ms = reuse.sie_ms;
    stored.must_revalidate = reuse.must_revalidate;
    stored.no_cache = reuse.no_cache;
}

/// How long to keep `stored` in the cache from `now`: through its
/// freshness and stale windows, and an hour more if it can be revalidated.
/// `None`: not worth keeping.
fn entry_ttl(stored: &Stored, now: u64) -> Option<Duration> {
    let mut until = stored
        .fresh_until()
        .saturating_add(stored.swr_ms.max(stored.sie_ms));
    let validators =
        stored.header(&header::ETAG).is_some() || stored.header(&header::LAST_MODIFIED).is_some();
    if validators {
        until = until.max(now).saturating_add(KEEP_FOR_REVALIDATION);
    }
    (until > now).then(|| Duration::from_millis(until - now).max(Duration::from_secs(1)))
}

/// Stores `res` if it is cacheable and answers with it.
async fn store_response<ResBody>(
    shared: &Shared,
    cache: &TieredCache<String, StoredResponse>,
    sent: &Sent<'_>,
    res: Response<ResBody>,
    status_prefix: &str,
) -> Response<CacheBody<ResBody>>
where
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let arrived = unix_ms();
    let reuse = freshness::storable(res.status(), res.headers(), arrived);
    // Only bodies known to fit are buffered.
    let fits = res
        .body()
        .size_hint()
        .upper()
        .is_some_and(|n| n as usize <= shared.max_body);
    let (Some(reuse), true) = (reuse, fits) else {
        let mut res = res;
        set_status(res.headers_mut(), status_prefix);
        return res.map(Either::Right);
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
    let mut stored = Stored {
        status: head.status.as_u16(),
        headers: head
            .headers
            .iter()
            .filter(|(k, _)| freshness::is_stored(k))
            .map(|(k, v)| (k.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
            .collect(),
        body: bytes.clone(),
        born_ms: 0,
        lifetime_ms: 0,
        swr_ms: 0,
        sie_ms: 0,
        must_revalidate: false,
        no_cache: false,
    };
    let age = freshness::initial_age_ms(&head.headers, sent.at, now);
    set_reuse(&mut stored, reuse, now.saturating_sub(age));
    let Some(ttl) = entry_ttl(&stored, now) else {
        // Already stale past every window on arrival: nothing to serve.
        set_status(&mut head.headers, status_prefix);
        return Response::from_parts(head, Either::Left(Full::new(bytes)));
    };
    let names = freshness::vary_names(&head.headers).unwrap_or_default();
    let key = if names.is_empty() {
        sent.base.to_owned()
    } else {
        // Keep the variants' id while they vary on the same headers.
        let id = match cache.get(&sent.base.to_owned()).await {
            Some(StoredResponse(Entry::Variants { names: n, id })) if n == names => id,
            _ => rand::random(),
        };
        let key = variant_key(sent.base, id, &names, sent.headers);
        cache
            .insert_with_ttl(
                sent.base.to_owned(),
                StoredResponse(Entry::Variants { names, id }),
                ttl,
            )
            .await;
        key
    };
    cache
        .insert_with_ttl(key, StoredResponse(Entry::Response(Box::new(stored))), ttl)
        .await;
    set_status(&mut head.headers, &format!("{status_prefix}; stored"));
    Response::from_parts(head, Either::Left(Full::new(bytes)))
}

fn set_status(headers: &mut HeaderMap, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static("cache-status"), v);
    }
}

/// Seconds of freshness left (negative: stale for that long).
fn ttl(stored: &Stored, now: u64) -> i64 {
    (stored.fresh_until() as i64 - now as i64).div_euclid(1000)
}

/// A fresh entry's answer: `304` when the request's own validators match
/// it (RFC 9110 §13.1.2, weak comparison), else the stored response.
fn answer_or_not_modified<B>(
    stored: &Stored,
    headers: &HeaderMap,
    head: bool,
    now: u64,
) -> Response<CacheBody<B>> {
    if !not_modified(stored, headers) {
        return answer(stored, head, now, "hit");
    }
    let mut res = Response::new(Either::Left(Full::new(Bytes::new())));
    *res.status_mut() = StatusCode::NOT_MODIFIED;
    let out = res.headers_mut();
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::LAST_MODIFIED,
    ] {
        if let Some(v) = stored
            .header(&name)
            .and_then(|v| HeaderValue::from_maybe_shared(v.clone()).ok())
        {
            out.insert(name, v);
        }
    }
    out.insert(header::AGE, HeaderValue::from(stored.age_ms(now) / 1000));
    set_status(out, &format!("cog; hit; ttl={}", ttl(stored, now)));
    res
}

/// Whether the request's `If-None-Match` (or, without it,
/// `If-Modified-Since`) matches `stored`.
fn not_modified(stored: &Stored, headers: &HeaderMap) -> bool {
    if stored.status != 200 {
        return false;
    }
    if headers.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = stored.header(&header::ETAG) else {
            return false;
        };
        let opaque = |t: &[u8]| -> Vec<u8> { t.strip_prefix(b"W/").unwrap_or(t).to_vec() };
        let ours = opaque(etag.as_ref());
        return headers.get_all(header::IF_NONE_MATCH).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .any(|t| t == b"*" || opaque(t) == ours)
        });
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(freshness::http_date);
    let modified = stored
        .header(&header::LAST_MODIFIED)
        .and_then(|v| freshness::http_date(&HeaderValue::from_maybe_shared(v.clone()).ok()?));
    matches!((since, modified), (Some(s), Some(m)) if m <= s)
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
    headers.insert(header::AGE, HeaderValue::from(stored.age_ms(now) / 1000));
    set_status(headers, &format!("cog; {kind}; ttl={}", ttl(stored, now)));
    res
}

/// Revalidates a stale entry in the background, once.
fn revalidate<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    cache: &TieredCache<String, StoredResponse>,
    mut inner: S,
    parts: &Parts,
    stored: &Stored,
    key: String,
) where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let base = base_key(parts);
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
    let validating = !is_conditional(&parts.headers) && add_validators(req.headers_mut(), stored);
    let req_headers = parts.headers.clone();
    let stored = stored.clone();
    let (shared, cache) = (shared.clone(), cache.clone());
    tokio::spawn(async move {
        let _mark = mark;
        let at = unix_ms();
        // Readiness: a clone of a ready service may need polling first.
        let Ok(()) = std::future::poll_fn(|cx| inner.poll_ready(cx)).await else {
            return;
        };
        let Ok(res) = inner.call(req).await else {
            return;
        };
        if res.status().is_server_error() {
            return;
        }
        let sent = Sent {
            base: &base,
            key: &key,
            headers: &req_headers,
            at,
        };
        if validating && res.status() == StatusCode::NOT_MODIFIED {
            merge_not_modified(&cache, &sent, stored, res.headers()).await;
        } else if res.status() != StatusCode::NOT_MODIFIED {
            store_response(&shared, &cache, &sent, res, "cog").await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_keys_differ_by_header_value_and_by_id() {
        let mut a = HeaderMap::new();
        a.insert("accept-language", "en".parse().unwrap());
        let mut b = HeaderMap::new();
        b.insert("accept-language", "fr".parse().unwrap());
        let names = vec!["accept-language".to_owned()];
        assert_ne!(
            variant_key("GET /", 1, &names, &a),
            variant_key("GET /", 1, &names, &b)
        );
        assert_ne!(
            variant_key("GET /", 1, &names, &a),
            variant_key("GET /", 2, &names, &a)
        );
        assert_eq!(
            variant_key("GET /", 1, &names, &a),
            variant_key("GET /", 1, &names, &a.clone())
        );
    }

    #[test]
    fn locations_on_the_same_host_only() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            same_origin_key(&v("/items/2"), "http", "a.example").as_deref(),
            Some("GET http://a.example/items/2")
        );
        assert_eq!(
            same_origin_key(&v("http://A.example/x?y=1"), "http", "a.example").as_deref(),
            Some("GET http://a.example/x?y=1")
        );
        assert_eq!(
            same_origin_key(&v("http://b.example/x"), "http", "a.example"),
            None
        );
        assert_eq!(
            same_origin_key(&v("relative/path"), "http", "a.example"),
            None
        );
        assert_eq!(same_origin_key(&v("::junk::"), "http", "a.example"), None);
    }
}
