//! Targeted cache control (RFC 9213): a field such as `CDN-Cache-Control`
//! that speaks to one class of caches. A cache that obeys one takes its
//! directives from the first of its target fields present with a valid,
//! non-empty value — a Structured Fields dictionary (RFC 8941) — and then
//! ignores `Cache-Control` and `Expires`.

use http::HeaderMap;
use http::header::HeaderName;

use super::cache_control::{CacheControl, MAX_DELTA};

/// The directives of the first of `targets` that `headers` carry with a
/// valid, non-empty value; `None`: none does (fall back to `Cache-Control`).
pub(crate) fn directives(headers: &HeaderMap, targets: &[HeaderName]) -> Option<CacheControl> {
    targets.iter().find_map(|name| {
        if !headers.contains_key(name) {
            return None;
        }
        // RFC 8941 §4.2: the field's lines, joined with commas.
        let mut joined = Vec::new();
        for (i, line) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(line.as_bytes());
        }
        let members = dictionary(&joined)?;
        if members.is_empty() {
            return None;
        }
        cache_control(&members)
    })
}

/// The directives of a parsed dictionary, or `None` when one that cog
/// reads has a value of the wrong type (`max-age="10"`): the field is then
/// invalid as a whole.
fn cache_control(members: &[(String, Item)]) -> Option<CacheControl> {
    let mut cc = CacheControl::default();
    for (key, value) in members {
        let flag = |value: &Item| match value {
            Item::Boolean(b) => Some(*b),
            // The qualified forms (`private="field"`) count as the plain
            // one, as in `Cache-Control`.
            Item::String | Item::Token if matches!(key.as_str(), "private" | "no-cache") => {
                Some(true)
            }
            _ => None,
        };
        let secs = |value: &Item| match value {
            Item::Integer(n) if *n >= 0 => Some((*n as u64).min(MAX_DELTA)),
            _ => None,
        };
        match key.as_str() {
            "no-store" => cc.no_store = flag(value)?,
            "no-cache" => cc.no_cache = flag(value)?,
            "private" => cc.private = flag(value)?,
            "public" => cc.public = flag(value)?,
            "must-revalidate" => cc.must_revalidate = flag(value)?,
            "proxy-revalidate" => cc.proxy_revalidate = flag(value)?,
            "must-understand" => cc.must_understand = flag(value)?,
            "max-age" => cc.max_age = Some(secs(value)?),
            "s-maxage" => cc.s_maxage = Some(secs(value)?),
            "stale-while-revalidate" => cc.stale_while_revalidate = Some(secs(value)?),
            "stale-if-error" => cc.stale_if_error = Some(secs(value)?),
            // Extensions cog does not know are ignored, whatever their type.
            _ => {}
        }
    }
    Some(cc)
}

/// A dictionary member's value, as far as cog looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Integer(i64),
    Boolean(bool),
    String,
    Token,
    /// A decimal, a byte sequence, a date, a display string or an inner
    /// list: never a value cog reads.
    Other,
}

/// Parses an RFC 8941 dictionary (§4.2.2): its members in order, a key given
/// twice keeping its last value; `None` on any syntax error.
fn dictionary(input: &[u8]) -> Option<Vec<(String, Item)>> {
    let mut p = Parser { input, at: 0 };
    p.skip(b" ");
    let mut members: Vec<(String, Item)> = Vec::new();
    while !p.done() {
        let key = p.key()?;
        let value = if p.eat(b'=') {
            if p.peek() == Some(b'(') {
                p.inner_list()?;
                Item::Other
            } else {
                p.bare_item()?
            }
        } else {
            Item::Boolean(true)
        };
        p.parameters()?;
        match members.iter_mut().find(|(k, _)| *k == key) {
            Some(member) => member.1 = value,
            None => members.push((key, value)),
        }
        p.skip(b" \t");
        if p.done() {
            break;
        }
        if !p.eat(b',') {
            return None;
        }
        p.skip(b" \t");
        if p.done() {
            // A trailing comma.
            return None;
        }
    }
    Some(members)
}

struct Parser<'a> {
    input: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.at).copied()
    }

    fn done(&self) -> bool {
        self.at >= self.input.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        let here = self.peek() == Some(b);
        self.at += usize::from(here);
        here
    }

    fn skip(&mut self, what: &[u8]) {
        while self.peek().is_some_and(|b| what.contains(&b)) {
            self.at += 1;
        }
    }

    /// `key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`
    fn key(&mut self) -> Option<String> {
        let start = self.at;
        if !self
            .peek()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
        {
            return None;
        }
        while self.peek().is_some_and(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*')
        }) {
            self.at += 1;
        }
        Some(String::from_utf8_lossy(&self.input[start..self.at]).into_owned())
    }

    /// `*( ";" *SP key [ "=" bare-item ] )`
    fn parameters(&mut self) -> Option<()> {
        while self.eat(b';') {
            self.skip(b" ");
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }

    /// `"(" *SP [ item *( 1*SP item ) *SP ] ")" parameters`
    fn inner_list(&mut self) -> Option<()> {
        if !self.eat(b'(') {
            return None;
        }
        loop {
            self.skip(b" ");
            if self.eat(b')') {
                return self.parameters();
            }
            self.bare_item()?;
            self.parameters()?;
            if !matches!(self.peek(), Some(b' ' | b')')) {
                return None;
            }
        }
    }

    fn bare_item(&mut self) -> Option<Item> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b'?' => {
                self.at += 1;
                let b = match self.peek()? {
                    b'0' => false,
                    b'1' => true,
                    _ => return None,
                };
                self.at += 1;
                Some(Item::Boolean(b))
            }
            b':' => {
                self.at += 1;
                while self
                    .peek()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
                {
                    self.at += 1;
                }
                self.eat(b':').then_some(Item::Other)
            }
            b'@' => {
                // A date (RFC 9651): an integer after `@`.
                self.at += 1;
                match self.number()? {
                    Item::Integer(_) => Some(Item::Other),
                    _ => None,
                }
            }
            b'%' => {
                // A display string (RFC 9651): `%"…"` with `%xx` escapes.
                self.at += 1;
                match self.string()? {
                    Item::String => Some(Item::Other),
                    _ => None,
                }
            }
            b if b.is_ascii_alphabetic() || b == b'*' => {
                while self
                    .peek()
                    .is_some_and(|b| is_tchar(b) || matches!(b, b':' | b'/'))
                {
                    self.at += 1;
                }
                Some(Item::Token)
            }
            _ => None,
        }
    }

    /// An integer (at most 15 digits) or a decimal (at most 12 digits, a
    /// dot, 1–3 digits).
    fn number(&mut self) -> Option<Item> {
        let negative = self.eat(b'-');
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let int_digits = self.at - start;
        if int_digits == 0 {
            return None;
        }
        if !self.eat(b'.') {
            if int_digits > 15 {
                return None;
            }
            let text = std::str::from_utf8(&self.input[start..self.at]).ok()?;
            let n: i64 = text.parse().ok()?;
            return Some(Item::Integer(if negative { -n } else { n }));
        }
        let frac_start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let frac_digits = self.at - frac_start;
        (int_digits <= 12 && (1..=3).contains(&frac_digits)).then_some(Item::Other)
    }

    /// A string: visible ASCII and spaces between quotes, `\"` and `\\`
    /// the only escapes.
    fn string(&mut self) -> Option<Item> {
        if !self.eat(b'"') {
            return None;
        }
        loop {
            match self.peek()? {
                b'\\' => {
                    self.at += 1;
                    if !matches!(self.peek()?, b'"' | b'\\') {
                        return None;
                    }
                    self.at += 1;
                }
                b'"' => {
                    self.at += 1;
                    return Some(Item::String);
                }
                0x20..=0x7e => self.at += 1,
                _ => return None,
            }
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::headers_of as headers;

    fn parse(s: &str) -> Option<Vec<(String, Item)>> {
        dictionary(s.as_bytes())
    }

    #[test]
    fn dictionaries_parse_as_rfc_8941_says() {
        assert_eq!(
            parse("max-age=60, no-store, private=?0").unwrap(),
            vec![
                ("max-age".into(), Item::Integer(60)),
                ("no-store".into(), Item::Boolean(true)),
                ("private".into(), Item::Boolean(false)),
            ]
        );
        // Parameters, inner lists, every bare item type; the last of a
        // repeated key.
        assert_eq!(
            parse(r#"a;x=1;y, b=(1 "two" three);z, c="q\"s", d=tok/en:x, e=:aGk=:, f=-1.5, g=@1700000000, h=%"caf%c3%a9", a=2"#)
                .unwrap(),
            vec![
                ("a".into(), Item::Integer(2)),
                ("b".into(), Item::Other),
                ("c".into(), Item::String),
                ("d".into(), Item::Token),
                ("e".into(), Item::Other),
                ("f".into(), Item::Other),
                ("g".into(), Item::Other),
                ("h".into(), Item::Other),
            ]
        );
        assert_eq!(
            parse("a=?1, b=*tok, c=123456789012345, d=-123456789012.123").unwrap(),
            vec![
                ("a".into(), Item::Boolean(true)),
                ("b".into(), Item::Token),
                ("c".into(), Item::Integer(123_456_789_012_345)),
                ("d".into(), Item::Other),
            ]
        );
        assert_eq!(parse("  max-age=1  ").unwrap().len(), 1);
        assert_eq!(parse("").unwrap(), vec![]);
        for bad in [
            "max-age =1",
            "max-age= 1",
            "MaX-aGe=1",
            "max-age=1,",
            "max-age=1,,a",
            "a b",
            "&&&",
            "a=1, &&&",
            "a=1234567890123456",
            "a=&x",
            "a=.5",
            "a=1.2345",
            "a=1234567890123.5",
            "a=1.",
            "a=-",
            "a=?2",
            "a=\"unterminated",
            "a=\"bad\\escape\"",
            "a=:no-end",
            "a=(1 2",
            "a=(1\t2)",
            "a=@x",
            "a=%x",
            "a;B=1",
            "a=é",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    const CDN: HeaderName = HeaderName::from_static("cdn-cache-control");
    const MINE: HeaderName = HeaderName::from_static("cog-cache-control");

    #[test]
    fn the_first_valid_non_empty_target_speaks() {
        let cc = |pairs: &[(&str, &str)]| directives(&headers(pairs), &[MINE, CDN]);
        assert_eq!(cc(&[("cache-control", "max-age=5")]), None);
        let c = cc(&[("cdn-cache-control", "max-age=60, must-revalidate")]).unwrap();
        assert_eq!((c.max_age, c.must_revalidate), (Some(60), true));
        // In the order of the list, not of the fields.
        let c = cc(&[
            ("cdn-cache-control", "max-age=60"),
            ("cog-cache-control", "max-age=7"),
        ]);
        assert_eq!(c.unwrap().max_age, Some(7));
        // An invalid or empty first target: the next one.
        for mine in ["max-age=\"7\"", "&&", "", "max-age=7,"] {
            let c = cc(&[
                ("cog-cache-control", mine),
                ("cdn-cache-control", "max-age=60"),
            ]);
            assert_eq!(c.unwrap().max_age, Some(60), "{mine}");
        }
        // Lines join with commas.
        let c = cc(&[
            ("cdn-cache-control", "max-age=60"),
            ("cdn-cache-control", "no-store"),
        ])
        .unwrap();
        assert!(c.no_store && c.max_age == Some(60));
        assert_eq!(
            directives(&headers(&[("cdn-cache-control", "max-age=1")]), &[]),
            None
        );
    }

    #[test]
    fn directives_need_their_types() {
        let cc = |v: &str| directives(&headers(&[("cdn-cache-control", v)]), &[CDN]);
        for wrong in [
            "max-age=\"60\"",
            "max-age=-1",
            "max-age=1.5",
            "max-age=?1",
            "no-store=1",
            "no-store=\"x\"",
            "must-revalidate=tok",
            "s-maxage=tok",
            "stale-if-error=(1)",
        ] {
            assert_eq!(cc(wrong), None, "{wrong}");
        }
        let c = cc("max-age=99999999999, s-maxage=5, stale-while-revalidate=6, stale-if-error=7")
            .unwrap();
        assert_eq!(
            (
                c.max_age,
                c.s_maxage,
                c.stale_while_revalidate,
                c.stale_if_error
            ),
            (Some(MAX_DELTA), Some(5), Some(6), Some(7))
        );
        let c = cc(
            "no-store, no-cache, private, public, must-revalidate, proxy-revalidate, must-understand",
        )
        .unwrap();
        assert!(
            c.no_store
                && c.no_cache
                && c.private
                && c.public
                && c.must_revalidate
                && c.proxy_revalidate
                && c.must_understand
        );
        let c = cc("no-store=?0, private=?0").unwrap();
        assert!(!c.no_store && !c.private);
        // Qualified forms count as plain, and unknown extensions are
        // ignored whatever their type.
        let c = cc(r#"private="set-cookie", no-cache=x, foobar="x", max-age=9"#).unwrap();
        assert!(c.private && c.no_cache && c.max_age == Some(9));
    }
}
