//! HTTP semantic-convention attribute values shared by the server and
//! client layers: the method table, addresses, sizes, the redacted query.

use http::request::Parts;
use http::{HeaderMap, Method, header};

pub(crate) fn method_attr(method: &Method) -> (&'static str, bool) {
    let i = method_index(method);
    (METHODS[i], i + 1 < METHODS.len())
}

/// The known methods, then `_OTHER`.
pub(crate) const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "_OTHER",
];

pub(crate) fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::HEAD => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        Method::CONNECT => 7,
        Method::TRACE => 8,
        _ => 9,
    }
}

pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `a=1&b=2` → `a=REDACTED&b=REDACTED`: keys stay, values go. Byte
/// scans (`&` and `=` are ASCII), not `str::split`, whose searcher costs
/// ten times more on a short query.
pub(crate) fn redact_query(q: &str) -> String {
    // Exactly the size of the result: the attribute keeps it as a boxed
    // `str`, and spare capacity would cost a reallocation there.
    let (mut len, mut in_value) = (0, false);
    for b in q.bytes() {
        match b {
            b'&' => (len, in_value) = (len + 1, false),
            b'=' if !in_value => (len, in_value) = (len + "=REDACTED".len(), true),
            _ if !in_value => len += 1,
            _ => {}
        }
    }
    let mut out = String::with_capacity(len);
    let mut rest = q;
    loop {
        let end = rest.bytes().position(|b| b == b'&').unwrap_or(rest.len());
        let pair = &rest[..end];
        match pair.bytes().position(|b| b == b'=') {
            Some(eq) => {
                out.push_str(&pair[..eq]);
                out.push_str("=REDACTED");
            }
            None => out.push_str(pair),
        }
        if end == rest.len() {
            return out;
        }
        out.push('&');
        rest = &rest[end + 1..];
    }
}

/// `server.address` and `server.port`: from the URI (HTTP/2, proxies) or
/// the `Host` header.
pub(crate) fn server_address(parts: &Parts) -> Option<(String, Option<u16>)> {
    if let Some(host) = parts.uri.host() {
        return Some((host.to_owned(), parts.uri.port_u16()));
    }
    let host = parts.headers.get(header::HOST)?.to_str().ok()?;
    split_host_port(host).map(|(h, p)| (h.to_owned(), p))
}

/// `example.com:8443` → (`example.com`, 8443); `[::1]:80` → (`[::1]`, 80).
/// `None` for anything that is not a plausible host (a header is not
/// trusted to be well formed).
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match s.rfind(':') {
        // A colon inside brackets belongs to an IPv6 address.
        Some(i) if !s[i..].contains(']') => (&s[..i], Some(s[i + 1..].parse::<u16>().ok()?)),
        _ => (s, None),
    };
    let plausible = !host.is_empty()
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
        });
    plausible.then_some((host, port))
}

/// `client.address`: the peer, or behind `trusted_hops` proxies the entry
/// of `X-Forwarded-For` the farthest trusted one wrote. `None` without a
/// peer address: the chain cannot be anchored then, and the entries the
/// proxies wrote cannot be told from those a client sent.
pub(crate) fn client_address(
    headers: &HeaderMap,
    parts: &Parts,
    trusted_hops: usize,
) -> Option<String> {
    let peer = cog_core::peer::addr(parts)?.ip();
    if trusted_hops == 0 {
        return Some(peer.to_string());
    }
    let mut chain: Vec<&str> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        chain.extend(v.to_str().ok()?.split(',').map(str::trim));
    }
    // The peer is the last hop, trusted too: `trusted_hops` back from it.
    let idx = chain.len().checked_sub(trusted_hops)?;
    Some(chain[idx].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_redacted() {
        assert_eq!(redact_query("a=1&b=2"), "a=REDACTED&b=REDACTED");
        assert_eq!(redact_query("flag&x=&=y"), "flag&x=REDACTED&=REDACTED");
        assert_eq!(redact_query(""), "");
        // As the obvious `split` version does it, over awkward inputs.
        let reference = |q: &str| {
            q.split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) => format!("{k}=REDACTED"),
                    None => pair.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("&")
        };
        for q in [
            "a",
            "&",
            "&&",
            "=",
            "a=",
            "=b",
            "a=1&",
            "&a=1",
            "a==b",
            "a=1=2&b",
            "é=ü&ß",
            "k=v&&k2",
            "x=%20&y=a+b",
            "🙂=🙃",
        ] {
            let redacted = redact_query(q);
            assert_eq!(redacted, reference(q), "{q}");
            assert_eq!(redacted.capacity(), redacted.len(), "{q}");
        }
    }

    #[test]
    fn the_client_is_the_peer_or_the_farthest_trusted_proxy_s_entry() {
        let parts = |xff: &[&str], peer: Option<&str>| {
            let mut req = http::Request::builder();
            for v in xff {
                req = req.header("x-forwarded-for", *v);
            }
            let (mut parts, ()) = req.body(()).unwrap().into_parts();
            if let Some(p) = peer {
                parts
                    .extensions
                    .insert(p.parse::<std::net::SocketAddr>().unwrap());
            }
            parts
        };
        let at = |p: &Parts, hops| client_address(&p.headers, p, hops);
        let p = parts(&["6.6.6.6, 1.2.3.4", "5.5.5.5"], Some("10.0.0.1:80"));
        assert_eq!(at(&p, 0).as_deref(), Some("10.0.0.1"));
        assert_eq!(at(&p, 1).as_deref(), Some("5.5.5.5"));
        assert_eq!(at(&p, 2).as_deref(), Some("1.2.3.4"));
        assert_eq!(at(&p, 3).as_deref(), Some("6.6.6.6"));
        assert_eq!(at(&p, 4), None, "more hops trusted than there are");
        let direct = parts(&[], Some("10.0.0.1:80"));
        assert_eq!(at(&direct, 1), None);
        // No peer: nothing anchors the chain, so no entry is trusted (a
        // client's own `6.6.6.6` would otherwise pass for the client).
        let no_peer = parts(&["6.6.6.6, 1.2.3.4"], None);
        for hops in 0..4 {
            assert_eq!(at(&no_peer, hops), None, "{hops}");
        }
    }

    #[test]
    fn host_header_is_split_defensively() {
        assert_eq!(
            split_host_port("api.example.com"),
            Some(("api.example.com", None))
        );
        assert_eq!(
            split_host_port("api.example.com:8443"),
            Some(("api.example.com", Some(8443)))
        );
        assert_eq!(split_host_port("[::1]:80"), Some(("[::1]", Some(80))));
        assert_eq!(split_host_port("[::1]"), Some(("[::1]", None)));
        for bad in ["", ":80", "a b", "host:99999", "host:port", "évil", "a/b"] {
            assert_eq!(split_host_port(bad), None, "{bad}");
        }
    }
}
