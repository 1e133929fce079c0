//! Where the control plane lives: [`Store`], with a local file
//! ([`FileStore`]) and Redis (`RedisStore`, feature `redis`).
//!
//! A store holds one [`State`] document and a revision that every write
//! bumps, plus plugin bytes by digest. Writes are compare-and-swap on the
//! revision, so two writers can never lose each other's updates:
//! [`Control::update`](crate::Control::update) re-reads and re-applies a
//! change that lost the race.

use std::fmt;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// The revision.
    pub revision: u64,
    /// What tells this revision's commit from another of the same
    /// revision; `None` when the store keeps none.
    pub stamp: Option<u64>,
}

/// A backend for the control plane's data.
#[async_trait::async_trait]
pub trait Store: fmt::Debug + Send + Sync + 'static {
    /// The current state; `revision` 0 and empty for a new store.
    async fn load(&self) -> Result<State, ControlError>;

    /// Replaces the state if the store is still at `state.revision`;
    /// returns the new revision.
    ///
    /// # Errors
    /// [`ControlError::Conflict`] when another writer got there first.
    async fn commit(&self, state: &State) -> Result<u64, ControlError>;

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
}

/// Serializes a state for storage, at `revision`.
pub(crate) fn encode(state: &State, revision: u64) -> Vec<u8> {
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
    let path = e.path().to_string();
    let inner = e.inner().to_string();
    let message = if path == "." || path.is_empty() || inner.starts_with(&path) {
        inner
    } else {
        format!("{path}: {inner}")
    };
    ControlError::Parse {
        what: what.to_owned(),
        message,
    }
}
