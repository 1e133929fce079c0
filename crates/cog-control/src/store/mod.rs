//! Where the control plane lives: [`Store`], with a local file
//! ([`FileStore`]) and Redis (`RedisStore`, feature `redis`).
//!
//! A store holds one [`State`] document and a revision that every write
//! bumps, plus plugin bytes by digest. Writes are compare-and-swap on the
//! revision (and, in Redis, the stamp of the commit that made it — see
//! [`Store::version`]), so two writers can never lose each other's updates:
//! [`Control::update`](crate::Control::update) re-reads and re-applies a
//! change that lost the race.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use cog_core::text::redact_url;

use crate::error::{ControlError, Invalid};
use crate::model::{
    AdminToken, ApiKey, AuditEntry, PlacementTable, Plan, PluginSpec, SCHEMA_VERSION, Spec, State,
    Tenant,
};

mod file;
#[cfg(feature = "redis")]
mod redis;

pub use file::FileStore;
#[cfg(feature = "redis")]
pub use redis::RedisStore;

/// A store's revision and the stamp of the commit that made it
/// ([`Store::version`]).
///
/// Written as the admin API's `ETag` (without the quotes): `17` without a
/// stamp, `17-00f3a9c2d4e5b617` with one (16 hex digits); [`FromStr`]
/// reads both back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Version {
    /// The revision.
    pub revision: u64,
    /// What tells this revision's commit from another of the same
    /// revision; `None` when the store keeps none.
    pub stamp: Option<u64>,
}

impl Version {
    /// Whether a state at `self` may be taken for one at `other`: the same
    /// revision, and the same stamp when both have one.
    pub fn matches(&self, other: &Version) -> bool {
        self.revision == other.revision
            && match (self.stamp, other.stamp) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stamp {
            Some(stamp) => write!(f, "{}-{stamp:016x}", self.revision),
            None => write!(f, "{}", self.revision),
        }
    }
}

/// `t` as a number of `radix` digits only (no sign, no space).
fn digits(t: &str, radix: u32) -> Option<u64> {
    let ok = !t.is_empty() && t.chars().all(|c| c.is_digit(radix));
    ok.then(|| u64::from_str_radix(t, radix).ok()).flatten()
}

/// A stamp as written in an ETag and the file store's document: 16 hex
/// digits.
fn hex_stamp(t: &str) -> Option<u64> {
    digits(t, 16).filter(|_| t.len() == 16)
}

/// A [`Version`] that is not `REVISION` or `REVISION-STAMP`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a version (REVISION or REVISION-STAMP, e.g. 17 or 17-00f3a9c2d4e5b617)")]
pub struct ParseVersionError;

impl FromStr for Version {
    type Err = ParseVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (revision, stamp) = match s.split_once('-') {
            Some((r, st)) => (r, Some(hex_stamp(st).ok_or(ParseVersionError)?)),
            None => (s, None),
        };
        Ok(Version {
            revision: digits(revision, 10).ok_or(ParseVersionError)?,
            stamp,
        })
    }
}

/// A backend for the control plane's data.
#[async_trait::async_trait]
pub trait Store: fmt::Debug + Send + Sync + 'static {
    /// The current state; `revision` 0 and empty for a new store.
    async fn load(&self) -> Result<State, ControlError>;

    /// Replaces the state if the store is still at `state.revision` — and
    /// still holds the commit of `state.stamp`, when the state has one and
    /// the store keeps stamps; returns the new revision and its stamp.
    ///
    /// # Errors
    /// [`ControlError::Conflict`] when another writer got there first (or
    /// the store went back and was written up to the same revision again).
    async fn commit(&self, state: &State) -> Result<Version, ControlError>;

    /// The current revision, cheaply (watchers poll it).
    async fn revision(&self) -> Result<u64, ControlError>;

    /// The current revision with the stamp of the commit that made it,
    /// cheaply (the directory polls it). A store that can go back — a
    /// failover to a replica that had not seen the last writes, a restored
    /// backup — and be written up to the same revision again has two
    /// commits of one revision: their stamps tell them apart, so a watcher
    /// that saw the first does not take the second for it. The default:
    /// [`revision`](Self::revision), no stamp.
    async fn version(&self) -> Result<Version, ControlError> {
        Ok(Version {
            revision: self.revision().await?,
            stamp: None,
        })
    }

    /// Stores plugin bytes under their digest (idempotent).
    async fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), ControlError>;

    /// The plugin bytes stored under `digest`.
    async fn get_blob(&self, digest: &str) -> Result<Option<Bytes>, ControlError>;

    /// Deletes the plugin bytes stored under `digest` (nothing if there
    /// are none). [`Control`](crate::Control) calls it once no plugin
    /// refers to them. The default keeps them.
    async fn delete_blob(&self, digest: &str) -> Result<(), ControlError> {
        let _ = digest;
        Ok(())
    }

    /// A receiver told the new revision soon after any writer commits, if
    /// the store can push changes (Redis pub/sub). Watchers also poll
    /// [`revision`](Self::revision), so a lost message only delays.
    fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// Opens the store a URL names: `file:PATH` or `redis://…` /
/// `rediss://…` (feature `redis`).
///
/// # Errors
/// An unknown scheme, or Redis unreachable.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, ControlError> {
    if let Some(path) = url.strip_prefix("file:") {
        if path.is_empty() {
            return Err(ControlError::BadUrl(redact_url(url)));
        }
        return Ok(std::sync::Arc::new(FileStore::new(path)));
    }
    if url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("redis-") {
        #[cfg(feature = "redis")]
        return Ok(std::sync::Arc::new(RedisStore::connect(url).await?));
        #[cfg(not(feature = "redis"))]
        return Err(ControlError::BadUrl(format!(
            "{} (this build has no Redis support: feature `redis`)",
            redact_url(url)
        )));
    }
    Err(ControlError::BadUrl(redact_url(url)))
}

/// The stored form: every field flat, unknown ones refused.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Doc {
    schema: u32,
    #[serde(default)]
    revision: u64,
    #[serde(default, deserialize_with = "crate::model::unique")]
    plans: std::collections::BTreeMap<String, Plan>,
    #[serde(default, deserialize_with = "crate::model::unique")]
    tenants: std::collections::BTreeMap<String, Tenant>,
    #[serde(default, deserialize_with = "crate::model::unique")]
    plugins: std::collections::BTreeMap<String, PluginSpec>,
    #[serde(default, deserialize_with = "crate::model::unique")]
    keys: std::collections::BTreeMap<String, ApiKey>,
    #[serde(
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty",
        deserialize_with = "crate::model::unique"
    )]
    tokens: std::collections::BTreeMap<String, AdminToken>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    audit: Vec<AuditEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    placement: Option<PlacementTable>,
    /// The commit's stamp, in hex, where the store keeps it in the
    /// document (the file store; Redis keeps it beside the document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stamp: Option<String>,
}

/// A number no other commit draws (as far as 64 random bits go): see
/// [`Store::version`].
pub(crate) fn new_stamp() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Serializes a state for storage, at `revision`, with `stamp` in the
/// document if given.
pub(crate) fn encode(state: &State, revision: u64, stamp: Option<u64>) -> Vec<u8> {
    let doc = Doc {
        schema: SCHEMA_VERSION,
        revision,
        plans: state.spec.plans.clone(),
        tenants: state.spec.tenants.clone(),
        plugins: state.spec.plugins.clone(),
        keys: state.keys.clone(),
        tokens: state.tokens.clone(),
        audit: state.audit.clone(),
        placement: state.placement.clone(),
        stamp: stamp.map(|s| format!("{s:016x}")),
    };
    let mut out = serde_json::to_vec_pretty(&doc).expect("the state serializes");
    out.push(b'\n');
    out
}

/// Parses a stored state; garbage is a typed error naming the field.
pub(crate) fn decode(bytes: &[u8], what: &str) -> Result<State, ControlError> {
    // Read the schema first, so a newer store says so instead of failing
    // on a field this version does not know.
    #[derive(Deserialize)]
    struct Version {
        schema: Option<u32>,
    }
    if let Ok(Version { schema: Some(v) }) = serde_json::from_slice::<Version>(bytes)
        && v != SCHEMA_VERSION
    {
        return Err(ControlError::Schema {
            found: v,
            supported: SCHEMA_VERSION,
        });
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let doc: Doc =
        serde_path_to_error::deserialize(de).map_err(|e| match parse_error(what, &e) {
            ControlError::Parse { what, message } => ControlError::Corrupt { what, message },
            other => other,
        })?;
    let state = State {
        revision: doc.revision,
        // One that is not 16 hex digits (edited by hand) is none: compared
        // by revision alone until the next commit draws one.
        stamp: doc.stamp.as_deref().and_then(hex_stamp),
        spec: Spec {
            schema: doc.schema,
            plans: doc.plans,
            tenants: doc.tenants,
            plugins: doc.plugins,
        },
        keys: doc.keys,
        tokens: doc.tokens,
        audit: doc.audit,
        placement: doc.placement,
    };
    state
        .validate_stored()
        .map_err(|e: Invalid| ControlError::Corrupt {
            what: what.to_owned(),
            message: e.to_string(),
        })?;
    Ok(state)
}

pub(crate) fn parse_error<E: fmt::Display>(
    what: &str,
    e: &serde_path_to_error::Error<E>,
) -> ControlError {
    // Where the parser lost its place (a torn document) the path ends in
    // `?`: what is known of it is kept, the `?` left out.
    let path = e.path().to_string();
    let path = match path.strip_suffix('?') {
        Some(known) => known.strip_suffix('.').unwrap_or(known),
        None if path == "." => "",
        None => &path,
    };
    let inner = e.inner().to_string();
    let message = if path.is_empty() || inner.starts_with(path) {
        inner
    } else {
        format!("{path}: {inner}")
    };
    ControlError::Parse {
        what: what.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::Version;

    #[test]
    fn versions_are_written_and_read_back() {
        let stamped = Version {
            revision: 17,
            stamp: Some(0x00f3_a9c2_d4e5_b617),
        };
        assert_eq!(stamped.to_string(), "17-00f3a9c2d4e5b617");
        assert_eq!("17-00f3a9c2d4e5b617".parse(), Ok(stamped));
        let bare = Version {
            revision: 17,
            stamp: None,
        };
        assert_eq!(bare.to_string(), "17");
        assert_eq!("17".parse(), Ok(bare));
        let max = Version {
            revision: u64::MAX,
            stamp: Some(u64::MAX),
        };
        assert_eq!(max.to_string().parse(), Ok(max));
        for bad in [
            "",
            "-",
            "17-",
            "-00f3a9c2d4e5b617",
            "+17",
            "17-+0f3a9c2d4e5b617",
            "17-00f3a9c2d4e5b61",
            "17-00f3a9c2d4e5b6170",
            "17-00f3a9c2d4e5b61g",
            "17-00f3a9c2d4e5b617-1",
            "18446744073709551616",
            " 17",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_version_without_a_stamp_matches_any_commit_of_its_revision() {
        let v = |revision, stamp| Version { revision, stamp };
        assert!(v(3, Some(1)).matches(&v(3, Some(1))));
        assert!(!v(3, Some(1)).matches(&v(3, Some(2))));
        assert!(!v(3, Some(1)).matches(&v(4, Some(1))));
        assert!(v(3, None).matches(&v(3, Some(2))));
        assert!(v(3, Some(2)).matches(&v(3, None)));
        assert!(!v(3, None).matches(&v(2, None)));
    }
}
