//! Who a request counts against: [`KeyExtractor`] and its implementations.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::request::Parts;
use http::{HeaderName, Method, header};
use sha2::{Digest, Sha256};

/// Picks the subject a request is counted against.
///
/// Returning `None` lets the request through unlimited (for example, no
/// API key: leave refusing it to authentication). Subjects may be any
/// string: stores escape or hash them before use.
///
/// An extractor that can fail to identify a request for reasons that must
/// not mean "unlimited" (a missing client address, a forged header)
/// overrides [`subject`](Self::subject), which the layer calls, to answer
/// [`Subject::Reject`] or a shared key instead.
///
/// Implemented for closures `Fn(&Parts) -> Option<String>`, and for pairs
/// `(A, B)` (both must be present; the subject is `"a|b"` with each part
/// length-prefixed so pairs cannot collide).
pub trait KeyExtractor: Send + Sync + 'static {
    /// The subject for this request, if any.
    fn extract(&self, parts: &Parts) -> Option<String>;

    /// What the layer does with this request. By default: a key from
    /// [`extract`](Self::extract), or [`Subject::Unlimited`] without one.
    fn subject(&self, parts: &Parts) -> Subject {
        match self.extract(parts) {
            Some(key) => Subject::Key(key),
            None => Subject::Unlimited,
        }
    }
}

/// What a [`KeyExtractor`] makes of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// Count the request against this subject.
    Key(String),
    /// Let it through without a limit (e.g. no API key: authentication
    /// refuses it, not the limiter).
    Unlimited,
    /// Refuse it: the layer answers `400 Bad Request` (e.g. the client's
    /// address cannot be told, and [`PeerIp::when_unknown`] says so).
    Reject,
}

impl<F> KeyExtractor for F
where
    F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
{
    fn extract(&self, parts: &Parts) -> Option<String> {
        self(parts)
    }
}

impl<A: KeyExtractor, B: KeyExtractor> KeyExtractor for (A, B) {
    fn extract(&self, parts: &Parts) -> Option<String> {
        let a = self.0.extract(parts)?;
        let b = self.1.extract(parts)?;
        Some(pair(&a, &b))
    }

    /// Refused if either refuses; unlimited if either is; else the pair.
    fn subject(&self, parts: &Parts) -> Subject {
        match (self.0.subject(parts), self.1.subject(parts)) {
            (Subject::Reject, _) | (_, Subject::Reject) => Subject::Reject,
            (Subject::Key(a), Subject::Key(b)) => Subject::Key(pair(&a, &b)),
            _ => Subject::Unlimited,
        }
    }
}

fn pair(a: &str, b: &str) -> String {
    format!("{}:{a}|{b}", a.len())
}

/// One subject for every request: a global limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl KeyExtractor for Global {
    fn extract(&self, _: &Parts) -> Option<String> {
        Some("global".to_owned())
    }
}

/// The value of a request header, e.g. `X-Tenant-Id`.
#[derive(Debug, Clone)]
pub struct Header(pub HeaderName);

impl KeyExtractor for Header {
    fn extract(&self, parts: &Parts) -> Option<String> {
        let v = parts.headers.get(&self.0)?;
        Some(match v.to_str() {
            Ok(s) => s.to_owned(),
            // Opaque bytes: hex, marked so it cannot equal a text value.
            Err(_) => format!("\u{fffd}{}", hex(v.as_bytes())),
        })
    }
}

/// The caller's API key, from `Authorization: Bearer <key>` or an
/// `X-Api-Key` header — hashed (SHA-256), so the key itself never reaches
/// a store, a log or a span.
#[derive(Clone, Default)]
pub struct ApiKey {
    header: Option<HeaderName>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("header", &self.header)
            .finish()
    }
}

impl ApiKey {
    /// Reads `Authorization: Bearer …`, else `X-Api-Key`.
    pub fn new() -> Self {
        ApiKey { header: None }
    }

    /// Reads the key from this header instead.
    pub fn from_header(header: HeaderName) -> Self {
        ApiKey {
            header: Some(header),
        }
    }

    fn raw<'a>(&self, parts: &'a Parts) -> Option<&'a [u8]> {
        if let Some(h) = &self.header {
            return parts.headers.get(h).map(|v| v.as_bytes());
        }
        if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
            let b = auth.as_bytes();
            if b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ") {
                return Some(b[7..].trim_ascii());
            }
        }
        parts
            .headers
            .get("x-api-key")
            .map(|v| v.as_bytes().trim_ascii())
    }
}

impl KeyExtractor for ApiKey {
    fn extract(&self, parts: &Parts) -> Option<String> {
        let raw = self.raw(parts).filter(|k| !k.is_empty())?;
        Some(format!("key:{}", &hex(&Sha256::digest(raw))[..32]))
    }
}

/// The client's IP address: the connection's peer, or — behind trusted
/// proxies — the address they report in `X-Forwarded-For`.
///
/// The peer address is read from a [`PeerAddr`] or [`SocketAddr`] request
/// extension, or (feature `axum`) axum's `ConnectInfo<SocketAddr>`, which
/// `into_make_service_with_connect_info::<SocketAddr>()` adds; other
/// servers can be set up to add one of the first two.
///
/// With `trusted_hops(n)`, the last `n` hops before us are trusted
/// proxies: the client is the `n`-th address from the right of
/// `X-Forwarded-For` + peer. Addresses a client puts further left are
/// ignored, so a client cannot choose its own key by sending the header.
///
/// An IPv6 client is keyed by its `/64` network by default: a host
/// usually holds a whole `/64` and can pick any address in it, so a key
/// per address would let one client mint 2^64 of them and never be
/// limited. [`ipv6_prefix`](Self::ipv6_prefix) widens or narrows that
/// (`128`: each address apart); [`ipv4_prefix`](Self::ipv4_prefix) groups
/// IPv4 clients the same way (default `32`, each address apart). An IPv4
/// address mapped into IPv6 (`::ffff:a.b.c.d`) is taken as the IPv4 one.
///
/// When the client's address cannot be told — no peer address extension,
/// fewer `X-Forwarded-For` entries than trusted hops, an entry that is not
/// an address, a header that is not text — the request is never
/// unlimited by accident: by default all such requests share one subject
/// (`"unknown"`, one bucket for every unidentifiable client);
/// [`when_unknown`](Self::when_unknown) can refuse them instead.
#[derive(Debug, Clone, Copy)]
pub struct PeerIp {
    trusted_hops: usize,
    unknown: UnknownClient,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
}

impl Default for PeerIp {
    fn default() -> Self {
        PeerIp {
            trusted_hops: 0,
            unknown: UnknownClient::default(),
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }
}

/// What [`PeerIp`] does with a request whose client address cannot be
/// told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnknownClient {
    /// Count all of them against one shared subject, `"unknown"`.
    #[default]
    Shared,
    /// Refuse them (`400 Bad Request`).
    Reject,
    /// Let them through unlimited — the behaviour before 0.2; only where
    /// something in front guarantees an address.
    Unlimited,
}

/// The subject [`PeerIp`] shares among clients it cannot tell apart.
pub const UNKNOWN_CLIENT: &str = "unknown";

/// The remote address of a request's connection, as a request extension
/// (shared with cog-trace, which records it as `client.address`).
pub use cog_core::peer::PeerAddr;

impl PeerIp {
    /// The connection's peer address; `X-Forwarded-For` is ignored.
    pub fn new() -> Self {
        PeerIp::default()
    }

    /// What to do when the client's address cannot be told (default
    /// [`UnknownClient::Shared`]).
    pub fn when_unknown(mut self, unknown: UnknownClient) -> Self {
        self.unknown = unknown;
        self
    }

    /// Trusts `hops` proxies in front of this service (see the type docs).
    pub fn trusted_hops(mut self, hops: usize) -> Self {
        self.trusted_hops = hops;
        self
    }

    /// Keys IPv6 clients by their first `bits` bits (default 64; 128 keys
    /// each address apart; more than 128 is taken as 128). The subject is
    /// the network, e.g. `"2001:db8:1:2::/64"`, or the bare address at 128.
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = bits.min(128);
        self
    }

    /// Keys IPv4 clients by their first `bits` bits (default 32: each
    /// address apart; more than 32 is taken as 32). The subject is the
    /// network, e.g. `"192.0.2.0/24"`, or the bare address at 32.
    pub fn ipv4_prefix(mut self, bits: u8) -> Self {
        self.ipv4_prefix = bits.min(32);
        self
    }

    /// The subject of a client address: the address, or its network under
    /// the configured prefix.
    fn key_of(&self, ip: IpAddr) -> String {
        match ip.to_canonical() {
            IpAddr::V4(v4) if self.ipv4_prefix >= 32 => v4.to_string(),
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.ipv4_prefix));
                let net = std::net::Ipv4Addr::from(v4.to_bits() & mask.unwrap_or(0));
                format!("{net}/{}", self.ipv4_prefix)
            }
            IpAddr::V6(v6) if self.ipv6_prefix >= 128 => v6.to_string(),
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.ipv6_prefix));
                let net = std::net::Ipv6Addr::from(v6.to_bits() & mask.unwrap_or(0));
                format!("{net}/{}", self.ipv6_prefix)
            }
        }
    }

    /// The client address under this trust setting; `None` when it cannot
    /// be told (see the type docs).
    pub fn client_ip(&self, parts: &Parts) -> Option<IpAddr> {
        let Some(peer) = cog_core::peer::addr(parts) else {
            no_peer_address();
            return None;
        };
        let peer = peer.ip();
        if self.trusted_hops == 0 {
            return Some(peer);
        }
        // Hops, nearest last: every X-Forwarded-For entry in order, then the
        // peer. Walk back over the trusted proxies.
        let mut chain: Vec<&str> = Vec::new();
        for v in parts.headers.get_all("x-forwarded-for") {
            // Not text: the chain cannot be read, so neither can the client.
            chain.extend(v.to_str().ok()?.split(',').map(str::trim));
        }
        let idx = chain.len().checked_sub(self.trusted_hops)?;
        // Index `chain.len()` is the peer itself.
        if idx == chain.len() {
            return Some(peer);
        }
        let hop = chain[idx];
        hop.parse::<IpAddr>()
            .ok()
            .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
    }
}

/// Says once per process that a request came without a peer address: the
/// server adds none of the extensions [`PeerIp`] reads, and every client
/// is then "unknown" — one subject for all, or all refused.
fn no_peer_address() {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            target: "cog_ratelimit",
            "PeerIp: a request has no peer address (no PeerAddr, SocketAddr or, with the \
             `axum` feature, ConnectInfo<SocketAddr> extension); such clients cannot be \
             told apart"
        );
    }
}

impl KeyExtractor for PeerIp {
    /// The client's address; for an unknown one, [`UNKNOWN_CLIENT`] unless
    /// [`when_unknown`](PeerIp::when_unknown) says otherwise (`None`).
    fn extract(&self, parts: &Parts) -> Option<String> {
        match self.subject(parts) {
            Subject::Key(key) => Some(key),
            Subject::Unlimited | Subject::Reject => None,
        }
    }

    fn subject(&self, parts: &Parts) -> Subject {
        match self.client_ip(parts) {
            // Canonical form, so one client has one key.
            Some(ip) => Subject::Key(self.key_of(ip)),
            None => match self.unknown {
                UnknownClient::Shared => Subject::Key(UNKNOWN_CLIENT.to_owned()),
                UnknownClient::Reject => Subject::Reject,
                UnknownClient::Unlimited => Subject::Unlimited,
            },
        }
    }
}

/// The request's method and route (`"GET /v1/items/{id}"`): one limit per
/// route. Combine with another extractor, e.g. `(ApiKey::new(), Route)`,
/// for per-caller-per-route limits.
///
/// The route is the template the router matched, where it says so: a
/// [`MatchedRoute`] extension, or (feature `axum`) axum's `MatchedPath` —
/// so `/v1/items/1` and `/v1/items/2` share one limit, and a client cannot
/// mint subjects by varying the path. Without either, the raw path.
/// Methods outside RFC 9110's (and `PATCH`) are all `_OTHER`, as in
/// OpenTelemetry's `http.request.method`: a client cannot mint subjects by
/// inventing methods either.
#[derive(Debug, Clone, Copy, Default)]
pub struct Route;

/// The route template a router matched for this request: [`Route`] keys
/// on it (shared with cog-trace, which names spans by it).
pub use cog_core::route::MatchedRoute;

impl KeyExtractor for Route {
    fn extract(&self, parts: &Parts) -> Option<String> {
        let route = route_template(parts).unwrap_or(parts.uri.path());
        let method = match parts.method {
            Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::CONNECT
            | Method::OPTIONS
            | Method::TRACE
            | Method::PATCH => parts.method.as_str(),
            _ => "_OTHER",
        };
        Some(format!("{method} {route}"))
    }
}

fn route_template(parts: &Parts) -> Option<&str> {
    cog_core::route::template(parts)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)], peer: Option<&str>) -> Parts {
        let mut req = http::Request::builder().uri("/v1/items?x=1");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        if let Some(p) = peer {
            parts.extensions.insert(p.parse::<SocketAddr>().unwrap());
        }
        parts
    }

    #[test]
    fn api_key_is_hashed_and_never_raw() {
        let p = parts(&[("authorization", "Bearer sk_live_secret")], None);
        let k = ApiKey::new().extract(&p).unwrap();
        assert!(k.starts_with("key:") && !k.contains("secret"));
        let p2 = parts(&[("x-api-key", "sk_live_secret")], None);
        assert_eq!(ApiKey::new().extract(&p2).unwrap(), k);
        assert_eq!(ApiKey::new().extract(&parts(&[], None)), None);
        assert_eq!(
            ApiKey::new().extract(&parts(&[("authorization", "Basic abc")], None)),
            None
        );
    }

    #[test]
    fn peer_ip_trust() {
        let p = parts(
            &[("x-forwarded-for", "6.6.6.6, 1.2.3.4")],
            Some("10.0.0.1:5000"),
        );
        assert_eq!(PeerIp::new().extract(&p).unwrap(), "10.0.0.1");
        assert_eq!(
            PeerIp::new().trusted_hops(1).extract(&p).unwrap(),
            "1.2.3.4"
        );
        // The client-supplied left-most entry is only used if we trust
        // that many hops.
        assert_eq!(
            PeerIp::new().trusted_hops(2).extract(&p).unwrap(),
            "6.6.6.6"
        );
        let v6 = parts(&[], Some("[::ffff:1.2.3.4]:80"));
        assert_eq!(PeerIp::new().extract(&v6).unwrap(), "1.2.3.4");
    }

    /// An IPv6 client is one subject per `/64` by default — it can pick any
    /// address there — and networks can be made wider or narrower, for
    /// IPv4 too.
    #[test]
    fn clients_are_keyed_by_their_network() {
        let key = |ip: PeerIp, peer: &str, xff: Option<&str>| {
            let headers: Vec<(&str, &str)> =
                xff.map(|x| ("x-forwarded-for", x)).into_iter().collect();
            ip.extract(&parts(&headers, Some(peer))).unwrap()
        };
        let ip = PeerIp::new();
        assert_eq!(
            key(ip, "[2001:db8:1:2:aaaa::1]:80", None),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            key(ip, "[2001:db8:1:2:ffff:ffff:ffff:ffff]:80", None),
            "2001:db8:1:2::/64"
        );
        assert_eq!(key(ip, "[2001:db8:1:3::1]:80", None), "2001:db8:1:3::/64");
        assert_eq!(
            key(ip.trusted_hops(1), "[::1]:80", Some("2001:db8::5")),
            "2001:db8::/64",
            "a forwarded address is grouped too"
        );
        // IPv4, and IPv4 mapped into IPv6, stay one subject per address.
        assert_eq!(key(ip, "1.2.3.4:80", None), "1.2.3.4");
        assert_eq!(key(ip, "[::ffff:1.2.3.4]:80", None), "1.2.3.4");
        for (bits, want) in [
            (128, "2001:db8:1:2:aaaa::1"),
            (200, "2001:db8:1:2:aaaa::1"),
            (127, "2001:db8:1:2:aaaa::/127"),
            (48, "2001:db8:1::/48"),
            (1, "::/1"),
            (0, "::/0"),
        ] {
            assert_eq!(
                key(ip.ipv6_prefix(bits), "[2001:db8:1:2:aaaa::1]:80", None),
                want,
                "/{bits}"
            );
        }
        assert_eq!(key(ip.ipv6_prefix(1), "[8001::1]:80", None), "8000::/1");
        for (bits, want) in [
            (32, "1.2.3.5"),
            (33, "1.2.3.5"),
            (31, "1.2.3.4/31"),
            (24, "1.2.3.0/24"),
            (1, "0.0.0.0/1"),
            (0, "0.0.0.0/0"),
        ] {
            assert_eq!(
                key(ip.ipv4_prefix(bits), "1.2.3.5:80", None),
                want,
                "/{bits}"
            );
            assert_eq!(
                key(ip.ipv4_prefix(bits), "[::ffff:1.2.3.5]:80", None),
                want,
                "mapped /{bits}"
            );
        }
        assert_eq!(key(ip.ipv4_prefix(1), "200.1.1.1:80", None), "128.0.0.0/1");
    }

    /// A client that cannot be told is never unlimited by accident: one
    /// shared subject by default, refused or unlimited only when asked.
    #[test]
    fn peer_ip_unknown_clients() {
        let p = parts(
            &[("x-forwarded-for", "6.6.6.6, 1.2.3.4")],
            Some("10.0.0.1:5000"),
        );
        let bad = parts(&[("x-forwarded-for", "not-an-ip")], Some("10.0.0.1:5000"));
        let mut binary = parts(&[], Some("10.0.0.1:5000"));
        binary.headers.insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap(),
        );
        let no_peer = parts(&[("x-forwarded-for", "1.2.3.4")], None);
        let unknown: [(&str, &Parts, usize); 5] = [
            ("too few hops", &p, 3),
            ("not an address", &bad, 1),
            ("not text", &binary, 1),
            ("no peer", &no_peer, 0),
            ("no peer, trusted hop", &no_peer, 1),
        ];
        for (why, parts, hops) in unknown {
            let ip = PeerIp::new().trusted_hops(hops);
            assert_eq!(ip.client_ip(parts), None, "{why}");
            assert_eq!(ip.subject(parts), Subject::Key("unknown".into()), "{why}");
            assert_eq!(ip.extract(parts).as_deref(), Some(UNKNOWN_CLIENT), "{why}");
            let reject = ip.when_unknown(UnknownClient::Reject);
            assert_eq!(reject.subject(parts), Subject::Reject, "{why}");
            assert_eq!(reject.extract(parts), None, "{why}");
            let open = ip.when_unknown(UnknownClient::Unlimited);
            assert_eq!(open.subject(parts), Subject::Unlimited, "{why}");
            // A pair with a refused half is refused.
            assert_eq!((Global, reject).subject(parts), Subject::Reject, "{why}");
            assert_eq!((reject, Global).subject(parts), Subject::Reject, "{why}");
            assert_eq!((open, Global).subject(parts), Subject::Unlimited, "{why}");
            assert_eq!(
                (ip, Global).subject(parts),
                Subject::Key("7:unknown|global".into()),
                "{why}"
            );
        }
        // Known clients are themselves whatever the setting.
        let reject = PeerIp::new()
            .trusted_hops(1)
            .when_unknown(UnknownClient::Reject);
        assert_eq!(reject.subject(&p), Subject::Key("1.2.3.4".into()));
        assert_eq!(
            (ApiKey::new(), reject).subject(&p),
            Subject::Unlimited,
            "no API key: unlimited, left to authentication"
        );
    }

    #[test]
    fn header_route_pairs_and_closures() {
        let p = parts(&[("x-tenant", "acme")], None);
        let h = Header(HeaderName::from_static("x-tenant"));
        assert_eq!(h.extract(&p).unwrap(), "acme");
        assert_eq!(Route.extract(&p).unwrap(), "GET /v1/items");
        let mut templated = parts(&[], None);
        templated
            .extensions
            .insert(MatchedRoute("/v1/items/{id}".into()));
        assert_eq!(Route.extract(&templated).unwrap(), "GET /v1/items/{id}");
        // Every standard method is itself; any other is one `_OTHER`.
        for m in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ] {
            templated.method = m.parse().unwrap();
            assert_eq!(
                Route.extract(&templated).unwrap(),
                format!("{m} /v1/items/{{id}}")
            );
        }
        for m in ["FOO", "get", "PROPFIND"] {
            templated.method = m.parse().unwrap();
            assert_eq!(
                Route.extract(&templated).unwrap(),
                "_OTHER /v1/items/{id}",
                "{m}"
            );
        }
        assert_eq!(
            (h.clone(), Route).extract(&p).unwrap(),
            "4:acme|GET /v1/items"
        );
        let f = |p: &Parts| p.headers.get("x-tenant").map(|_| "t".to_owned());
        assert_eq!(f.extract(&p).unwrap(), "t");
        assert_eq!((h, Global).extract(&parts(&[], None)), None);
    }
}
