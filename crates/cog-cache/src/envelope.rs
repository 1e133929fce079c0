//! The versioned byte format of values in L2.
//!
//! ```text
//! 0..2    magic "CG"
//! 2       format version (1)
//! 3       flags: bit 0 = payload LZ4-compressed, bit 1 = negative entry
//! 4..12   schema tag (u64 LE): hash of the cache's schema name
//! 12..20  fresh until, Unix ms (u64 LE)
//! 20..28  stale until, Unix ms (u64 LE)
//! 28..30  tag count n (u16 LE), then n × (u16 LE length, UTF-8 tag)
//! ..      payload: postcard-encoded value (absent for a negative entry)
//! ```
//!
//! A value written under another format version or schema tag — or any
//! bytes that do not parse — decode to an error, which the cache counts and
//! treats as a miss: a format change never reads old bytes as new.

use serde::Serialize;
use serde::de::DeserializeOwned;

const MAGIC: &[u8; 2] = b"CG";
pub(crate) const FORMAT_VERSION: u8 = 1;
const HEADER: usize = 28;
const COMPRESSED: u8 = 1;
const NEGATIVE: u8 = 2;

/// A decoded L2 entry.
#[derive(Debug, PartialEq)]
pub(crate) struct Envelope<V> {
    pub(crate) value: Option<V>,
    pub(crate) tags: Vec<String>,
    pub(crate) fresh_until_ms: u64,
    pub(crate) stale_until_ms: u64,
}

/// Why bytes from L2 were not a value of ours.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DecodeError {
    #[error("not a cog-cache value (bad magic or too short)")]
    Foreign,
    #[error("format version {0}, expected {FORMAT_VERSION}")]
    Version(u8),
    #[error("schema tag {found:#x}, expected {expected:#x}")]
    Schema { found: u64, expected: u64 },
    #[error("corrupt payload: {0}")]
    Payload(String),
}

/// The schema tag of a schema name (stable across processes and builds).
pub(crate) fn schema_tag(schema: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x0063_6163_6865).hash_one(schema)
}

pub(crate) fn encode<V: Serialize>(
    value: Option<&V>,
    tags: &[std::sync::Arc<str>],
    schema: u64,
    fresh_until_ms: u64,
    stale_until_ms: u64,
    compress_above: Option<usize>,
) -> Result<Vec<u8>, postcard::Error> {
    let mut flags = 0;
    let payload = match value {
        Some(v) => {
            let raw = postcard::to_stdvec(v)?;
            match compress_above {
                Some(min) if raw.len() > min => {
                    flags |= COMPRESSED;
                    lz4_flex::compress_prepend_size(&raw)
                }
                _ => raw,
            }
        }
        None => {
            flags |= NEGATIVE;
            Vec::new()
        }
    };
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(flags);
    out.extend_from_slice(&schema.to_le_bytes());
    out.extend_from_slice(&fresh_until_ms.to_le_bytes());
    out.extend_from_slice(&stale_until_ms.to_le_bytes());
    let tags: Vec<&[u8]> = tags
        .iter()
        .map(|t| &t.as_bytes()[..t.len().min(u16::MAX as usize)])
        .take(u16::MAX as usize)
        .collect();
    out.extend_from_slice(&(tags.len() as u16).to_le_bytes());
    for t in tags {
        out.extend_from_slice(&(t.len() as u16).to_le_bytes());
        out.extend_from_slice(t);
    }
    out.extend_from_slice(&payload);
    Ok(out)
}

/// How many bytes `bytes` (an encoded entry) take once decoded: their
/// length, with a compressed payload counted at its uncompressed size —
/// what the value occupies in L1, not what it took on the wire.
pub(crate) fn decoded_size(bytes: &[u8]) -> usize {
    let declared = (bytes.len() >= HEADER && bytes[3] & COMPRESSED != 0)
        .then(|| read_tags(&bytes[HEADER..]).ok())
        .flatten()
        .and_then(|(_, payload)| payload.get(..4).map(|b| (payload.len(), b)))
        .map(|(len, b)| (len, u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize));
    match declared {
        Some((payload, raw)) => bytes.len() - payload + raw.min(payload.saturating_mul(255)),
        None => bytes.len(),
    }
}

fn read_tags(mut rest: &[u8]) -> Result<(Vec<String>, &[u8]), DecodeError> {
    let mut take = |n: usize| -> Result<&[u8], DecodeError> {
        if rest.len() < n {
            return Err(DecodeError::Payload("truncated tags".into()));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let count = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
    let mut tags = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let len = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
        let tag = std::str::from_utf8(take(len)?)
            .map_err(|_| DecodeError::Payload("tag is not UTF-8".into()))?;
        tags.push(tag.to_owned());
    }
    Ok((tags, rest))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

pub(crate) fn decode<V: DeserializeOwned>(
    bytes: &[u8],
    schema: u64,
) -> Result<Envelope<V>, DecodeError> {
    if bytes.len() < HEADER || &bytes[..2] != MAGIC {
        return Err(DecodeError::Foreign);
    }
    if bytes[2] != FORMAT_VERSION {
        return Err(DecodeError::Version(bytes[2]));
    }
    let flags = bytes[3];
    let found = u64_at(bytes, 4);
    if found != schema {
        return Err(DecodeError::Schema {
            found,
            expected: schema,
        });
    }
    let fresh_until_ms = u64_at(bytes, 12);
    let stale_until_ms = u64_at(bytes, 20);
    let (tags, payload) = read_tags(&bytes[HEADER..])?;
    let value = if flags & NEGATIVE != 0 {
        None
    } else if flags & COMPRESSED != 0 {
        // Check the declared size before allocating it: garbage must not
        // be able to ask for gigabytes. LZ4 expands at most ~255×.
        let declared = payload
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| DecodeError::Payload("truncated size".into()))?;
        if declared > payload.len().saturating_mul(255) {
            return Err(DecodeError::Payload(format!(
                "declared size {declared} is impossible"
            )));
        }
        let raw = lz4_flex::decompress(&payload[4..], declared)
            .map_err(|e| DecodeError::Payload(e.to_string()))?;
        Some(postcard::from_bytes(&raw).map_err(|e| DecodeError::Payload(e.to_string()))?)
    } else {
        Some(postcard::from_bytes(payload).map_err(|e| DecodeError::Payload(e.to_string()))?)
    };
    Ok(Envelope {
        value,
        tags,
        fresh_until_ms,
        stale_until_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only payloads larger than `compress_above` are compressed: one of
    /// exactly that size, or none asked for, goes as it is.
    #[test]
    fn payloads_past_the_threshold_are_compressed() {
        let tag = schema_tag("s");
        // A 98-byte string: 99 bytes of postcard (one byte of length).
        let v = "x".repeat(98);
        let compressed = |min| encode(Some(&v), &[], tag, 1, 2, min).unwrap()[3] & COMPRESSED != 0;
        assert!(compressed(Some(98)));
        assert!(!compressed(Some(99)));
        assert!(!compressed(None));
    }

    #[test]
    fn the_decoded_size_counts_a_compressed_payload_uncompressed() {
        let tag = schema_tag("s");
        let v = "x".repeat(10_000);
        let raw = encode(Some(&v), &["t".into()], tag, 1, 2, None).unwrap();
        let small = encode(Some(&v), &["t".into()], tag, 1, 2, Some(100)).unwrap();
        assert!(
            small.len() < raw.len() / 10,
            "{} {}",
            small.len(),
            raw.len()
        );
        assert_eq!(decoded_size(&small), raw.len());
        assert_eq!(decoded_size(&raw), raw.len());
        // Garbage counts as what it is.
        for bad in [&b""[..], b"CG", &small[..HEADER + 3]] {
            assert_eq!(decoded_size(bad), bad.len());
        }
        // A declared size past what LZ4 can expand to is not believed.
        let mut lying = small.clone();
        let payload_at = HEADER + 2 + 2 + 1;
        lying[payload_at..payload_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decoded_size(&lying) <= small.len() * 256);
    }

    #[test]
    fn round_trips_plain_compressed_and_negative() {
        let tag = schema_tag("user-v1");
        let v = vec!["x".repeat(100); 50];
        for compress in [None, Some(64)] {
            let bytes = encode(Some(&v), &["t1".into()], tag, 10, 20, compress).unwrap();
            if compress.is_some() {
                assert!(bytes.len() < 1000, "not compressed: {}", bytes.len());
            }
            let e: Envelope<Vec<String>> = decode(&bytes, tag).unwrap();
            assert_eq!(e.value.as_ref(), Some(&v));
            assert_eq!((e.fresh_until_ms, e.stale_until_ms), (10, 20));
            assert_eq!(e.tags, ["t1"]);
        }
        let neg = encode::<u32>(None, &[], tag, 1, 2, None).unwrap();
        assert_eq!(decode::<u32>(&neg, tag).unwrap().value, None);
    }

    #[test]
    fn foreign_old_and_garbage_bytes_are_errors_not_panics() {
        let tag = schema_tag("a");
        let good = encode(Some(&42u64), &[], tag, 1, 2, None).unwrap();
        assert!(matches!(
            decode::<u64>(&good, schema_tag("b")),
            Err(DecodeError::Schema { .. })
        ));
        let mut old = good.clone();
        old[2] = 0;
        assert_eq!(decode::<u64>(&old, tag), Err(DecodeError::Version(0)));
        assert_eq!(decode::<u64>(b"hello", tag), Err(DecodeError::Foreign));
        assert_eq!(decode::<u64>(b"", tag), Err(DecodeError::Foreign));
        let mut bad = good.clone();
        bad.truncate(HEADER + 2);
        assert!(matches!(
            decode::<u64>(&bad, tag),
            Err(DecodeError::Payload(_))
        ));
        let mut fake_lz4 = good;
        fake_lz4.truncate(HEADER + 2);
        fake_lz4[3] = COMPRESSED;
        fake_lz4.extend_from_slice(&[0xff; 16]);
        // Refused on its declared size, before anything is allocated.
        assert!(
            matches!(
                decode::<String>(&fake_lz4, tag),
                Err(DecodeError::Payload(m)) if m.contains("impossible")
            ),
            "a 4 GiB size was accepted"
        );
        // Random bytes after a valid header never panic.
        for seed in 0..2000u64 {
            let mut b = encode(Some(&"v".to_owned()), &[], tag, 1, 2, None).unwrap();
            b.truncate(HEADER + (seed % 3) as usize);
            b[3] = (seed % 4) as u8;
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for _ in 0..(seed % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(x as u8);
            }
            let _ = decode::<Vec<String>>(&b, tag);
        }
    }
}
