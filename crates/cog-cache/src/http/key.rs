//! Cache keys: the effective request URI, variants, tenants' namespaces.

use std::cell::RefCell;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Uri};

use super::shared::Shared;

/// The method (`HEAD` is answered from `GET`'s entries) and the effective
/// request URI (RFC 9110 §7.1): scheme (`http` unless the URI names one),
/// host (from the URI, else `Host`; lower-cased), path and query.
pub(super) fn base_key(parts: &Parts) -> String {
    let (scheme, host) = origin(parts);
    key_of(scheme, host, path_of(parts))
}

fn path_of(parts: &Parts) -> &str {
    parts.uri.path_and_query().map_or("/", |p| p.as_str())
}

/// The request's scheme (`http` unless the URI names one) and host (from
/// the URI, else `Host`; as sent).
pub(super) fn origin(parts: &Parts) -> (&str, &str) {
    origin_from(parts, || parts.headers.get(header::HOST))
}

fn origin_from<'a>(
    parts: &'a Parts,
    host_field: impl FnOnce() -> Option<&'a HeaderValue>,
) -> (&'a str, &'a str) {
    let scheme = parts.uri.scheme_str().unwrap_or("http");
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| host_field()?.to_str().ok())
        .unwrap_or("");
    (scheme, host)
}

/// Runs `f` with the request's [`base_key`] (its first `Host` field
/// already found, by [`Asked`](super::cache_control::Asked)) written into
/// a buffer this thread reuses: the hit path only looks the key up, and a
/// `String` per request is an allocation and a free. The buffer keeps at
/// most [`KEPT_KEY`] bytes between requests.
pub(super) fn with_base_key<R>(
    parts: &Parts,
    host_field: Option<&HeaderValue>,
    f: impl FnOnce(&String) -> R,
) -> R {
    let (scheme, host) = origin_from(parts, || host_field);
    KEY.with(|key| {
        // In use further up this thread's stack: a key of its own.
        let Ok(mut key) = key.try_borrow_mut() else {
            return f(&key_of(scheme, host, path_of(parts)));
        };
        key.clear();
        push_key(&mut key, scheme, host, path_of(parts));
        let out = f(&key);
        if key.capacity() > KEPT_KEY {
            *key = String::new();
        }
        out
    })
}

/// The most a thread's reused key buffer keeps between requests.
const KEPT_KEY: usize = 4096;

thread_local! {
    /// [`with_base_key`]'s buffer.
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(super) fn key_of(scheme: &str, host: &str, path: &str) -> String {
    let mut key = String::with_capacity(8 + scheme.len() + host.len() + path.len());
    push_key(&mut key, scheme, host, path);
    key
}

fn push_key(key: &mut String, scheme: &str, host: &str, path: &str) {
    key.push_str("GET ");
    key.push_str(scheme);
    key.push_str("://");
    let at = key.len();
    key.push_str(host);
    // In place, not char by char: this runs on every request.
    key[at..].make_ascii_lowercase();
    key.push_str(path);
}

/// The key of a variant: the base key, the variants' id, and the values of
/// the request headers they vary on, byte for byte. A header the request does not carry
/// is written `!name` (no `=`, which a name cannot hold), so that it
/// matches only requests without it — not one carrying it empty (RFC 9111
/// §4.1).
pub(super) fn variant_key(base: &str, id: u64, names: &[String], headers: &HeaderMap) -> String {
    let mut key = String::with_capacity(base.len() + 20 + 32 * names.len());
    key.push_str(base);
    key.push_str("\n#");
    key.push_str(&id.to_string());
    for name in names {
        key.push('\n');
        if !headers.contains_key(name.as_str()) {
            key.push('!');
            key.push_str(name);
            continue;
        }
        key.push_str(name);
        key.push('=');
        for (i, v) in headers.get_all(name.as_str()).iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            // Byte for byte (each byte the char of that number, as
            // Latin-1 reads it): decoded as UTF-8, every byte that is not
            // became U+FFFD, and values differing only there shared a
            // variant — `x-user: J\xfcrgen` and `J\xe4rgen` one answer.
            key.extend(v.as_bytes().iter().map(|&b| char::from(b)));
        }
    }
    key
}

/// The namespace of a request's entries: its tenant; without one, for a
/// request with `Authorization` (allowed by `cache_authorized`), its own
/// credential's; else the shared one.
pub(super) fn namespace(shared: &Shared, parts: &Parts) -> String {
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

/// The cache key a `Location` / `Content-Location` names, if it is on the
/// request's own host (a relative reference always is).
pub(super) fn same_origin_key(value: &HeaderValue, scheme: &str, host: &str) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut req = http::Request::get(uri);
        if let Some(h) = host {
            req = req.header(header::HOST, h);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_reused_key_is_each_request_s_base_key() {
        let requests = [
            parts("/a?q=1", Some("Api.Example")),
            parts("/b", None),
            parts("https://Other.example:8443/c", Some("ignored.example")),
            parts("/a?q=1", Some("api.example")),
        ];
        for p in &requests {
            let host = p.headers.get(header::HOST);
            assert_eq!(with_base_key(p, host, String::clone), base_key(p));
            // Used again from inside: a key of its own, the same text.
            let nested = with_base_key(p, host, |outer| {
                (
                    outer.clone(),
                    with_base_key(&requests[1], None, String::clone),
                )
            });
            assert_eq!(nested, (base_key(p), base_key(&requests[1])));
        }
        assert_eq!(base_key(&requests[0]), "GET http://api.example/a?q=1");
        assert_eq!(base_key(&requests[2]), "GET https://other.example:8443/c");
        // As much as a long key needs, then given back.
        let capacity = || KEY.with(|k| k.borrow().capacity());
        let long = parts(&format!("/{}", "x".repeat(KEPT_KEY)), Some("h"));
        let key = with_base_key(&long, long.headers.get(header::HOST), String::clone);
        assert_eq!(key, base_key(&long));
        assert_eq!(capacity(), 0);
        // "GET http://h" and a path: exactly the limit, which is kept.
        let at_limit = parts(&format!("/{}", "x".repeat(KEPT_KEY - 13)), Some("h"));
        let key = with_base_key(&at_limit, at_limit.headers.get(header::HOST), |k| {
            (k.len(), k.capacity())
        });
        assert_eq!(key, (KEPT_KEY, KEPT_KEY));
        assert_eq!(capacity(), KEPT_KEY, "kept at the limit");
    }

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

    /// RFC 9111 §4.1: a header absent from the request matches only
    /// requests where it is absent too — not one where it is empty.
    #[test]
    fn an_absent_header_is_not_an_empty_one() {
        let names = vec!["x-flag".to_owned(), "accept".to_owned()];
        let absent = HeaderMap::new();
        let mut empty = HeaderMap::new();
        empty.insert("x-flag", HeaderValue::from_static(""));
        assert_ne!(
            variant_key("GET /", 1, &names, &absent),
            variant_key("GET /", 1, &names, &empty)
        );
        // Nor a header named like the marker of an absent one.
        let marked = vec!["!x-flag".to_owned(), "accept".to_owned()];
        let mut odd = HeaderMap::new();
        odd.insert("!x-flag", HeaderValue::from_static(""));
        assert_ne!(
            variant_key("GET /", 1, &names, &absent),
            variant_key("GET /", 1, &marked, &odd)
        );
    }

    #[test]
    fn values_are_compared_byte_for_byte() {
        let names = vec!["x-user".to_owned()];
        let key = |v: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert("x-user", HeaderValue::from_bytes(v).unwrap());
            variant_key("GET /", 1, &names, &h)
        };
        // Two Latin-1 names, neither UTF-8; the UTF-8 spelling of one;
        // the replacement character a lossy reading made of both.
        let values: [&[u8]; 4] = [
            b"J\xfcrgen",
            b"J\xe4rgen",
            "Jürgen".as_bytes(),
            "J\u{fffd}rgen".as_bytes(),
        ];
        for (i, a) in values.iter().enumerate() {
            for b in &values[i + 1..] {
                assert_ne!(key(a), key(b));
            }
        }
        // Text stays as it was.
        assert_eq!(key(b"en-GB"), "GET /\n#1\nx-user=en-GB");
    }

    #[test]
    fn several_fields_of_a_name_match_their_combined_value() {
        // RFC 9111 §4.1: fields of one name are compared as one value,
        // joined with commas.
        let names = vec!["accept".to_owned()];
        let mut two = HeaderMap::new();
        two.append("accept", "a".parse().unwrap());
        two.append("accept", "b".parse().unwrap());
        let mut one = HeaderMap::new();
        one.insert("accept", "a,b".parse().unwrap());
        assert_eq!(
            variant_key("GET /", 1, &names, &two),
            variant_key("GET /", 1, &names, &one)
        );
        // And kept apart: `ab` is another value.
        let mut joined = HeaderMap::new();
        joined.insert("accept", "ab".parse().unwrap());
        assert_ne!(
            variant_key("GET /", 1, &names, &two),
            variant_key("GET /", 1, &names, &joined)
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
