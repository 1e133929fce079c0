//! API keys: generation, hashing, constant-time comparison.
//!
//! A key looks like `cog_<id>_<secret>`: `id` (8 characters) is stored in
//! clear as the key's handle and shown in listings; only the SHA-256 of
//! the whole key is stored. The key itself is shown once, at creation.

use rand::Rng;
use sha2::{Digest, Sha256};

const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// A newly created key: `secret` is the only copy, give it to the tenant.
#[derive(Clone, PartialEq, Eq)]
pub struct NewKey {
    /// The key's handle (its visible prefix).
    pub id: String,
    /// The whole key, `cog_<id>_<secret>`.
    pub secret: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn random(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A fresh random key (8-character id, 32-character secret: ~187 bits).
pub fn generate() -> NewKey {
    generate_with("cog")
}

/// A fresh admin API token, `cogadm_<id>_<secret>` (the same strength as
/// a key; a different prefix, so neither is taken for the other).
pub fn generate_token() -> NewKey {
    generate_with("cogadm")
}

fn generate_with(prefix: &str) -> NewKey {
    let id = random(8);
    let secret = format!("{prefix}_{id}_{}", random(32));
    NewKey { id, secret }
}

/// The key's id, if `key` has the shape of one.
pub fn id_of(key: &str) -> Option<&str> {
    id_with("cog_", key)
}

/// The admin token's id, if `token` has the shape of one.
pub fn token_id_of(token: &str) -> Option<&str> {
    id_with("cogadm_", token)
}

/// `<prefix><8-byte id>_<secret>`: the id, when its first `_` ends it and
/// a secret follows. By byte positions (this runs on every request; a
/// character search costs several times more).
fn id_with<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    const ID: usize = 8;
    let rest = key.strip_prefix(prefix)?;
    let bytes = rest.as_bytes();
    let shaped = bytes.len() > ID + 1 && bytes[ID] == b'_' && !bytes[..ID].contains(&b'_');
    // `_` is ASCII: the id ends on a character boundary.
    shaped.then(|| rest.get(..ID)).flatten()
}

/// SHA-256 of the key, lowercase hex: what the store keeps.
pub fn hash(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// SHA-256 of the key, as bytes: what [`hash`] writes in hex.
pub(crate) fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The bytes of a lowercase-hex SHA-256 ([`hash`]'s form).
pub(crate) fn unhex32(hex: &str) -> Option<[u8; 32]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_their_id_and_hash_stably() {
        let k = generate();
        assert_eq!(id_of(&k.secret), Some(k.id.as_str()));
        assert_eq!(hash(&k.secret), hash(&k.secret));
        assert_eq!(hash(&k.secret).len(), 64);
        assert_ne!(generate().secret, k.secret);
        let shown = format!("{k:?}");
        assert!(!shown.contains(&k.secret), "{shown}");
        assert!(
            shown.contains(&k.id) && shown.contains("<redacted>"),
            "{shown}"
        );
        assert_eq!(id_of("Bearer x"), None);
        assert_eq!(id_of("cog_short_x"), None);
    }

    #[test]
    fn differences_never_cancel_out() {
        // Two differing bytes whose differences would cancel if they were
        // merged with XOR rather than OR.
        assert!(!constant_time_eq(b"\x01\x01", b"\x00\x00"));
        assert!(!constant_time_eq(b"ab", b"ba"));
        assert!(!constant_time_eq(b"a", b"ab"));
        assert!(constant_time_eq(b"same", b"same"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn ids_read_as_the_first_underscore_splits_them() {
        let by_split = |prefix: &str, key: &str| -> Option<String> {
            let (id, secret) = key.strip_prefix(prefix)?.split_once('_')?;
            (id.len() == 8 && !secret.is_empty()).then(|| id.to_owned())
        };
        let mut cases = vec![
            "cog_abcdefgh_s".to_owned(),
            "cog_abcdefgh_".to_owned(),
            "cog_abcdefgh".to_owned(),
            "cog_abcdefg_hs".to_owned(),
            "cog_abc_efgh_s".to_owned(),
            "cog_abcdefghi_s".to_owned(),
            "cog_abcdefgh__".to_owned(),
            "cog_abcdéfg_s".to_owned(),
            "cog_abcdé_fg_s".to_owned(),
            "cogadm_abcdefgh_s".to_owned(),
            "cog__bcdefgh_s".to_owned(),
            String::new(),
        ];
        // Every byte value in the id, at its end and in the secret.
        for c in (1..=0x7fu8).map(char::from).chain(['é', '€']) {
            cases.push(format!("cog_abcdefg{c}_s"));
            cases.push(format!("cog_abcdefgh{c}s"));
            cases.push(format!("cog_abcdefgh_{c}"));
        }
        for key in &cases {
            assert_eq!(
                id_of(key).map(str::to_owned),
                by_split("cog_", key),
                "{key:?}"
            );
            assert_eq!(
                token_id_of(key).map(str::to_owned),
                by_split("cogadm_", key),
                "{key:?}"
            );
        }
    }

    #[test]
    fn digests_read_back_from_their_hex() {
        let k = generate();
        assert_eq!(unhex32(&hash(&k.secret)), Some(digest(&k.secret)));
        assert_eq!(unhex32("00"), None);
        assert_eq!(unhex32(&"G".repeat(64)), None);
        assert_eq!(unhex32(&"A".repeat(64)), None, "lowercase only");
        assert_eq!(unhex32(&"f".repeat(64)), Some([0xff; 32]));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
