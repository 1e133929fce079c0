//! Responses from stored entries: `200`s with `Age` and `Cache-Status`,
//! and `304`s for the client's own conditionals.

use std::cell::RefCell;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use super::CacheBody;
use super::freshness::{self};
use cog_core::text::{HeaderText, number_value};

use super::stored::Stored;

/// Seconds of freshness left (negative: stale for that long).
pub(super) fn ttl(stored: &Stored, now: u64) -> i64 {
    (stored.fresh_until() as i64 - now as i64).div_euclid(1000)
}

/// A fresh entry's answer: `304` when the request's own validators match
/// it (RFC 9110 §13.1.2, weak comparison), else the stored response.
/// `conditional`: the request has `If-None-Match` or `If-Modified-Since`
/// (see [`Asked`](super::cache_control::Asked)); without, the validators
/// are not looked for.
pub(super) fn answer_or_not_modified<B>(
    stored: &Stored,
    headers: &HeaderMap,
    conditional: bool,
    head: bool,
    now: u64,
) -> Response<CacheBody<B>> {
    if !(conditional && not_modified(stored, headers)) {
        return answer(stored, head, now, "hit");
    }
    let mut res = Response::new(CacheBody::default());
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
    out.insert(header::AGE, number_value(stored.age_ms(now) / 1000));
    if let Some(v) = cache_status("hit", ttl(stored, now)) {
        out.insert(CACHE_STATUS, v);
    }
    res
}

const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// `cog; <kind>; ttl=<n>`. This runs on every hit, and a hot entry's hits
/// within one second write the same text: each thread keeps the last value
/// it wrote and shares it (a count on the thread's own value) while kind
/// and `ttl` stay the same; otherwise it is written without the formatting
/// machinery, with one allocation.
fn cache_status(kind: &'static str, ttl: i64) -> Option<HeaderValue> {
    thread_local! {
        static LAST: RefCell<Option<(&'static str, i64, HeaderValue)>> =
            const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((k, t, v)) = &*last
            && *k == kind
            && *t == ttl
        {
            return Some(v.clone());
        }
        let mut status = HeaderText::new();
        status.push_str("cog; ");
        status.push_str(kind);
        status.push_str("; ttl=");
        status.push_i64(ttl);
        let value = status.to_value()?;
        *last = Some((kind, ttl, value.clone()));
        Some(value)
    })
}

/// Whether the request's `If-None-Match` (or, without it,
/// `If-Modified-Since`) matches `stored`.
pub(super) fn not_modified(stored: &Stored, headers: &HeaderMap) -> bool {
    if stored.status != 200 {
        return false;
    }
    if headers.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = stored.header(&header::ETAG) else {
            return false;
        };
        let ours = etag.strip_prefix(b"W/").unwrap_or(etag);
        return headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .any(|v| lists_tag(v.as_bytes(), ours));
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(freshness::http_date);
    let modified = stored
        .header(&header::LAST_MODIFIED)
        .and_then(|v| freshness::http_date(&HeaderValue::from_maybe_shared(v.clone()).ok()?));
    matches!((since, modified), (Some(s), Some(m)) if m <= s)
}

/// Whether an `If-None-Match` value lists `ours` (its opaque tag, weak
/// prefix dropped), or is `*` — weak comparison (RFC 9110 §8.8.3.2). A
/// quoted tag ends at its closing quote, commas inside it included
/// (`etagc` allows them); an unquoted one, as some origins send, at the
/// next comma.
fn lists_tag(mut list: &[u8], ours: &[u8]) -> bool {
    loop {
        list = list.trim_ascii_start();
        while let [b',', rest @ ..] = list {
            list = rest.trim_ascii_start();
        }
        if list.is_empty() {
            return false;
        }
        let tag = list.strip_prefix(b"W/").unwrap_or(list);
        let (candidate, rest) = match tag.first() {
            Some(b'"') => match tag[1..].iter().position(|&b| b == b'"') {
                Some(end) => tag.split_at(end + 2),
                None => (tag, &b""[..]),
            },
            _ => {
                let end = tag.iter().position(|&b| b == b',').unwrap_or(tag.len());
                let (token, rest) = tag.split_at(end);
                (token.trim_ascii_end(), rest)
            }
        };
        if candidate == b"*" || candidate == ours {
            return true;
        }
        list = rest;
    }
}

/// A response from a stored entry.
pub(super) fn answer<B>(
    stored: &Stored,
    head: bool,
    now: u64,
    kind: &'static str,
) -> Response<CacheBody<B>> {
    let body = if head {
        Bytes::new()
    } else {
        stored.body.clone()
    };
    let mut res = Response::new(CacheBody::stored(body));
    *res.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let headers = res.headers_mut();
    // Room for the layers outside too (rate-limit fields, `traceparent`,
    // `content-length`…): a map that grows copies itself.
    let parsed = stored.parsed_headers();
    headers.reserve(parsed.len() + 8);
    for (name, value) in parsed {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(header::AGE, number_value(stored.age_ms(now) / 1000));
    if let Some(v) = cache_status(kind, ttl(stored, now)) {
        headers.insert(CACHE_STATUS, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists_are_read_tag_by_tag() {
        let ours = br#""a,b""#;
        for (list, listed) in [
            (r#""a,b""#, true),
            (r#"W/"a,b""#, true),
            (r#""x", W/"a,b" , "y""#, true),
            (r#" , ,"a,b","#, true),
            (r#""a", "b""#, false),
            (r#""a,b"#, false),
            ("a,b", false),
            ("*", true),
            (r#""x", *"#, true),
            ("", false),
            (",,", false),
        ] {
            assert_eq!(lists_tag(list.as_bytes(), ours), listed, "{list}");
        }
        // Unquoted tags (some origins send them) compare up to a comma.
        assert!(lists_tag(b"x, abc ,y", b"abc"));
        assert!(lists_tag(b"W/abc", b"abc"));
        assert!(!lists_tag(b"abcd", b"abc"));
        assert!(lists_tag(br#""q", "abc""#, br#""abc""#));
        assert!(!lists_tag(br#""q", "abc""#, br#""ab""#));
    }

    #[test]
    fn cache_status_is_written_anew_when_kind_or_ttl_change() {
        let text = |kind, ttl| {
            cache_status(kind, ttl)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(text("hit", 5), "cog; hit; ttl=5");
        // The kept value, then every change of either part.
        assert_eq!(text("hit", 5), "cog; hit; ttl=5");
        assert_eq!(text("hit", 6), "cog; hit; ttl=6");
        assert_eq!(text("fwd=stale", 6), "cog; fwd=stale; ttl=6");
        assert_eq!(text("hit", 6), "cog; hit; ttl=6");
        assert_eq!(text("hit", -3), "cog; hit; ttl=-3");
        // Each thread keeps its own.
        std::thread::spawn(move || assert_eq!(text("hit", 7), "cog; hit; ttl=7"))
            .join()
            .unwrap();
        assert_eq!(text("hit", -3), "cog; hit; ttl=-3");
    }
}
