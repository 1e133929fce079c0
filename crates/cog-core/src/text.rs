//! Small text helpers for header values written on every request.

use http::HeaderValue;

/// Appends `n` in decimal, without the formatting machinery (`write!`
/// costs several times more on a hot path).
pub fn push_u64(out: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    // ASCII digits: always UTF-8.
    out.push_str(std::str::from_utf8(digits(n, &mut buf)).unwrap_or("0"));
}

/// `n`'s decimal digits, written into the end of `buf`.
fn digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Appends `n` in decimal, with a `-` when negative.
pub fn push_i64(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    push_u64(out, n.unsigned_abs());
}

/// A header value written on the stack, then copied once into its
/// [`HeaderValue`]. (A `String` made a `HeaderValue` costs two
/// allocations: the string, and the shared buffer `bytes` wraps around a
/// vector with room to spare.) Longer values spill to the heap.
#[derive(Debug)]
pub struct HeaderText {
    buf: [u8; 128],
    len: usize,
    /// Everything, once it no longer fits in `buf`.
    spill: Vec<u8>,
}

impl Default for HeaderText {
    fn default() -> Self {
        HeaderText {
            buf: [0; 128],
            len: 0,
            spill: Vec::new(),
        }
    }
}

impl HeaderText {
    /// An empty value.
    pub fn new() -> Self {
        HeaderText::default()
    }

    fn push_bytes(&mut self, b: &[u8]) {
        if self.spill.is_empty() {
            if let Some(room) = self.buf.get_mut(self.len..self.len + b.len()) {
                room.copy_from_slice(b);
                self.len += b.len();
                return;
            }
            self.spill.extend_from_slice(&self.buf[..self.len]);
        }
        self.spill.extend_from_slice(b);
    }

    /// Appends `s`.
    pub fn push_str(&mut self, s: &str) {
        self.push_bytes(s.as_bytes());
    }

    /// Appends `n` in decimal.
    pub fn push_u64(&mut self, n: u64) {
        let mut buf = [0u8; 20];
        self.push_bytes(digits(n, &mut buf));
    }

    /// Appends `n` in decimal, with a `-` when negative.
    pub fn push_i64(&mut self, n: i64) {
        if n < 0 {
            self.push_bytes(b"-");
        }
        self.push_u64(n.unsigned_abs());
    }

    /// The header value (one allocation); `None` if the text holds bytes
    /// a header value cannot (control characters).
    pub fn to_value(&self) -> Option<HeaderValue> {
        let text = if self.spill.is_empty() {
            &self.buf[..self.len]
        } else {
            &self.spill[..]
        };
        HeaderValue::from_bytes(text).ok()
    }
}

/// Every decimal number below [`SMALL`], written out one after the other,
/// and where each starts: header values for them point into this table.
const SMALL: usize = 1024;
const SMALL_DIGITS: usize = 10 + 90 * 2 + 900 * 3 + (SMALL - 1000) * 4;
static SMALL_TEXT: ([u8; SMALL_DIGITS], [u16; SMALL + 1]) = {
    let mut text = [0u8; SMALL_DIGITS];
    let mut starts = [0u16; SMALL + 1];
    let mut at = 0;
    let mut n = 0;
    while n < SMALL {
        starts[n] = at as u16;
        let width = if n < 10 {
            1
        } else if n < 100 {
            2
        } else if n < 1000 {
            3
        } else {
            4
        };
        let mut rest = n;
        let mut i = width;
        while i > 0 {
            i -= 1;
            text[at + i] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        at += width;
        n += 1;
    }
    starts[SMALL] = at as u16;
    // Exactly filled: the size above is the digits' count.
    assert!(at == SMALL_DIGITS);
    (text, starts)
};

/// `n` in decimal as a header value — with no allocation below 1024
/// (`Age`, `Retry-After`, `Content-Length` of small bodies), where
/// `HeaderValue::from(u64)` allocates twice.
pub fn number_value(n: u64) -> HeaderValue {
    match usize::try_from(n) {
        Ok(i) if i < SMALL => {
            let (text, starts) = &SMALL_TEXT;
            let digits = &text[usize::from(starts[i])..usize::from(starts[i + 1])];
            HeaderValue::from_maybe_shared(bytes::Bytes::from_static(digits))
                .unwrap_or_else(|_| HeaderValue::from(n))
        }
        _ => HeaderValue::from(n),
    }
}

/// `url` fit for an error message or a log: the credentials of its
/// authority (`user:password@`, or a lone `secret@`) and the values of
/// query parameters named like a password or token (`sentinelPassword=…`)
/// become `REDACTED`. After `://`, everything up to the last `@` counts as
/// credentials, so a password with a character URLs need encoded is
/// hidden too. Anything else is kept, so the URL still says which server
/// it names.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let delimiter = |s: &str| s.find(['/', '?', '#']).unwrap_or(s.len());
    let end = match (scheme, rest.rfind('@')) {
        // After `://`, the last `@` ends the credentials wherever it is: a
        // password with an unencoded `/`, `?` or `#` (a URL no parser
        // takes, shown in the error that says so) is still hidden.
        (Some(_), Some(at)) => at + 1 + delimiter(&rest[at + 1..]),
        _ => delimiter(rest),
    };
    let (authority, tail) = rest.split_at(end);
    let mut out = String::with_capacity(url.len() + 16);
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                // A user name is shown, not what only looks like one.
                Some((user, _)) if !user.contains(['/', '?', '#']) => {
                    out.push_str(user);
                    out.push_str(":REDACTED@");
                }
                _ => out.push_str("REDACTED@"),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    out.push_str(path);
    if let Some(query) = query {
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if secret_name(name) => {
                    out.push_str(name);
                    out.push_str("=REDACTED");
                }
                _ => out.push_str(pair),
            }
        }
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
    }
    out
}

/// Whether a query parameter's name says its value is a secret.
fn secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "key"]
        .iter()
        .any(|s| name.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut s = String::from("x");
            push_u64(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
        for n in [0, -1, 42, i64::MIN, i64::MAX] {
            let mut s = String::new();
            push_i64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn header_text_is_the_string_it_was_written_as() {
        let mut t = HeaderText::new();
        t.push_str("cog; hit; ttl=");
        t.push_i64(0);
        t.push_i64(-12);
        t.push_str(", r=");
        t.push_u64(u64::MAX);
        assert_eq!(
            t.to_value().unwrap(),
            format!("cog; hit; ttl=0-12, r={}", u64::MAX)
        );
        // Past the inline room: spilled, not cut.
        let mut long = HeaderText::new();
        let text: String = (0..300)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        for part in [&text[..100], &text[100..200], &text[200..]] {
            long.push_str(part);
        }
        assert_eq!(long.to_value().unwrap(), text.as_str());
        let mut bad = HeaderText::new();
        bad.push_str("a\nb");
        assert!(bad.to_value().is_none());
    }

    #[test]
    fn number_values_match_their_decimal_form() {
        for n in (0..1100).chain([9_999, 65_535, u64::MAX]) {
            assert_eq!(number_value(n), n.to_string().as_str(), "{n}");
        }
        // Below 1024 they point into the static table (no allocation),
        // which holds every number's digits.
        let table = SMALL_TEXT.0.as_ptr_range();
        for n in 0..SMALL as u64 {
            let v = number_value(n);
            assert!(table.contains(&v.as_bytes().as_ptr()), "{n}");
        }
        let (text, starts) = &SMALL_TEXT;
        for n in 0..SMALL {
            let digits = &text[usize::from(starts[n])..usize::from(starts[n + 1])];
            assert_eq!(digits, n.to_string().as_bytes(), "{n}");
        }
    }

    #[test]
    fn urls_lose_their_secrets_and_keep_their_server() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:s3cret@h:6379/0", "redis://:REDACTED@h:6379/0"),
            ("rediss://app:s3cret@h", "rediss://app:REDACTED@h"),
            ("redis://s3cret@h", "redis://REDACTED@h"),
            (
                "redis-sentinel://h:26379/0?node=h2:26379&sentinelPassword=s3cret&sentinelUsername=u",
                "redis-sentinel://h:26379/0?node=h2:26379&sentinelPassword=REDACTED&sentinelUsername=u",
            ),
            ("http://h/p?token=s3cret#f", "http://h/p?token=REDACTED#f"),
            ("file:/tmp/a@b", "file:/tmp/a@b"),
            ("a:b@c", "a:REDACTED@c"),
            // Passwords with characters a URL needs encoded: no parser
            // takes these, and the error that says so shows them.
            ("redis://:pa/s3cret@h:6379/0", "redis://:REDACTED@h:6379/0"),
            ("redis://u:s3cret#x?y@h", "redis://u:REDACTED@h"),
            ("redis://u:a?s3cret@h/0?db=1", "redis://u:REDACTED@h/0?db=1"),
            ("redis://s3cret/x@h", "redis://REDACTED@h"),
            // No host after the credentials.
            ("redis://:s3cret@/0", "redis://:REDACTED@/0"),
            ("redis://s3cret@", "redis://REDACTED@"),
            // An `@` further on is taken for the credentials' end: more is
            // hidden than needed, never less.
            (
                "redis://h/0?sentinelPassword=s3cret:x@b",
                "redis://REDACTED@b",
            ),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("s3cret"));
        }
    }
}
