//! Redacts e-mail addresses and payment card numbers from JSON bodies (of
//! requests, responses, or both — whichever bodies the host reads for
//! it): an address becomes `[email]`, a card number (13–19 digits, spaces
//! or dashes allowed between them, passing the Luhn check) `[card]`. The
//! replacements contain no quote or backslash, so valid JSON stays valid.
#![allow(unsafe_code)] // `export_plugin!` exports the hooks with `#[unsafe(no_mangle)]`.

use cog_pdk::{Error, Plugin};

/// The plugin.
pub struct Redact;

fn local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"._%+-".contains(&c)
}

fn domain_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.' || c == b'-'
}

/// The end of an e-mail address whose `@` is at `at`, and its start, if
/// there is one: a local part, a domain with a dot and a 2+ letter TLD.
fn email_at(s: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut start = at;
    while start > 0 && local_char(s[start - 1]) {
        start -= 1;
    }
    let mut end = at + 1;
    while end < s.len() && domain_char(s[end]) {
        end += 1;
    }
    // No trailing dots or dashes in the domain.
    while end > at + 1 && matches!(s[end - 1], b'.' | b'-') {
        end -= 1;
    }
    let domain = &s[at + 1..end];
    let tld = domain.rsplit(|&c| c == b'.').next()?;
    let ok = start < at
        && domain.contains(&b'.')
        && tld.len() >= 2
        && tld.iter().all(u8::is_ascii_alphabetic);
    ok.then_some((start, end))
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A card number starting at `i` (a digit not preceded by one): its end.
fn card_at(s: &[u8], i: usize) -> Option<usize> {
    let mut digits = Vec::with_capacity(19);
    let mut j = i;
    let mut end = i;
    while j < s.len() && digits.len() < 20 {
        match s[j] {
            c @ b'0'..=b'9' => {
                digits.push(c - b'0');
                j += 1;
                end = j;
            }
            b' ' | b'-' if j + 1 < s.len() && s[j + 1].is_ascii_digit() && end == j => j += 1,
            _ => break,
        }
    }
    let followed_by_digit = end < s.len() && s[end].is_ascii_digit();
    ((13..=19).contains(&digits.len()) && !followed_by_digit && luhn(&digits)).then_some(end)
}

/// `body` with addresses and card numbers replaced.
pub fn redact(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    // Where the copied text ends: an address's local part may already be
    // copied when its `@` is found, so redaction rewinds the output.
    while i < body.len() {
        let c = body[i];
        if c == b'@'
            && let Some((start, end)) = email_at(body, i)
        {
            let copied_from_start = i - start;
            out.truncate(out.len() - copied_from_start);
            out.extend_from_slice(b"[email]");
            i = end;
            continue;
        }
        if c.is_ascii_digit()
            && (i == 0 || !body[i - 1].is_ascii_digit())
            && let Some(end) = card_at(body, i)
        {
            out.extend_from_slice(b"[card]");
            i = end;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

fn apply() -> Result<(), Error> {
    let Some(body) = cog_pdk::body() else {
        return Ok(());
    };
    let clean = redact(&body);
    if clean != body {
        cog_pdk::set_body(&clean)?;
    }
    Ok(())
}

impl Plugin for Redact {
    fn on_request() -> Result<(), Error> {
        apply()
    }

    fn on_response() -> Result<(), Error> {
        apply()
    }
}

cog_pdk::export_plugin!(Redact, request, response);

#[cfg(test)]
mod tests {
    use super::redact;

    fn r(s: &str) -> String {
        String::from_utf8(redact(s.as_bytes())).unwrap()
    }

    #[test]
    fn emails_and_cards_go_the_rest_stays() {
        assert_eq!(
            r(r#"{"to":"jane.doe+x@example.co.uk","card":"4111 1111 1111 1111","n":42}"#),
            r#"{"to":"[email]","card":"[card]","n":42}"#
        );
        assert_eq!(r("pay 4111-1111-1111-1111 now"), "pay [card] now");
        assert_eq!(r("4111111111111111"), "[card]");
        // Not Luhn-valid, too short, too long: kept.
        assert_eq!(r("4111111111111112"), "4111111111111112");
        assert_eq!(r("order 123456789012"), "order 123456789012");
        assert_eq!(r("12345678901234567890123"), "12345678901234567890123");
        // Not addresses.
        assert_eq!(
            r("@handle and a@b and x@y.z1"),
            "@handle and a@b and x@y.z1"
        );
        assert_eq!(r("mail bob@example.com."), "mail [email].");
    }
}
