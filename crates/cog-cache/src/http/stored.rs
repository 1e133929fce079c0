//! What the cache keeps for a URI, and how a response becomes it: storing,
//! validators, merging a `304` (RFC 9111 §3, §4.3).

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use super::CacheBody;
use super::body::Copying;
use super::cache_control::CacheControl;
use super::freshness::{self, Reuse, unix_ms};
use super::key::variant_key;
use super::shared::Shared;
use crate::cache::TieredCache;

/// What [`HttpCacheLayer`](super::HttpCacheLayer) keeps in its [`TieredCache`]: a stored response,
/// or the list of request headers a URI's responses vary on. Opaque; name
/// it as the cache's value type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredResponse(pub(super) Entry);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Entry {
    /// The URI's responses vary on these request headers (lower-case
    /// names). Its variants live under keys carrying `id`, new for every
    /// such entry: dropping this entry retires all of them at once. Kept
    /// until `until_ms` (Unix ms), when the longest-lived variant stored
    /// under it goes.
    Variants {
        names: Vec<String>,
        id: u64,
        until_ms: u64,
    },
    /// A complete response. Shared: every L1 hit clones the entry, and a
    /// deep copy of its headers cost an allocation per header. Serialized
    /// as the response itself (as the `Box` it was: the same bytes in L2).
    Response(std::sync::Arc<Stored>),
}

/// A complete stored response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Stored {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, Bytes)>,
    pub(super) body: Bytes,
    /// When its age was zero (unix ms): arrival minus its age on arrival.
    pub(super) born_ms: u64,
    pub(super) lifetime_ms: u64,
    pub(super) swr_ms: u64,
    pub(super) sie_ms: u64,
    pub(super) must_revalidate: bool,
    pub(super) no_cache: bool,
    /// `headers` as names and values, checked once when an answer first
    /// needs them: every later hit on the shared entry clones them (no
    /// parsing, no copy). Emptied whenever `headers` change.
    #[serde(skip)]
    pub(super) parsed: std::sync::OnceLock<Box<[(HeaderName, HeaderValue)]>>,
}

impl Stored {
    pub(super) fn fresh_until(&self) -> u64 {
        self.born_ms.saturating_add(self.lifetime_ms)
    }

    pub(super) fn age_ms(&self, now: u64) -> u64 {
        now.saturating_sub(self.born_ms)
    }

    pub(super) fn header(&self, name: &HeaderName) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(n, _)| n == name.as_str())
            .map(|(_, v)| v)
    }

    /// The stored headers that are valid names and values, parsed on the
    /// first call.
    pub(super) fn parsed_headers(&self) -> &[(HeaderName, HeaderValue)] {
        self.parsed.get_or_init(|| {
            self.headers
                .iter()
                .filter_map(|(name, value)| {
                    Some((
                        HeaderName::from_bytes(name.as_bytes()).ok()?,
                        HeaderValue::from_maybe_shared(value.clone()).ok()?,
                    ))
                })
                .collect()
        })
    }

    pub(super) fn header_map(&self) -> HeaderMap {
        let parsed = self.parsed_headers();
        let mut map = HeaderMap::with_capacity(parsed.len());
        for (name, value) in parsed {
            map.append(name.clone(), value.clone());
        }
        map
    }

    /// May answer `req` without contacting the origin at `now`.
    pub(super) fn fresh_for(&self, req: &CacheControl, now: u64) -> bool {
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
    pub(super) fn may_serve_stale(&self, req: &CacheControl) -> bool {
        !self.must_revalidate && !req.no_cache
    }
}

/// How long an entry with validators is kept past its freshness and stale
/// windows, to be revalidated rather than fetched again.
pub(super) const KEEP_FOR_REVALIDATION: u64 = 3_600_000;

/// Adds `If-None-Match` / `If-Modified-Since` from `stored`'s validators;
/// whether there were any.
pub(super) fn add_validators(headers: &mut HeaderMap, stored: &Stored) -> bool {
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
pub(super) struct Sent<'a> {
    /// Its cache key before `Vary`.
    pub(super) base: &'a str,
    /// The key its stored response was found under (the base key, or a
    /// variant's).
    pub(super) key: &'a str,
    pub(super) headers: &'a HeaderMap,
    /// When it was sent (unix ms).
    pub(super) at: u64,
}

/// Updates `stored` with a `304`'s headers and freshness (RFC 9111
/// §4.3.4), stores it again (or drops it, if it may no longer be stored),
/// and returns it.
pub(super) async fn merge_not_modified(
    shared: &Shared,
    cache: &TieredCache<String, StoredResponse>,
    sent: &Sent<'_>,
    mut stored: Stored,
    not_modified: &HeaderMap,
) -> Stored {
    let now = unix_ms();
    let hop = freshness::connection_options(not_modified);
    let updates = |n: &HeaderName| {
        freshness::is_updated_by_304(n) && not_modified.contains_key(n) && !hop.contains(n)
    };
    stored
        .headers
        .retain(|(name, _)| HeaderName::from_bytes(name.as_bytes()).map_or(true, |n| !updates(&n)));
    for (name, value) in not_modified {
        if updates(name) {
            stored.headers.push((
                name.as_str().to_owned(),
                Bytes::copy_from_slice(value.as_bytes()),
            ));
        }
    }
    stored.parsed = std::sync::OnceLock::new();
    let headers = stored.header_map();
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    match freshness::storable(status, &headers, now, &shared.targets) {
        Some(reuse) => {
            let age = freshness::initial_age_ms(not_modified, sent.at, now);
            set_reuse(&mut stored, reuse, now.saturating_sub(age));
            if let Some(ttl) = entry_ttl(&stored, now) {
                cache
                    .insert_with_ttl(
                        sent.key.to_owned(),
                        StoredResponse(Entry::Response(std::sync::Arc::new(stored.clone()))),
                        ttl,
                    )
                    .await;
            }
        }
        None => cache.invalidate(&sent.key.to_owned()).await,
    }
    stored
}

pub(super) fn set_reuse(stored: &mut Stored, reuse: Reuse, born_ms: u64) {
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
pub(super) fn entry_ttl(stored: &Stored, now: u64) -> Option<Duration> {
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

/// Stores `res` if it is cacheable and answers with it. A body known to
/// fit in `shared.max_body` bytes is read first and stored before the answer; one
/// of unknown length (streamed, `Transfer-Encoding: chunked`) is passed on
/// as it comes and stored once it has ended within `max_body` bytes (not
/// if it grows past them, fails, or the client goes away first); one
/// known to be larger is only passed on.
pub(super) async fn store_response<ResBody>(
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
    let reuse = freshness::storable(res.status(), res.headers(), arrived, &shared.targets);
    let max_body = shared.max_body;
    let upper = res.body().size_hint().upper();
    let (Some(reuse), true) = (reuse, upper.is_none_or(|n| n as usize <= max_body)) else {
        let mut res = res;
        set_status(res.headers_mut(), status_prefix);
        return res.map(CacheBody::passed);
    };
    let (mut head, body) = res.into_parts();
    if upper.is_none() {
        let mut stored = unstored(head.status, &head.headers, Bytes::new());
        let age = freshness::initial_age_ms(&head.headers, sent.at, arrived);
        set_reuse(&mut stored, reuse, arrived.saturating_sub(age));
        let names = freshness::vary_names(&head.headers).unwrap_or_default();
        let (cache, base, req_headers) =
            (cache.clone(), sent.base.to_owned(), sent.headers.clone());
        let copy = Copying::new(max_body, move |bytes| {
            // No runtime (the body read outside one): not stored.
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            stored.body = bytes;
            runtime.spawn(async move {
                put(&cache, &base, &req_headers, names, stored, unix_ms()).await;
            });
        });
        set_status(&mut head.headers, status_prefix);
        return Response::from_parts(head, CacheBody::copied(body, copy));
    }
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            // The body failed midway: answer with an empty 502, store
            // nothing.
            let mut res = Response::new(CacheBody::default());
            *res.status_mut() = StatusCode::BAD_GATEWAY;
            set_status(res.headers_mut(), status_prefix);
            return res;
        }
    };
    let now = unix_ms();
    let mut stored = unstored(head.status, &head.headers, bytes.clone());
    let age = freshness::initial_age_ms(&head.headers, sent.at, now);
    set_reuse(&mut stored, reuse, now.saturating_sub(age));
    let names = freshness::vary_names(&head.headers).unwrap_or_default();
    if put(cache, sent.base, sent.headers, names, stored, now).await {
        set_status(&mut head.headers, &format!("{status_prefix}; stored"));
    } else {
        // Already stale past every window on arrival: nothing to serve.
        set_status(&mut head.headers, status_prefix);
    }
    Response::from_parts(head, CacheBody::stored(bytes))
}

/// A response of `status` with `headers` (those a cache keeps) and `body`, before its
/// freshness is set.
fn unstored(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Stored {
    let hop = freshness::connection_options(headers);
    Stored {
        status: status.as_u16(),
        headers: headers
            .iter()
            .filter(|(k, _)| freshness::is_stored(k) && !hop.contains(k))
            .map(|(k, v)| (k.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
            .collect(),
        body,
        born_ms: 0,
        lifetime_ms: 0,
        swr_ms: 0,
        sie_ms: 0,
        must_revalidate: false,
        no_cache: false,
        parsed: std::sync::OnceLock::new(),
    }
}

/// Stores `stored` under `base` — or, when its response varies on the
/// request headers `names`, under the variant key of `req_headers` — for
/// as long as it can be served or revalidated from `now`. Whether it was
/// worth storing.
async fn put(
    cache: &TieredCache<String, StoredResponse>,
    base: &str,
    req_headers: &HeaderMap,
    names: Vec<String>,
    stored: Stored,
    now: u64,
) -> bool {
    let Some(ttl) = entry_ttl(&stored, now) else {
        return false;
    };
    let key = if names.is_empty() {
        base.to_owned()
    } else {
        // Keep the variants' id while they vary on the same headers, and
        // the record as long as any of them.
        let until = now.saturating_add(ttl.as_millis() as u64);
        let (id, until_ms) = match cache.get(&base.to_owned()).await {
            Some(StoredResponse(Entry::Variants {
                names: n,
                id,
                until_ms,
            })) if n == names => (id, until_ms.max(until)),
            _ => (rand::random(), until),
        };
        let key = variant_key(base, id, &names, req_headers);
        cache
            .insert_with_ttl(
                base.to_owned(),
                StoredResponse(Entry::Variants {
                    names,
                    id,
                    until_ms,
                }),
                Duration::from_millis(until_ms - now),
            )
            .await;
        key
    };
    cache
        .insert_with_ttl(
            key,
            StoredResponse(Entry::Response(std::sync::Arc::new(stored))),
            ttl,
        )
        .await;
    true
}

/// Sets `Cache-Status` (RFC 9211) to `value`.
pub(super) fn set_status(headers: &mut HeaderMap, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static("cache-status"), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    /// A response born `age_ms` ago, fresh for `lifetime_ms`.
    fn stored(age_ms: u64, lifetime_ms: u64, headers: &[(&str, &str)]) -> Stored {
        Stored {
            status: 200,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Bytes::copy_from_slice(v.as_bytes())))
                .collect(),
            body: Bytes::new(),
            born_ms: NOW - age_ms,
            lifetime_ms,
            swr_ms: 0,
            sie_ms: 0,
            must_revalidate: false,
            no_cache: false,
            parsed: std::sync::OnceLock::new(),
        }
    }

    fn asking(max_age: Option<u64>, min_fresh: Option<u64>) -> CacheControl {
        CacheControl {
            max_age,
            min_fresh,
            ..CacheControl::default()
        }
    }

    #[test]
    fn a_request_s_max_age_and_min_fresh_narrow_freshness() {
        // 30 s old, fresh for 60 s.
        let s = stored(30_000, 60_000, &[]);
        assert!(s.fresh_for(&asking(None, None), NOW));
        assert!(s.fresh_for(&asking(Some(31), None), NOW));
        assert!(!s.fresh_for(&asking(Some(30), None), NOW));
        assert!(!s.fresh_for(&asking(Some(10), None), NOW));
        // 30 s of freshness left.
        assert!(s.fresh_for(&asking(None, Some(30)), NOW));
        assert!(!s.fresh_for(&asking(None, Some(31)), NOW));
        // Past its lifetime: stale, whatever the request allows.
        assert!(!stored(60_000, 60_000, &[]).fresh_for(&asking(Some(100), None), NOW));
    }

    #[test]
    fn an_entry_is_kept_while_it_can_be_served_or_revalidated() {
        // Fresh for 50 s more: kept 50 s.
        let s = stored(10_000, 60_000, &[]);
        assert_eq!(entry_ttl(&s, NOW), Some(Duration::from_secs(50)));
        // Stale to the millisecond, nothing to revalidate with: dropped.
        assert_eq!(entry_ttl(&stored(60_000, 60_000, &[]), NOW), None);
        // With a validator: kept for revalidation.
        let s = stored(60_000, 60_000, &[("etag", "\"a\"")]);
        assert_eq!(
            entry_ttl(&s, NOW),
            Some(Duration::from_millis(KEEP_FOR_REVALIDATION))
        );
        // Under a second left: a second (L2 lifetimes are whole).
        let s = stored(59_900, 60_000, &[]);
        assert_eq!(entry_ttl(&s, NOW), Some(Duration::from_secs(1)));
    }
}
