//! W3C context in and out of HTTP headers, with limits on hostile input.

use std::sync::Arc;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

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

/// How a layer reads the incoming context.
#[derive(Clone)]
pub(crate) enum Propagation {
    /// W3C trace context (and W3C baggage when `baggage`), decoded by the
    /// layer itself: the common configuration, and the one the unsampled
    /// fast path is built for.
    W3c {
        /// Also extract `baggage`.
        baggage: bool,
    },
    /// Any other propagator, through the OpenTelemetry API.
    Other(Arc<dyn TextMapPropagator + Send + Sync>),
}

/// What a request carries: the remote parent, if any, apart from the rest
/// of the context (baggage), so a caller that replaces the parent does not
/// pay for building it first.
pub(crate) struct Incoming {
    pub(crate) parent: Option<SpanContext>,
    pub(crate) rest: Context,
}

impl Incoming {
    /// The whole incoming context.
    pub(crate) fn into_context(self) -> Context {
        match self.parent {
            Some(sc) => self.rest.with_remote_span_context(sc),
            None => self.rest,
        }
    }
}

impl Propagation {
    /// The context carried by `headers`.
    pub(crate) fn extract(&self, headers: &HeaderMap) -> Incoming {
        match self {
            Propagation::W3c { baggage } => {
                let parent = w3c_parent(headers);
                let rest = if *baggage && headers.contains_key("baggage") {
                    opentelemetry_sdk::propagation::BaggagePropagator::new()
                        .extract(&HeaderExtractor(headers))
                } else {
                    Context::new()
                };
                Incoming { parent, rest }
            }
            Propagation::Other(p) => {
                let rest = p.extract(&HeaderExtractor(headers));
                let sc = rest.span().span_context().clone();
                Incoming {
                    parent: sc.is_valid().then_some(sc),
                    rest,
                }
            }
        }
    }
}

/// The remote parent named by a single, well-formed `traceparent` (and its
/// `tracestate`), decoded the way the W3C propagator does — minus its
/// allocations.
fn w3c_parent(headers: &HeaderMap) -> Option<SpanContext> {
    let headers = HeaderExtractor(headers);
    let tp = headers.get("traceparent")?;
    let trace = u128::from_str_radix(&tp[3..35], 16).ok()?;
    let span = u64::from_str_radix(&tp[36..52], 16).ok()?;
    let flags = u8::from_str_radix(&tp[53..55], 16).ok()?;
    if trace == 0 || span == 0 {
        return None;
    }
    let state = match headers.get("tracestate") {
        Some(s) => s.parse::<TraceState>().unwrap_or_default(),
        None => TraceState::default(),
    };
    Some(SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        state,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layer's own decoder agrees with the SDK's W3C propagator.
    #[test]
    fn w3c_decoder_matches_the_sdk() {
        let sdk = opentelemetry_sdk::propagation::TraceContextPropagator::new();
        let cases: &[(&str, Option<&str>)] = &[
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", Some("a=1,b=2")),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", Some("bad state")),
            ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-x", None),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", None),
        ];
        for (tp, ts) in cases {
            let mut h = HeaderMap::new();
            h.insert("traceparent", tp.parse().unwrap());
            if let Some(ts) = ts {
                h.insert("tracestate", ts.parse().unwrap());
            }
            let ours = w3c_parent(&h);
            let theirs = sdk.extract(&HeaderExtractor(&h));
            let theirs = theirs.span().span_context().clone();
            match ours {
                Some(sc) => assert_eq!(sc, theirs, "{tp}"),
                None => assert!(!theirs.is_valid(), "{tp}"),
            }
        }
    }

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
