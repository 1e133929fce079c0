//! The address of a request's peer (the other end of its connection), for
//! `client.address` in spans and for rate limits per client.

use std::net::SocketAddr;

use http::request::Parts;

/// The remote address of a request's connection, as a request extension —
/// for servers that do not add a [`SocketAddr`] or axum's `ConnectInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The peer address of a request, from the first of these extensions it
/// has: a [`PeerAddr`], a [`SocketAddr`], or (with the `axum` feature)
/// axum's `ConnectInfo<SocketAddr>` — what
/// `into_make_service_with_connect_info::<SocketAddr>()` adds. `None` when
/// the server added none of them.
pub fn addr(parts: &Parts) -> Option<SocketAddr> {
    if let Some(p) = parts.extensions.get::<PeerAddr>() {
        return Some(p.0);
    }
    if let Some(a) = parts.extensions.get::<SocketAddr>() {
        return Some(*a);
    }
    #[cfg(feature = "axum")]
    if let Some(c) = parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(c.0);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> Parts {
        http::Request::new(()).into_parts().0
    }

    #[test]
    fn the_first_extension_found_is_the_peer() {
        let [a, b, c]: [SocketAddr; 3] =
            ["192.0.2.1:1", "192.0.2.2:2", "[2001:db8::3]:3"].map(|s| s.parse().unwrap());
        let mut p = parts();
        assert_eq!(addr(&p), None);
        #[cfg(feature = "axum")]
        {
            p.extensions.insert(axum::extract::ConnectInfo(c));
            assert_eq!(addr(&p), Some(c));
        }
        p.extensions.insert(b);
        assert_eq!(addr(&p), Some(b));
        p.extensions.insert(PeerAddr(a));
        assert_eq!(addr(&p), Some(a));
        let _ = c;
    }
}
