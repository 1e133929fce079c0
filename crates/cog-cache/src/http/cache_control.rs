//! `Cache-Control` (RFC 9111 §5.2), parsed as the grammar says: directives
//! separated by commas across every field line, names case-insensitive,
//! arguments as tokens or quoted strings (commas inside quotes included),
//! unknown directives and junk skipped.

use http::HeaderMap;
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, HOST, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, PRAGMA,
};

/// The largest delta-seconds value honoured; larger ones count as this
/// (RFC 9111 §1.2.2).
pub(crate) const MAX_DELTA: u64 = 1 << 31;

/// The directives cog acts on, request and response alike. Where a
/// directive appears twice, the first occurrence counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub(crate) no_store: bool,
    /// `no-cache`, qualified (`no-cache="field"`) or not: cog treats both
    /// as unqualified, as §5.2.2.4 allows.
    pub(crate) no_cache: bool,
    /// `private`, qualified or not (a shared cache does not store either).
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) only_if_cached: bool,
    /// `must-understand` (§5.2.2.3): stored only by a cache that
    /// understands the status code — which then ignores `no-store`.
    pub(crate) must_understand: bool,
    /// `Some(0)` for a value that is not delta-seconds: stale (§4.2.1).
    pub(crate) max_age: Option<u64>,
    /// Likewise.
    pub(crate) s_maxage: Option<u64>,
    pub(crate) stale_while_revalidate: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
    pub(crate) min_fresh: Option<u64>,
    /// `Some(MAX_DELTA)` for a bare `max-stale` (any staleness).
    pub(crate) max_stale: Option<u64>,
}

impl CacheControl {
    /// The directives of every `Cache-Control` line of `headers`.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut cc = CacheControl::default();
        for line in headers.get_all(CACHE_CONTROL) {
            parse_line(line.as_bytes(), &mut |name, value| cc.apply(name, value));
        }
        cc
    }

    fn apply(&mut self, name: &[u8], value: Option<&[u8]>) {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        let secs = || value.and_then(delta_seconds_bytes);
        // An argument that is not delta-seconds makes the response stale.
        let secs_or_stale = || Some(secs().unwrap_or(0));
        if is("no-store") {
            self.no_store = true;
        } else if is("no-cache") {
            self.no_cache = true;
        } else if is("private") {
            self.private = true;
        } else if is("public") {
            self.public = true;
        } else if is("must-revalidate") {
            self.must_revalidate = true;
        } else if is("proxy-revalidate") {
            self.proxy_revalidate = true;
        } else if is("only-if-cached") {
            self.only_if_cached = true;
        } else if is("must-understand") {
            self.must_understand = true;
        } else if is("max-age") {
            self.max_age = self.max_age.or_else(secs_or_stale);
        } else if is("s-maxage") {
            self.s_maxage = self.s_maxage.or_else(secs_or_stale);
        } else if is("stale-while-revalidate") {
            self.stale_while_revalidate = self.stale_while_revalidate.or_else(secs);
        } else if is("stale-if-error") {
            self.stale_if_error = self.stale_if_error.or_else(secs);
        } else if is("min-fresh") {
            self.min_fresh = self.min_fresh.or_else(secs);
        } else if is("max-stale") {
            let v = match value {
                None => Some(MAX_DELTA),
                Some(_) => secs(),
            };
            self.max_stale = self.max_stale.or(v);
        }
    }
}

/// What the cache reads of a request's fields, found in one pass over
/// them: a request carries a handful of fields, and a hashed lookup for
/// each of the six below (most of which miss) costs more than comparing
/// every field's name — standard names compare by their kind alone.
#[derive(Debug, Default)]
pub(crate) struct Asked<'h> {
    /// Request directives, with `Pragma: no-cache` counting as `no-cache`
    /// when there is no `Cache-Control` (RFC 9111 §5.4).
    pub(crate) cache_control: CacheControl,
    /// An `Authorization` field is present.
    pub(crate) authorization: bool,
    /// The first `Host` field.
    pub(crate) host: Option<&'h HeaderValue>,
    /// `If-None-Match` or `If-Modified-Since` is present: the answer may
    /// be a `304`.
    pub(crate) conditional: bool,
}

impl<'h> Asked<'h> {
    pub(crate) fn of(headers: &'h HeaderMap) -> Self {
        let mut asked = Asked::default();
        let (mut any_cache_control, mut pragma_no_cache) = (false, false);
        // In the map's order: the lines of one field in the order sent.
        for (name, value) in headers {
            if *name == CACHE_CONTROL {
                any_cache_control = true;
                let cc = &mut asked.cache_control;
                parse_line(value.as_bytes(), &mut |name, value| cc.apply(name, value));
            } else if *name == PRAGMA {
                parse_line(value.as_bytes(), &mut |name, _| {
                    pragma_no_cache |= name.eq_ignore_ascii_case(b"no-cache");
                });
            } else if *name == AUTHORIZATION {
                asked.authorization = true;
            } else if *name == HOST {
                asked.host.get_or_insert(value);
            } else if *name == IF_NONE_MATCH || *name == IF_MODIFIED_SINCE {
                asked.conditional = true;
            }
        }
        if !any_cache_control {
            asked.cache_control.no_cache |= pragma_no_cache;
        }
        asked
    }
}

/// Calls `each(name, argument)` for every directive of one field line.
/// Arguments come unquoted (escapes resolved).
fn parse_line(line: &[u8], each: &mut impl FnMut(&[u8], Option<&[u8]>)) {
    let mut i = 0;
    let mut unquoted = Vec::new();
    while i < line.len() {
        // Skip separators and whitespace.
        while i < line.len() && matches!(line[i], b',' | b' ' | b'\t') {
            i += 1;
        }
        let start = i;
        while i < line.len() && is_tchar(line[i]) {
            i += 1;
        }
        let name = &line[start..i];
        while i < line.len() && matches!(line[i], b' ' | b'\t') {
            i += 1;
        }
        let mut value: Option<&[u8]> = None;
        let mut quoted = false;
        if i < line.len() && line[i] == b'=' {
            i += 1;
            while i < line.len() && matches!(line[i], b' ' | b'\t') {
                i += 1;
            }
            if i < line.len() && line[i] == b'"' {
                i += 1;
                unquoted.clear();
                while i < line.len() && line[i] != b'"' {
                    if line[i] == b'\\' && i + 1 < line.len() {
                        i += 1;
                    }
                    unquoted.push(line[i]);
                    i += 1;
                }
                i += 1; // the closing quote, if any
                quoted = true;
            } else {
                let vstart = i;
                while i < line.len() && is_tchar(line[i]) {
                    i += 1;
                }
                value = Some(&line[vstart..i]);
            }
        }
        // Anything else up to the next comma is junk.
        let well_formed = i >= line.len() || matches!(line[i], b',' | b' ' | b'\t');
        while i < line.len() && line[i] != b',' {
            i += 1;
        }
        if name.is_empty() || !well_formed {
            continue;
        }
        if quoted {
            each(name, Some(&unquoted));
        } else {
            each(name, value);
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses delta-seconds: digits only, capped at [`MAX_DELTA`] however many
/// there are.
pub(crate) fn delta_seconds(v: &str) -> Option<u64> {
    delta_seconds_bytes(v.as_bytes())
}

fn delta_seconds_bytes(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for &d in v {
        n = n.saturating_mul(10).saturating_add(u64::from(d - b'0'));
        if n > MAX_DELTA {
            return Some(MAX_DELTA);
        }
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    fn cc(lines: &[&str]) -> CacheControl {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(CACHE_CONTROL, HeaderValue::from_str(l).unwrap());
        }
        CacheControl::of(&h)
    }

    #[test]
    fn directives_across_lines_with_quoted_arguments() {
        let c = cc(&[
            "public, max-age=60, s-maxage=\"30\"",
            "stale-while-revalidate=5, stale-if-error=x",
        ]);
        assert_eq!(c.max_age, Some(60));
        assert_eq!(c.s_maxage, Some(30));
        assert_eq!(c.stale_while_revalidate, Some(5));
        assert_eq!(c.stale_if_error, None);
        assert!(c.public && !c.no_store && !c.private && !c.must_understand);
        assert!(cc(&["no-store, Must-Understand"]).must_understand);
    }

    #[test]
    fn commas_inside_quotes_do_not_split() {
        let c = cc(&["no-cache=\"set-cookie, max-age=99\", max-age=10"]);
        assert!(c.no_cache);
        assert_eq!(c.max_age, Some(10));
        let c = cc(&["private=\"a,b\", s-maxage=5"]);
        assert!(c.private);
        assert_eq!(c.s_maxage, Some(5));
    }

    #[test]
    fn escapes_inside_quotes_and_lines_that_end_early() {
        // An escaped quote does not close the string; the escaped
        // character is kept.
        let c = cc(&[r#"no-cache="a\"b, max-age=99", max-age=10"#]);
        assert!(c.no_cache);
        assert_eq!(c.max_age, Some(10));
        let mut seen = Vec::new();
        parse_line(br#"x="a\"b\\c", y"#, &mut |n, v| {
            seen.push((n.to_vec(), v.map(<[u8]>::to_vec)));
        });
        assert_eq!(
            seen,
            [
                (b"x".to_vec(), Some(br#"a"b\c"#.to_vec())),
                (b"y".to_vec(), None)
            ]
        );
        // Lines that stop mid-way: no panic, what came before counts.
        for line in [
            r#"max-age=5, private="abc\"#,
            r#"max-age=5, private="abc"#,
            "max-age=5, ",
            "max-age=5,,, \t",
            ", ,",
            "max-age=5, s-maxage=",
        ] {
            let c = cc(&[line]);
            assert_eq!(
                c.max_age,
                Some(5).filter(|_| !line.starts_with(',')),
                "{line:?}"
            );
        }
        assert!(cc(&[r#"max-age=5, private="abc\"#]).private);
    }

    #[test]
    fn case_whitespace_unknown_and_junk() {
        let c = cc(&["  MAX-AGE = 7 ,, Unknown=\"x\", foo, ;;;, No-Store"]);
        assert_eq!(c.max_age, Some(7));
        assert!(c.no_store);
        // Junk glued to a directive voids that directive only.
        let c = cc(&["max-age=60;x, no-cache"]);
        assert_eq!(c.max_age, None);
        assert!(c.no_cache);
    }

    #[test]
    fn first_occurrence_wins_and_invalid_ages_are_stale() {
        assert_eq!(cc(&["max-age=10, max-age=20"]).max_age, Some(10));
        assert_eq!(cc(&["max-age=10", "max-age=20"]).max_age, Some(10));
        for bad in [
            "max-age=-1",
            "max-age=1.5",
            "max-age=abc",
            "max-age",
            "max-age=",
        ] {
            assert_eq!(cc(&[bad]).max_age, Some(0), "{bad}");
        }
        assert_eq!(
            cc(&["max-age=99999999999999999999999"]).max_age,
            Some(MAX_DELTA)
        );
        assert_eq!(cc(&["max-stale"]).max_stale, Some(MAX_DELTA));
        assert_eq!(cc(&["max-stale=5"]).max_stale, Some(5));
    }

    #[test]
    fn pragma_no_cache_only_without_cache_control() {
        let mut h = HeaderMap::new();
        h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(Asked::of(&h).cache_control.no_cache);
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
        assert!(!Asked::of(&h).cache_control.no_cache);
        // A Pragma of other directives, or after them, the same.
        h.remove(CACHE_CONTROL);
        h.insert(PRAGMA, HeaderValue::from_static("x=1, No-Cache"));
        assert!(Asked::of(&h).cache_control.no_cache);
        h.insert(PRAGMA, HeaderValue::from_static("x=no-cache"));
        assert!(!Asked::of(&h).cache_control.no_cache);
    }

    #[test]
    fn one_pass_reads_what_lookups_read() {
        let empty = HeaderMap::new();
        let a = Asked::of(&empty);
        assert_eq!(a.cache_control, CacheControl::default());
        assert!(!a.authorization && !a.conditional && a.host.is_none());

        let mut h = HeaderMap::new();
        h.append(HOST, HeaderValue::from_static("a.example"));
        h.append("x-other", HeaderValue::from_static("max-age=1"));
        h.append(CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
        h.append(HOST, HeaderValue::from_static("b.example"));
        h.append(
            CACHE_CONTROL,
            HeaderValue::from_static("max-age=9, no-store"),
        );
        let a = Asked::of(&h);
        // As `get`: the first Host; as `get_all`: every Cache-Control
        // line, the first max-age counting.
        assert_eq!(a.host, h.get(HOST));
        assert_eq!(a.cache_control, CacheControl::of(&h));
        assert_eq!(a.cache_control.max_age, Some(5));
        assert!(a.cache_control.no_store);
        assert!(!a.authorization && !a.conditional);

        for (name, conditional) in [
            (AUTHORIZATION, false),
            (IF_NONE_MATCH, true),
            (IF_MODIFIED_SINCE, true),
            (http::header::IF_MATCH, false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            let a = Asked::of(&h);
            assert_eq!(a.conditional, conditional, "{name}");
            assert_eq!(a.authorization, name == AUTHORIZATION, "{name}");
        }
    }

    #[test]
    fn delta_seconds_are_digits_capped_at_two_to_the_31() {
        assert_eq!(delta_seconds("0"), Some(0));
        assert_eq!(delta_seconds("60"), Some(60));
        assert_eq!(delta_seconds("2147483648"), Some(MAX_DELTA));
        assert_eq!(delta_seconds("2147483649"), Some(MAX_DELTA));
        assert_eq!(delta_seconds("18446744073709551616"), Some(MAX_DELTA));
        assert_eq!(delta_seconds(&"9".repeat(100)), Some(MAX_DELTA));
        for junk in ["", "-1", "+5", "1.5", "1e3", " 5", "x"] {
            assert_eq!(delta_seconds(junk), None, "{junk:?}");
        }
    }

    proptest! {
        /// Any bytes: no panic, and values never past the cap.
        #[test]
        fn arbitrary_lines_parse(lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4)) {
            let mut h = HeaderMap::new();
            for l in &lines {
                if let Ok(v) = HeaderValue::from_bytes(l) {
                    h.append(CACHE_CONTROL, v);
                }
            }
            let c = CacheControl::of(&h);
            for v in [c.max_age, c.s_maxage, c.stale_while_revalidate, c.stale_if_error, c.min_fresh, c.max_stale].into_iter().flatten() {
                prop_assert!(v <= MAX_DELTA);
            }
        }
    }
}
