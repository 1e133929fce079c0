//! W3C context in and out of HTTP headers, with limits on hostile input.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};

/// Longest `traceparent` accepted (the W3C format is 55 bytes; future
/// versions may append fields).
const MAX_TRACEPARENT: usize = 512;
/// Longest `tracestate` accepted (W3C: 32 members of up to 256 bytes, but
/// vendors are asked to keep it under 512).
const MAX_TRACESTATE: usize = 8192;
/// Longest `baggage` accepted (W3C: 8192 bytes in total).
const MAX_BAGGAGE: usize = 8192;

/// Reads propagation fields from a request's headers, refusing any field
/// that is repeated, oversized or not visible ASCII: such input starts a
/// fresh trace instead of joining (or poisoning) one.
pub(crate) struct HeaderExtractor<'a>(pub(crate) &'a HeaderMap);

fn limit(key: &str) -> usize {
    match key {
        "traceparent" => MAX_TRACEPARENT,
        "tracestate" => MAX_TRACESTATE,
        "baggage" => MAX_BAGGAGE,
        _ => 8192,
    }
}

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let mut values = self.0.get_all(key).iter();
        let first = values.next()?;
        if key == "traceparent" && values.next().is_some() {
            // Two parents: nobody can say which is right.
            return None;
        }
        let s = first.to_str().ok()?;
        if s.len() > limit(key) || (key == "traceparent" && !well_formed_traceparent(s)) {
            return None;
        }
        Some(s)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Strict W3C `traceparent` syntax: `vv-<32 hex>-<16 hex>-ff`, lower-case
/// hex, version not `ff`; version `00` has exactly these four fields, later
/// versions may append `-…`. (Decoders are often lenient; a server that
/// joins whatever it is sent is easy to poison.)
fn well_formed_traceparent(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: std::ops::Range<usize>| {
        b.get(r).is_some_and(|x| {
            x.iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        })
    };
    if b.len() < 55 || !hex(0..2) || &b[0..2] == b"ff" {
        return false;
    }
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return false;
    }
    if !hex(3..35) || !hex(36..52) || !hex(53..55) {
        return false;
    }
    match &b[0..2] {
        b"00" => b.len() == 55,
        _ => b.len() == 55 || b[55] == b'-',
    }
}

/// Writes propagation fields into response (or outgoing request) headers.
pub(crate) struct HeaderInjector<'a>(pub(crate) &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The parent context carried by `headers`, or an empty one.
pub(crate) fn extract(propagator: &dyn TextMapPropagator, headers: &HeaderMap) -> Context {
    propagator.extract(&HeaderExtractor(headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_syntax() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(well_formed_traceparent(ok));
        assert!(well_formed_traceparent(&format!("01{}-more", &ok[2..])));
        for bad in [
            &ok[..54],
            &format!("{ok}-x"),
            &ok.to_uppercase(),
            &format!("ff{}", &ok[2..]),
            &ok.replace('-', "_"),
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(!well_formed_traceparent(bad), "{bad}");
        }
    }
}
