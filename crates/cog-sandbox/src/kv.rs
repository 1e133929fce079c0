//! The key-value store plugins see, scoped to (tenant, plugin).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Whose keys a call may touch: one tenant's data for one plugin. A plugin
/// never names the scope; the host sets it, so no key can reach another
/// tenant's entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KvScope {
    /// The tenant the request belongs to.
    pub tenant: Arc<str>,
    /// The plugin's name.
    pub plugin: Arc<str>,
}

/// Why a KV operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The scope holds `max_kv_entries` already.
    #[error("the plugin's key-value scope is full")]
    Full,
    /// The backend could not answer (in time); the source says why.
    #[error("key-value store unavailable")]
    Unavailable(#[source] crate::Cause),
}

/// A store for plugin KV data. Calls are synchronous: plugins run on
/// blocking threads, and each call is bounded by the plugin's deadline.
pub trait KvStore: Send + Sync + 'static {
    /// The value under `key`.
    fn get(&self, scope: &KvScope, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
    /// Stores `value` under `key`; a new key is refused with
    /// [`KvError::Full`] when the scope already holds `max_entries`.
    fn set(
        &self,
        scope: &KvScope,
        key: &[u8],
        value: &[u8],
        max_entries: usize,
    ) -> Result<(), KvError>;
    /// Removes `key`; whether it was there.
    fn delete(&self, scope: &KvScope, key: &[u8]) -> Result<bool, KvError>;
}

/// One scope's entries.
type Entries = HashMap<Vec<u8>, Vec<u8>>;

/// An in-process [`KvStore`].
#[derive(Debug, Default)]
pub struct MemoryKv {
    scopes: Mutex<HashMap<KvScope, Entries>>,
}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` in `scope` from the host side (seeding a plugin's data);
    /// no entry limit applies.
    pub fn put(&self, scope: &KvScope, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.scopes
            .lock()
            .entry(scope.clone())
            .or_default()
            .insert(key.into(), value.into());
    }

    /// Number of entries in `scope`.
    pub fn len(&self, scope: &KvScope) -> usize {
        self.scopes.lock().get(scope).map_or(0, HashMap::len)
    }

    /// Whether `scope` holds nothing.
    pub fn is_empty(&self, scope: &KvScope) -> bool {
        self.len(scope) == 0
    }
}

impl KvStore for MemoryKv {
    fn get(&self, scope: &KvScope, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self
            .scopes
            .lock()
            .get(scope)
            .and_then(|s| s.get(key).cloned()))
    }

    fn set(
        &self,
        scope: &KvScope,
        key: &[u8],
        value: &[u8],
        max_entries: usize,
    ) -> Result<(), KvError> {
        let mut scopes = self.scopes.lock();
        let entries = scopes.entry(scope.clone()).or_default();
        if !entries.contains_key(key) && entries.len() >= max_entries {
            return Err(KvError::Full);
        }
        entries.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&self, scope: &KvScope, key: &[u8]) -> Result<bool, KvError> {
        Ok(self
            .scopes
            .lock()
            .get_mut(scope)
            .is_some_and(|s| s.remove(key).is_some()))
    }
}
