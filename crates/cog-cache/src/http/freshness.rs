//! Storing and reusing responses as a shared cache (RFC 9111 §3 and §4.2):
//! which responses may be stored, for how long they are fresh, and how old
//! they are.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::cache_control::{CacheControl, MAX_DELTA, delta_seconds};

/// Status codes a shared cache may store with heuristic freshness
/// (RFC 9110 §15.1: heuristically cacheable).
const HEURISTIC: [u16; 12] = [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// Heuristic freshness: this fraction of the time since `Last-Modified`
/// (RFC 9111 §4.2.2 suggests at most 10 %), at most a day.
const HEURISTIC_FRACTION: u64 = 10;
const HEURISTIC_MAX_MS: u64 = 86_400_000;

/// Header fields never stored (RFC 9111 §3.1: hop-by-hop), nor updated
/// from a `304` (`Content-Length` describes the body the 304 lacks).
const NOT_STORED: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// An HTTP-date (IMF-fixdate, RFC 850 or asctime) as unix milliseconds.
pub(crate) fn http_date(v: &HeaderValue) -> Option<u64> {
    let t = httpdate::parse_http_date(v.to_str().ok()?).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
}

#[cfg(test)]
/// `unix_ms` as an HTTP-date.
pub(crate) fn format_date(unix_ms: u64) -> HeaderValue {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    HeaderValue::try_from(httpdate::fmt_http_date(t)).unwrap_or(HeaderValue::from_static(""))
}

/// Now, in unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a stored response may be used once stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reuse {
    /// Fresh for this long from its (corrected) birth, in ms.
    pub(crate) lifetime_ms: u64,
    /// Served stale while revalidating, for this long past `lifetime_ms`.
    pub(crate) swr_ms: u64,
    /// Served stale instead of an error, for this long past it.
    pub(crate) sie_ms: u64,
    /// Never used stale without revalidation (`must-revalidate`,
    /// `proxy-revalidate`, `s-maxage`), nor fresh (`no-cache`).
    pub(crate) must_revalidate: bool,
    /// Every use needs revalidation (`no-cache`).
    pub(crate) no_cache: bool,
}

/// Whether a shared cache may store `status` with `headers` (the
/// request's own checks — method, `no-store`, `Authorization` — are the
/// caller's), and how it may be reused. `None`: not storable. The first of
/// the targeted fields `targets` (RFC 9213) the response carries, valid and
/// not empty, stands in for `Cache-Control` and `Expires`.
pub(crate) fn storable(
    status: StatusCode,
    headers: &HeaderMap,
    response_ms: u64,
    targets: &[HeaderName],
) -> Option<Reuse> {
    let code = status.as_u16();
    // Final, complete responses only: no 1xx, no 206 (ranges are not
    // combined), no 304 (it updates a stored response instead).
    if status.is_informational() || code == 206 || code == 304 {
        return None;
    }
    let targeted = super::targeted::directives(headers, targets);
    let explicit_only = targeted.is_some();
    let cc = targeted.unwrap_or_else(|| CacheControl::of(headers));
    // `must-understand`: stored only with a status code whose caching
    // rules this cache knows — the heuristically cacheable ones — and then
    // despite the `no-store` sent with it for caches that do not (§5.2.2.3).
    let understood = cc.must_understand && HEURISTIC.contains(&code);
    if cc.must_understand && !understood {
        return None;
    }
    if (cc.no_store && !understood) || cc.private || headers.contains_key(header::SET_COOKIE) {
        return None;
    }
    if vary_names(headers)?.iter().any(|n| n == "*") {
        return None;
    }
    let explicit = if explicit_only {
        cc.s_maxage.or(cc.max_age).map(|s| s * 1000)
    } else {
        explicit_lifetime(&cc, headers, response_ms)
    };
    let heuristic = || {
        HEURISTIC
            .contains(&code)
            .then(|| heuristic_lifetime(headers, response_ms))
    };
    let lifetime_ms = match explicit {
        Some(ms) => ms,
        None if cc.public || cc.no_cache => heuristic().unwrap_or(0),
        None => heuristic()?,
    };
    let has_validator =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    // Nothing to serve fresh and nothing to revalidate with: not worth it.
    if (lifetime_ms == 0 || cc.no_cache) && !has_validator {
        let stale_use = cc.stale_while_revalidate.is_some() || cc.stale_if_error.is_some();
        if cc.no_cache || !stale_use {
            return None;
        }
    }
    let must_revalidate =
        cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some() || cc.no_cache;
    Some(Reuse {
        lifetime_ms,
        swr_ms: cc.stale_while_revalidate.unwrap_or(0) * 1000,
        sie_ms: cc.stale_if_error.unwrap_or(0) * 1000,
        must_revalidate,
        no_cache: cc.no_cache,
    })
}

/// `s-maxage`, then `max-age`, then `Expires` − `Date` (RFC 9111 §4.2.1).
fn explicit_lifetime(cc: &CacheControl, headers: &HeaderMap, response_ms: u64) -> Option<u64> {
    if let Some(s) = cc.s_maxage.or(cc.max_age) {
        return Some(s * 1000);
    }
    let mut expires = headers.get_all(header::EXPIRES).iter();
    let first = expires.next()?;
    // An invalid date — "0" included — or several: already expired.
    let Some(expires_ms) = http_date(first).filter(|_| expires.next().is_none()) else {
        return Some(0);
    };
    let date_ms = date(headers).unwrap_or(response_ms);
    Some(expires_ms.saturating_sub(date_ms).min(MAX_DELTA * 1000))
}

fn heuristic_lifetime(headers: &HeaderMap, response_ms: u64) -> u64 {
    let Some(last_modified) = headers.get(header::LAST_MODIFIED).and_then(http_date) else {
        return 0;
    };
    let date_ms = date(headers).unwrap_or(response_ms);
    (date_ms.saturating_sub(last_modified) / HEURISTIC_FRACTION).min(HEURISTIC_MAX_MS)
}

fn date(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::DATE).and_then(http_date)
}

/// The response's age when it arrived (RFC 9111 §4.2.3): the larger of its
/// apparent age (`Date` to arrival) and its `Age` plus the time the request
/// took. `Age` is a single value: of several (`Age: 7200, 0`, or two
/// lines), the first counts; one that is not delta-seconds is ignored.
pub(crate) fn initial_age_ms(headers: &HeaderMap, request_ms: u64, response_ms: u64) -> u64 {
    let apparent = date(headers).map_or(0, |d| response_ms.saturating_sub(d));
    let age = headers
        .get(header::AGE)
        .and_then(|v| {
            let first = v.to_str().ok()?.split(',').next()?;
            delta_seconds(first.trim())
        })
        .unwrap_or(0);
    let corrected = (age * 1000).saturating_add(response_ms.saturating_sub(request_ms));
    apparent.max(corrected)
}

/// The lower-cased names a response's `Vary` lists (`*` included);
/// `None` for a field that is not text.
pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for v in headers.get_all(header::VARY) {
        for name in v.to_str().ok()?.split(',') {
            let name = name.trim().to_ascii_lowercase();
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.sort();
    Some(names)
}

/// Whether `name` is stored with a response.
pub(crate) fn is_stored(name: &HeaderName) -> bool {
    !NOT_STORED.contains(name) && name != "keep-alive" && name != "proxy-connection"
}

/// Whether a `304`'s `name` replaces the stored one (RFC 9111 §3.2).
pub(crate) fn is_updated_by_304(name: &HeaderName) -> bool {
    is_stored(name) && name != header::CONTENT_LENGTH
}

/// The fields a message's `Connection` names: options for this hop only
/// (RFC 9110 §7.6.1), which a cache must not store (RFC 9111 §3.1).
/// Empty, without allocating, for a message without `Connection`.
pub(crate) fn connection_options(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::headers_of as headers;

    const NOW: u64 = 1_800_000_000_000;

    fn date_str(ms: u64) -> String {
        format_date(ms).to_str().unwrap().to_owned()
    }

    fn reuse(status: u16, pairs: &[(&str, &str)]) -> Option<Reuse> {
        storable(
            StatusCode::from_u16(status).unwrap(),
            &headers(pairs),
            NOW,
            &[],
        )
    }

    #[test]
    fn explicit_freshness_in_order_of_precedence() {
        let d = date_str(NOW);
        let e = date_str(NOW + 100_000);
        let h = [
            ("cache-control", "max-age=10, s-maxage=20"),
            ("date", d.as_str()),
            ("expires", e.as_str()),
        ];
        assert_eq!(reuse(200, &h).unwrap().lifetime_ms, 20_000);
        let h = [
            ("cache-control", "max-age=10"),
            ("date", d.as_str()),
            ("expires", e.as_str()),
        ];
        assert_eq!(reuse(200, &h).unwrap().lifetime_ms, 10_000);
        let h = [("date", d.as_str()), ("expires", e.as_str())];
        assert_eq!(reuse(200, &h).unwrap().lifetime_ms, 100_000);
        // Expires relative to Date, not to the local clock.
        let d2 = date_str(NOW - 50_000);
        let h = [("date", d2.as_str()), ("expires", e.as_str())];
        assert_eq!(reuse(200, &h).unwrap().lifetime_ms, 150_000);
    }

    #[test]
    fn invalid_or_repeated_expires_is_already_expired() {
        let e = date_str(NOW + 100_000);
        for h in [
            vec![("expires", "0")],
            vec![("expires", "soon")],
            vec![("expires", &e), ("expires", &e)],
        ] {
            // Stale, and nothing to revalidate with: not stored.
            assert_eq!(reuse(200, &h), None, "{h:?}");
            let mut with_etag = h.clone();
            with_etag.push(("etag", "\"v1\""));
            assert_eq!(reuse(200, &with_etag).unwrap().lifetime_ms, 0, "{h:?}");
        }
    }

    #[test]
    fn heuristic_freshness_only_for_heuristically_cacheable_statuses() {
        let d = date_str(NOW);
        let lm = date_str(NOW - 1_000_000);
        let h = [("date", d.as_str()), ("last-modified", lm.as_str())];
        assert_eq!(reuse(200, &h).unwrap().lifetime_ms, 100_000);
        assert_eq!(reuse(404, &h).unwrap().lifetime_ms, 100_000);
        // 302 and 500 are not heuristically cacheable...
        assert_eq!(reuse(302, &h), None);
        assert_eq!(reuse(500, &h), None);
        // ...but are stored with explicit freshness.
        assert_eq!(
            reuse(302, &[("cache-control", "max-age=5")])
                .unwrap()
                .lifetime_ms,
            5_000
        );
        assert_eq!(
            reuse(500, &[("cache-control", "max-age=5")])
                .unwrap()
                .lifetime_ms,
            5_000
        );
        // Capped at a day.
        let old = date_str(NOW - 100 * 86_400_000);
        let h = [("date", d.as_str()), ("last-modified", old.as_str())];
        assert_eq!(reuse(200, &h).unwrap().lifetime_ms, 86_400_000);
        // No validator, no explicit freshness: nothing to store.
        assert_eq!(reuse(200, &[]), None);
    }

    #[test]
    fn public_or_no_cache_stores_any_final_status_for_revalidation() {
        // RFC 9111 §3: `public` (or `no-cache`) makes a status that is not
        // heuristically cacheable storable; without freshness it is
        // revalidated with its validator before every use.
        let etag = ("etag", "\"v1\"");
        assert_eq!(reuse(302, &[etag]), None);
        for cc in ["public", "no-cache"] {
            let r = reuse(302, &[("cache-control", cc), etag]).unwrap_or_else(|| panic!("{cc}"));
            assert_eq!(r.lifetime_ms, 0, "{cc}");
        }
        // `public` on a heuristically cacheable status keeps the heuristic.
        let d = date_str(NOW);
        let lm = date_str(NOW - 1_000_000);
        let h = [
            ("cache-control", "public"),
            ("date", d.as_str()),
            ("last-modified", lm.as_str()),
        ];
        assert_eq!(reuse(200, &h).unwrap().lifetime_ms, 100_000);
    }

    #[test]
    fn vary_names_are_lower_cased_once_each_and_sorted() {
        let h = headers(&[
            ("vary", "Accept-Encoding, , accept"),
            ("vary", "ACCEPT,x-tenant-plan"),
        ]);
        assert_eq!(
            vary_names(&h).unwrap(),
            ["accept", "accept-encoding", "x-tenant-plan"]
        );
        assert_eq!(vary_names(&headers(&[("vary", " , ")])).unwrap(), [""; 0]);
    }

    #[test]
    fn hop_by_hop_fields_are_not_stored_and_304s_keep_the_length() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "transfer-encoding",
            "upgrade",
            "proxy-authenticate",
            "proxy-authorization",
        ] {
            let n = HeaderName::from_static(name);
            assert!(!is_stored(&n) && !is_updated_by_304(&n), "{name}");
        }
        for name in ["etag", "cache-control", "content-type", "x-custom"] {
            let n = HeaderName::from_static(name);
            assert!(is_stored(&n) && is_updated_by_304(&n), "{name}");
        }
        assert!(is_stored(&header::CONTENT_LENGTH));
        assert!(!is_updated_by_304(&header::CONTENT_LENGTH));
    }

    #[test]
    fn connection_names_this_hops_fields() {
        let h = headers(&[
            ("connection", "X-Hop, close"),
            ("connection", " keep-alive ,, bad name"),
        ]);
        let options = connection_options(&h);
        let names: Vec<&str> = options.iter().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-hop", "close", "keep-alive"]);
        assert!(connection_options(&headers(&[])).is_empty());
    }

    #[test]
    fn expires_far_ahead_is_capped_like_delta_seconds() {
        let d = date_str(NOW);
        let h = [
            ("date", d.as_str()),
            ("expires", "Fri, 31 Dec 9999 23:59:59 GMT"),
        ];
        assert_eq!(reuse(200, &h).unwrap().lifetime_ms, MAX_DELTA * 1000);
    }

    #[test]
    fn not_storable() {
        for (status, h) in [
            (200, vec![("cache-control", "no-store, max-age=60")]),
            (200, vec![("cache-control", "private, max-age=60")]),
            (
                200,
                vec![("cache-control", "max-age=60"), ("set-cookie", "a=1")],
            ),
            (
                200,
                vec![("cache-control", "max-age=60"), ("vary", "accept, *")],
            ),
            (206, vec![("cache-control", "max-age=60")]),
            (304, vec![("cache-control", "max-age=60")]),
            (100, vec![("cache-control", "max-age=60")]),
            (200, vec![("cache-control", "no-cache, max-age=60")]),
        ] {
            assert_eq!(reuse(status, &h), None, "{status} {h:?}");
        }
    }

    #[test]
    fn revalidation_flags() {
        let r = reuse(200, &[("cache-control", "max-age=5, must-revalidate")]).unwrap();
        assert!(r.must_revalidate && !r.no_cache);
        assert!(
            reuse(200, &[("cache-control", "max-age=5, proxy-revalidate")])
                .unwrap()
                .must_revalidate
        );
        assert!(
            reuse(200, &[("cache-control", "s-maxage=5")])
                .unwrap()
                .must_revalidate
        );
        let r = reuse(200, &[("cache-control", "no-cache"), ("etag", "\"x\"")]).unwrap();
        assert!(r.no_cache && r.must_revalidate);
        let r = reuse(
            200,
            &[(
                "cache-control",
                "max-age=5, stale-while-revalidate=7, stale-if-error=9",
            )],
        )
        .unwrap();
        assert_eq!(
            (r.swr_ms, r.sie_ms, r.must_revalidate),
            (7_000, 9_000, false)
        );
    }

    /// `must-understand` stores a known status despite its `no-store`, and
    /// keeps any other status out even without one.
    #[test]
    fn must_understand_is_for_status_codes_this_cache_knows() {
        let understood = "no-store, must-understand, max-age=60";
        for code in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            let r = reuse(code, &[("cache-control", understood)]);
            assert_eq!(r.map(|r| r.lifetime_ms), Some(60_000), "{code}");
        }
        for code in [201, 302, 500, 599] {
            assert_eq!(
                reuse(code, &[("cache-control", understood)]),
                None,
                "{code}"
            );
            let without = "must-understand, max-age=60";
            assert_eq!(reuse(code, &[("cache-control", without)]), None, "{code}");
        }
        // Without it, no-store holds and 599 with max-age is stored.
        assert_eq!(
            reuse(200, &[("cache-control", "no-store, max-age=60")]),
            None
        );
        assert!(reuse(599, &[("cache-control", "max-age=60")]).is_some());
        // Still not past private.
        let private = "private, no-store, must-understand, max-age=60";
        assert_eq!(reuse(200, &[("cache-control", private)]), None);
    }

    /// A targeted field obeyed stands in for `Cache-Control` and
    /// `Expires`: its `s-maxage` or `max-age` is the whole explicit
    /// lifetime.
    #[test]
    fn a_targeted_field_gives_the_lifetime() {
        let cdn = [HeaderName::from_static("cdn-cache-control")];
        let targeted = |pairs: &[(&str, &str)]| {
            storable(StatusCode::OK, &headers(pairs), NOW, &cdn).map(|r| r.lifetime_ms)
        };
        let expires = date_str(NOW + 600_000);
        assert_eq!(
            targeted(&[
                ("cdn-cache-control", "max-age=60"),
                ("cache-control", "max-age=5")
            ]),
            Some(60_000)
        );
        assert_eq!(
            targeted(&[("cdn-cache-control", "s-maxage=7, max-age=60")]),
            Some(7_000)
        );
        // Expires is not read once the field speaks: nothing to serve
        // fresh, nothing to revalidate with — not stored.
        for field in ["public", "must-revalidate"] {
            assert_eq!(
                targeted(&[("cdn-cache-control", field), ("expires", &expires)]),
                None,
                "{field}"
            );
        }
        // Without the field, or with a broken one, Cache-Control and Expires.
        assert_eq!(targeted(&[("expires", &expires)]), Some(600_000));
        assert_eq!(
            targeted(&[
                ("cdn-cache-control", "max-age=\"60\""),
                ("cache-control", "max-age=5")
            ]),
            Some(5_000)
        );
    }

    #[test]
    fn initial_age_takes_the_larger_estimate() {
        // Apparent age from Date.
        let d = date_str(NOW - 30_000);
        assert_eq!(initial_age_ms(&headers(&[("date", &d)]), NOW, NOW), 30_000);
        // Age plus the request's time.
        assert_eq!(
            initial_age_ms(&headers(&[("age", "50")]), NOW - 2_000, NOW),
            52_000
        );
        assert_eq!(
            initial_age_ms(&headers(&[("age", "50"), ("date", &d)]), NOW, NOW),
            50_000
        );
        // Of several values, the first counts: on one line or on two.
        for first_old in [&[("age", "7200, 0")][..], &[("age", "7200"), ("age", "0")]] {
            assert_eq!(initial_age_ms(&headers(first_old), NOW, NOW), 7_200_000);
        }
        for first_new in [&[("age", "0, 7200")][..], &[("age", "0"), ("age", "7200")]] {
            assert_eq!(initial_age_ms(&headers(first_new), NOW, NOW), 0);
        }
        // Junk Age is ignored; a huge one is capped.
        assert_eq!(initial_age_ms(&headers(&[("age", "x")]), NOW, NOW), 0);
        assert_eq!(
            initial_age_ms(&headers(&[("age", "99999999999999999999")]), NOW, NOW),
            MAX_DELTA * 1000
        );
    }

    #[test]
    fn dates_round_trip_in_every_format() {
        let h = HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(&h), Some(784_111_777_000));
        let h = HeaderValue::from_static("Sunday, 06-Nov-94 08:49:37 GMT");
        assert_eq!(http_date(&h), Some(784_111_777_000));
        let h = HeaderValue::from_static("Sun Nov  6 08:49:37 1994");
        assert_eq!(http_date(&h), Some(784_111_777_000));
        assert_eq!(
            http_date(&format_date(784_111_777_000)),
            Some(784_111_777_000)
        );
        assert_eq!(http_date(&HeaderValue::from_static("0")), None);
    }
}
