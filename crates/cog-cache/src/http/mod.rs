//! An HTTP response cache as tower middleware, on a [`TieredCache`](crate::TieredCache): a
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
//!   `no-store`, `private` or `Set-Cookie`, `Vary` not `*`, the body within
//!   [`max_body`](HttpCacheLayer::max_body) (one of unknown length is
//!   passed on as it streams and stored once it has ended), and with explicit
//!   freshness (`s-maxage`, `max-age`, `Expires`), or a heuristically
//!   cacheable status (`200`, `203`, `204`, `300`, `301`, `308`, `404`,
//!   `405`, `410`, `414`, `501`: 10 % of the time since `Last-Modified`, at
//!   most a day), or validators to revalidate with. `must-understand` stores
//!   one of those statuses despite its `no-store`, and no other status.
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

mod answer;
mod body;
mod cache_control;
mod freshness;
mod key;
mod layer;
mod service;
mod shared;
mod stored;
mod targeted;

/// A header map of `pairs`, in order (for tests).
#[cfg(test)]
pub(crate) fn headers_of(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

pub use body::CacheBody;
pub use layer::HttpCacheLayer;
pub use service::{HttpCache, ResponseFuture};
pub use stored::StoredResponse;
