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
                let fields = W3cFields::scan(headers);
                let parent = w3c_parent(&fields);
                let rest = if *baggage && fields.baggage {
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

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// The W3C fields of a request, found in one pass over its headers (cheaper
/// than three hashed lookups, two of which usually miss).
#[derive(Default)]
struct W3cFields<'h> {
    traceparent: Option<&'h HeaderValue>,
    tracestate: Option<&'h HeaderValue>,
    repeated_traceparent: bool,
    repeated_tracestate: bool,
    baggage: bool,
}

impl<'h> W3cFields<'h> {
    fn scan(headers: &'h HeaderMap) -> Self {
        let mut f = W3cFields::default();
        // Names compared as names: a standard header (most of any request)
        // differs from all three in its kind alone, without its text.
        for (name, value) in headers {
            if *name == TRACEPARENT {
                f.repeated_traceparent |= f.traceparent.replace(value).is_some();
            } else if *name == TRACESTATE {
                f.repeated_tracestate |= f.tracestate.replace(value).is_some();
            } else if *name == BAGGAGE {
                f.baggage = true;
            }
        }
        f
    }
}

/// The remote parent named by a single, well-formed `traceparent` (and its
/// `tracestate`), decoded as the W3C propagator does, with the syntax
/// checked as strictly as [`well_formed_traceparent`] — in one pass, with
/// no allocation.
fn w3c_parent(fields: &W3cFields<'_>) -> Option<SpanContext> {
    if fields.repeated_traceparent {
        return None;
    }
    let tp = fields.traceparent?.as_bytes();
    if tp.len() < 55 || tp.len() > MAX_TRACEPARENT {
        return None;
    }
    if tp[2] != b'-' || tp[35] != b'-' || tp[52] != b'-' {
        return None;
    }
    let version = hex2(&tp[0..2])?;
    match version {
        0 if tp.len() != 55 => return None,
        0xff => return None,
        // Later versions may append fields, each after a dash, in visible
        // ASCII.
        _ if tp.len() > 55 && (tp[55] != b'-' || !tp.iter().all(|c| (b' '..=b'~').contains(c))) => {
            return None;
        }
        _ => {}
    }
    let trace = hex32(tp[3..35].try_into().ok()?)?;
    let span = hex16(tp[36..52].try_into().ok()?)?;
    let flags = hex2(&tp[53..55])?;
    if trace == 0 || span == 0 {
        return None;
    }
    let state = match fields.tracestate {
        Some(v) if !fields.repeated_tracestate && v.len() <= MAX_TRACESTATE => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default(),
        _ => TraceState::default(),
    };
    Some(SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        state,
    ))
}

/// Lower-case hex digit values; 0xff marks anything else.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Two lower-case hex digits to a byte.
fn hex2(d: &[u8]) -> Option<u8> {
    let (hi, lo) = (HEX[usize::from(d[0])], HEX[usize::from(d[1])]);
    ((hi | lo) & 0xf0 == 0).then_some(hi << 4 | lo)
}

/// Thirty-two digits (a trace id).
#[inline]
fn hex32(d: &[u8; 32]) -> Option<u128> {
    let mut id = [0; 16];
    hex_decode(d, &mut id).then(|| u128::from_be_bytes(id))
}

/// Sixteen digits (a span id).
#[inline]
fn hex16(d: &[u8; 16]) -> Option<u64> {
    let mut id = [0; 8];
    hex_decode(d, &mut id).then(|| u64::from_be_bytes(id))
}

/// `N` lower-case hex digits to their `M = N / 2` bytes in `out`; false
/// (and `out` unspecified) if any is not one.
///
/// Every digit is decoded and checked the same way, without a branch or a
/// table, the pairs are joined, and the whole run is judged once at the
/// end: loops the compiler turns into vector instructions (sixteen digits
/// at a time with x86-64's SSE2) — under half the instructions of decoding
/// eight digits at a time in a 64-bit register.
#[inline]
fn hex_decode<const N: usize, const M: usize>(d: &[u8; N], out: &mut [u8; M]) -> bool {
    const { assert!(N == 2 * M) };
    let mut nibbles = [0u8; N];
    let mut bad = 0u8;
    for (n, &c) in nibbles.iter_mut().zip(d) {
        let digit = c.wrapping_sub(b'0');
        let letter = c.wrapping_sub(b'a');
        let is_digit = digit < 10;
        *n = if is_digit {
            digit
        } else {
            letter.wrapping_add(10)
        };
        bad |= u8::from(!is_digit & (letter >= 6));
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = nibbles[2 * i] << 4 | nibbles[2 * i + 1];
    }
    bad == 0
}

/// A `Send + Sync` handle on whatever the global propagator is.
#[derive(Debug)]
pub(crate) struct GlobalPropagator;

impl TextMapPropagator for GlobalPropagator {
    fn inject_context(
        &self,
        cx: &Context,
        injector: &mut dyn opentelemetry::propagation::Injector,
    ) {
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, injector))
    }

    fn extract_with_context(
        &self,
        cx: &Context,
        extractor: &dyn opentelemetry::propagation::Extractor,
    ) -> Context {
        opentelemetry::global::get_text_map_propagator(|p| p.extract_with_context(cx, extractor))
    }

    fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
        opentelemetry::propagation::text_map_propagator::FieldIter::new(&[])
    }
}

/// `00-<trace id>-<span id>-<flags>`, hex-encoded by hand (the formatter
/// machinery costs more than the rest of the header).
#[inline]
pub(crate) fn traceparent(trace: [u8; 16], span: [u8; 8], flags: u8) -> [u8; 55] {
    /// Each byte's two lower-case hex digits.
    const PAIRS: [[u8; 2]; 256] = {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [HEX[i >> 4], HEX[i & 15]];
            i += 1;
        }
        t
    };
    let mut out = [b'-'; 55];
    out[0] = b'0';
    out[1] = b'0';
    for (i, b) in trace.iter().enumerate() {
        out[3 + 2 * i..5 + 2 * i].copy_from_slice(&PAIRS[usize::from(*b)]);
    }
    for (i, b) in span.iter().enumerate() {
        out[36 + 2 * i..38 + 2 * i].copy_from_slice(&PAIRS[usize::from(*b)]);
    }
    out[53..55].copy_from_slice(&PAIRS[usize::from(flags)]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_matches_the_obvious_decoder() {
        let obvious = |s: &[u8]| {
            s.iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
                .then(|| u128::from_str_radix(std::str::from_utf8(s).unwrap(), 16).unwrap())
        };
        let mut cases: Vec<Vec<u8>> = vec![
            b"4bf92f3577b34da6a3ce929d0e0e4736".to_vec(),
            b"00f067aa0ba902b7".to_vec(),
            b"ffffffffffffffffffffffffffffffff".to_vec(),
            b"0123456789abcdef".to_vec(),
        ];
        // Every byte value in every position of a 16- and a 32-digit run.
        for run in [
            &b"0123456789abcdef"[..],
            b"fedcba98765432100123456789abcdef",
        ] {
            for pos in 0..run.len() {
                for b in 0..=255u8 {
                    let mut s = run.to_vec();
                    s[pos] = b;
                    cases.push(s);
                }
            }
        }
        // The same byte at the same place in two runs of eight (a check
        // that merged the runs' results with XOR would let them cancel).
        let base = b"fedcba98765432100123456789abcdef";
        for b in 0..=255u8 {
            for p in 0..8 {
                for (i, j) in [(0, 8), (8, 16), (16, 24), (0, 24)] {
                    let mut s = base.to_vec();
                    s[p + i] = b;
                    s[p + j] = b;
                    cases.push(s);
                }
            }
        }
        // Every byte value everywhere at once, and next to its neighbours
        // (a decoder working on several digits at once must keep them apart).
        for b in 0..=255u8 {
            cases.push(vec![b; 16]);
            cases.push(vec![b; 32]);
            cases.push((0..16).map(|i| b.wrapping_add(i)).collect());
        }
        for b in 0..=255u8 {
            for s in [[b, b'f'], [b'0', b]] {
                let want = obvious(&s).map(|n| n as u8);
                assert_eq!(hex2(&s), want, "{s:?}");
            }
        }
        for s in cases {
            let got = match s.len() {
                16 => hex16(s[..].try_into().unwrap()).map(u128::from),
                32 => hex32(s[..].try_into().unwrap()),
                n => panic!("no decoder for {n} digits"),
            };
            let want = std::str::from_utf8(&s).ok().and_then(|_| obvious(&s));
            assert_eq!(got, want, "{s:?}");
        }
    }

    /// The fused decoder accepts exactly what the strict syntax check does.
    #[test]
    fn w3c_decoder_is_as_strict_as_the_syntax_check() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut cases = vec![ok.to_owned(), format!("01{}-more", &ok[2..])];
        for i in 0..ok.len() {
            for c in ['-', 'A', 'f', 'g', ' ', '0'] {
                let mut s = ok.to_owned();
                s.replace_range(i..=i, &c.to_string());
                cases.push(s);
            }
            cases.push(ok[..i].to_owned());
        }
        for tp in cases {
            let mut h = HeaderMap::new();
            h.insert("traceparent", tp.parse().unwrap());
            let nonzero = !tp.contains(&"0".repeat(32)) && !tp.contains("-0000000000000000-");
            assert_eq!(
                w3c_parent(&W3cFields::scan(&h)).is_some(),
                well_formed_traceparent(&tp) && nonzero,
                "{tp}"
            );
        }
    }

    /// A repeated `tracestate` is ignored (the parent stays), as is one
    /// of a repeated `traceparent`'s.
    #[test]
    fn repeated_fields_are_ignored() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = HeaderMap::new();
        h.insert("traceparent", tp.parse().unwrap());
        h.append("tracestate", "a=1".parse().unwrap());
        let once = w3c_parent(&W3cFields::scan(&h)).unwrap();
        assert_eq!(once.trace_state().get("a"), Some("1"));
        h.append("tracestate", "b=2".parse().unwrap());
        let twice = w3c_parent(&W3cFields::scan(&h)).unwrap();
        assert_eq!(twice.trace_state().header(), "");
        h.append("traceparent", tp.parse().unwrap());
        assert!(w3c_parent(&W3cFields::scan(&h)).is_none());
    }

    /// The layer's own decoder agrees with the SDK's W3C propagator.
    #[test]
    fn w3c_decoder_matches_the_sdk() {
        let sdk = opentelemetry_sdk::propagation::TraceContextPropagator::new();
        let cases: &[(&str, Option<&str>)] = &[
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                Some("a=1,b=2"),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
                Some("bad state"),
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-x",
                None,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                None,
            ),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", None),
        ];
        for (tp, ts) in cases {
            let mut h = HeaderMap::new();
            h.insert("traceparent", tp.parse().unwrap());
            if let Some(ts) = ts {
                h.insert("tracestate", ts.parse().unwrap());
            }
            let ours = w3c_parent(&W3cFields::scan(&h));
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

    #[test]
    fn traceparent_matches_the_w3c_format() {
        let tp = traceparent(
            [0xab; 16],
            [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
            1,
        );
        assert_eq!(
            std::str::from_utf8(&tp).unwrap(),
            format!("00-{}-0123456789abcdef-01", "ab".repeat(16))
        );
        // Against the formatter, over many values.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let trace = (u128::from(x) << 64 | u128::from(x.rotate_left(17))).to_be_bytes();
            let span = x.rotate_right(5).to_be_bytes();
            let tp = traceparent(trace, span, (x >> 3) as u8);
            assert_eq!(
                std::str::from_utf8(&tp).unwrap(),
                format!(
                    "00-{:032x}-{:016x}-{:02x}",
                    u128::from_be_bytes(trace),
                    u64::from_be_bytes(span),
                    (x >> 3) as u8
                )
            );
        }
    }
}
