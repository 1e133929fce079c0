//! Safe Redis key segments from untrusted strings.

use std::fmt::Write;

use sha2::{Digest, Sha256};

/// Encoded segments longer than this are replaced by their SHA-256.
pub const MAX_ENCODED: usize = 128;

/// Encodes `subject` so it can be embedded in a Redis key:
///
/// - bytes outside `[A-Za-z0-9._-@/+=]` become `%XX`, so `{`, `}` (hash
///   tags), `:` (our separator), spaces, control and non-ASCII bytes never
///   appear raw;
/// - an encoding longer than 128 bytes becomes `#` + the hex SHA-256 of the
///   subject (`#` is never left raw by the first rule, so the two forms
///   cannot collide);
/// - the empty subject becomes `~` (raw `~` is always escaped), so a hash
///   tag is never empty — Redis Cluster would otherwise hash the whole key
///   and scatter one subject's keys over several slots.
///
/// The encoding is injective: distinct subjects give distinct keys.
pub fn encode_segment(subject: &str) -> String {
    encode_segment_bytes(subject.as_bytes())
}

/// [`encode_segment`] for arbitrary bytes (a serialized key, say): the same
/// encoding, injective over byte strings.
pub fn encode_segment_bytes(subject: &[u8]) -> String {
    if subject.is_empty() {
        return "~".to_owned();
    }
    let mut out = String::with_capacity(subject.len().min(MAX_ENCODED) + 8);
    for &b in subject {
        if b.is_ascii_alphanumeric() || b"._-@/+=".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        if out.len() > MAX_ENCODED {
            return format!("#{}", sha256_hex(subject));
        }
    }
    out
}

/// The SHA-256 of `data` in lower-case hex: how secrets (API keys,
/// credentials) appear wherever they must be told apart but never shown.
pub fn sha256_hex(data: &[u8]) -> String {
    let mut hex = String::with_capacity(64);
    for b in Sha256::digest(data) {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_subjects_stay_readable() {
        assert_eq!(encode_segment("tenant-42"), "tenant-42");
        assert_eq!(encode_segment("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn hostile_bytes_are_escaped() {
        assert_eq!(encode_segment("a{b}c"), "a%7Bb%7Dc");
        assert_eq!(encode_segment("a:b c"), "a%3Ab%20c");
        assert_eq!(encode_segment("%41"), "%2541");
        assert_eq!(encode_segment("é"), "%C3%A9");
        assert_eq!(encode_segment(""), "~");
        assert_eq!(encode_segment("~"), "%7E");
    }

    #[test]
    fn long_subjects_are_hashed_without_collisions() {
        let long = "x".repeat(10_000);
        let enc = encode_segment(&long);
        assert!(enc.starts_with('#') && enc.len() == 65);
        assert_ne!(enc, encode_segment(&"x".repeat(10_001)));
        // A subject that looks like a hash is escaped, not taken as one.
        assert!(encode_segment(&enc).starts_with("%23"));
    }

    /// Up to `MAX_ENCODED` encoded bytes a segment is kept as encoded (the
    /// names of existing keys depend on it); past that, hashed — also
    /// when an escape jumps past the bound rather than landing on it.
    #[test]
    fn the_bound_is_exact() {
        let at = "x".repeat(MAX_ENCODED);
        assert_eq!(encode_segment(&at), at);
        assert!(encode_segment(&format!("{at}x")).starts_with('#'));
        let jump = format!("{}:", "x".repeat(MAX_ENCODED - 1));
        assert_eq!(encode_segment(&jump).len(), 65, "{}", encode_segment(&jump));
    }
}
