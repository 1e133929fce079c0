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

/// What one scope may hold: entries, and bytes — every key and value
/// stored, counted by length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuota {
    /// Most entries (`Limits::max_kv_entries`).
    pub entries: usize,
    /// Most bytes of keys and values together (`Limits::max_kv_bytes`).
    pub bytes: usize,
}

impl KvQuota {
    /// The quota `limits` sets.
    pub fn of(limits: &crate::Limits) -> Self {
        KvQuota {
            entries: limits.max_kv_entries,
            bytes: limits.max_kv_bytes,
        }
    }

    /// Whether a set taking a scope from `entries` entries of `bytes` bytes
    /// (before) to `bytes_after` bytes, `new_key` adding an entry, is
    /// refused: a new entry past the entry limit, or a scope that grows
    /// past the byte limit. A scope over it already (the limit lowered)
    /// may still shrink.
    pub(crate) fn refuses(
        &self,
        entries: usize,
        new_key: bool,
        bytes: usize,
        bytes_after: usize,
    ) -> Option<KvError> {
        if new_key && entries >= self.entries {
            Some(KvError::Full)
        } else if bytes_after > self.bytes && bytes_after > bytes {
            Some(KvError::BytesFull)
        } else {
            None
        }
    }
}

/// Why a KV operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The scope holds `max_kv_entries` already.
    #[error("the plugin's key-value scope is full")]
    Full,
    /// The set would take the scope's keys and values past
    /// `max_kv_bytes`.
    #[error("the plugin's key-value scope is at its byte limit")]
    BytesFull,
    /// The backend could not answer (in time); the source says why.
    #[error("key-value store unavailable")]
    Unavailable(#[source] crate::Cause),
}

/// A store for plugin KV data. Calls are synchronous: plugins run on
/// blocking threads, and each call is bounded by the plugin's deadline.
pub trait KvStore: Send + Sync + 'static {
    /// The value under `key`.
    fn get(&self, scope: &KvScope, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
    /// Stores `value` under `key` within `quota`: a new key is refused
    /// with [`KvError::Full`] when the scope already holds
    /// `quota.entries`, and a set that would take the scope's bytes (every
    /// key and value, by length) past `quota.bytes` with
    /// [`KvError::BytesFull`] — unless it makes the scope smaller. The
    /// check and the write are one atomic step.
    fn set(&self, scope: &KvScope, key: &[u8], value: &[u8], quota: KvQuota)
    -> Result<(), KvError>;
    /// Removes `key`; whether it was there.
    fn delete(&self, scope: &KvScope, key: &[u8]) -> Result<bool, KvError>;
    /// Removes everything `scope` holds; whether it held anything. The
    /// control plane calls it for the scopes of a tenant or a plugin it
    /// deletes (see `cog_control::Control::plugin_data`), so that a
    /// tenant created later under the same id starts empty.
    fn clear(&self, scope: &KvScope) -> Result<bool, KvError>;
    /// [`clear`](Self::clear)s every scope of `scopes`; how many held
    /// anything. Stores that can batch the work (Redis: a pipeline, not a
    /// round trip per scope) do; the default clears them one by one.
    ///
    /// # Errors
    /// The first failure; scopes before it may be cleared already.
    fn clear_all(&self, scopes: &[KvScope]) -> Result<usize, KvError> {
        let mut held = 0;
        for scope in scopes {
            held += usize::from(self.clear(scope)?);
        }
        Ok(held)
    }
    /// Copies `scopes` from deployment `from` to deployment `to`, where
    /// their tenants' partition moved at placement revision `revision` —
    /// what a placed store does on each scope's first use after a move,
    /// done ahead for scopes that may not be used before its copy window
    /// ends (the control plane calls it for every scope of a moved
    /// partition). Once across the fleet, as on first use: a scope copied
    /// already is left as it is. Stores that keep every scope in one place
    /// have nothing to copy (the default).
    ///
    /// # Errors
    /// The first scope that could not be copied.
    fn copy_moved(
        &self,
        from: &str,
        to: &str,
        revision: u64,
        scopes: &[KvScope],
    ) -> Result<(), KvError> {
        let _ = (from, to, revision, scopes);
        Ok(())
    }
}

/// One scope's entries, and their keys' and values' bytes.
#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

impl Entries {
    /// The bytes of `key`'s entry (0 when there is none).
    fn size_of(&self, key: &[u8]) -> usize {
        self.map.get(key).map_or(0, |v| key.len() + v.len())
    }

    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.bytes = self.bytes - self.size_of(&key) + key.len() + value.len();
        self.map.insert(key, value);
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        let size = self.size_of(key);
        let found = self.map.remove(key).is_some();
        self.bytes -= size;
        found
    }
}

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
    /// no limit applies.
    pub fn put(&self, scope: &KvScope, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.scopes
            .lock()
            .entry(scope.clone())
            .or_default()
            .insert(key.into(), value.into());
    }

    /// Number of entries in `scope`.
    pub fn len(&self, scope: &KvScope) -> usize {
        self.scopes.lock().get(scope).map_or(0, |e| e.map.len())
    }

    /// Bytes of every key and value in `scope`.
    pub fn bytes(&self, scope: &KvScope) -> usize {
        self.scopes.lock().get(scope).map_or(0, |e| e.bytes)
    }

    /// Whether `scope` holds nothing.
    pub fn is_empty(&self, scope: &KvScope) -> bool {
        self.len(scope) == 0
    }

    /// How many scopes hold data.
    pub fn scopes(&self) -> usize {
        self.scopes.lock().len()
    }
}

impl KvStore for MemoryKv {
    fn get(&self, scope: &KvScope, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self
            .scopes
            .lock()
            .get(scope)
            .and_then(|s| s.map.get(key).cloned()))
    }

    fn set(
        &self,
        scope: &KvScope,
        key: &[u8],
        value: &[u8],
        quota: KvQuota,
    ) -> Result<(), KvError> {
        let mut scopes = self.scopes.lock();
        let (entries, bytes, old, new_key) = match scopes.get(scope) {
            Some(e) => (
                e.map.len(),
                e.bytes,
                e.size_of(key),
                !e.map.contains_key(key),
            ),
            None => (0, 0, 0, true),
        };
        let after = bytes - old + key.len() + value.len();
        // A refused set leaves no empty scope behind.
        if let Some(e) = quota.refuses(entries, new_key, bytes, after) {
            return Err(e);
        }
        scopes
            .entry(scope.clone())
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&self, scope: &KvScope, key: &[u8]) -> Result<bool, KvError> {
        let mut scopes = self.scopes.lock();
        let Some(entries) = scopes.get_mut(scope) else {
            return Ok(false);
        };
        let found = entries.remove(key);
        // The last key gone, the scope goes too: the map holds only
        // scopes with data.
        if entries.map.is_empty() {
            scopes.remove(scope);
        }
        Ok(found)
    }

    fn clear(&self, scope: &KvScope) -> Result<bool, KvError> {
        Ok(self
            .scopes
            .lock()
            .remove(scope)
            .is_some_and(|e| !e.map.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> KvScope {
        KvScope {
            tenant: "t".into(),
            plugin: "p".into(),
        }
    }

    #[test]
    fn the_memory_store_counts_keys_and_values_and_holds_the_byte_limit() {
        let kv = MemoryKv::new();
        let s = scope();
        let quota = KvQuota {
            entries: 100,
            bytes: 30,
        };
        kv.set(&s, b"ab", b"0123456789", quota).unwrap();
        kv.set(&s, b"cd", b"0123456789", quota).unwrap();
        assert_eq!(kv.bytes(&s), 24);
        // 24 + 7 > 30; 24 + 6 = 30 is allowed: the limit is exact.
        assert_eq!(kv.set(&s, b"e", b"012345", quota), Err(KvError::BytesFull));
        kv.set(&s, b"e", b"01234", quota).unwrap();
        assert_eq!(kv.bytes(&s), 30);
        // A replacement counts what it leaves: the same size passes, a
        // larger one does not, a smaller one frees room.
        kv.set(&s, b"ab", b"9876543210", quota).unwrap();
        assert_eq!(
            kv.set(&s, b"ab", b"01234567890", quota),
            Err(KvError::BytesFull)
        );
        kv.set(&s, b"ab", b"0", quota).unwrap();
        assert_eq!(kv.bytes(&s), 21);
        assert!(kv.delete(&s, b"cd").unwrap());
        assert!(!kv.delete(&s, b"cd").unwrap());
        assert_eq!(kv.bytes(&s), 9);
        // Over a lowered limit: it may shrink, not grow.
        let lower = KvQuota { bytes: 4, ..quota };
        assert_eq!(kv.set(&s, b"x", b"", lower), Err(KvError::BytesFull));
        kv.set(&s, b"e", b"98765", lower).unwrap();
        assert_eq!(kv.bytes(&s), 9);
        kv.set(&s, b"e", b"0", lower).unwrap();
        assert_eq!(kv.bytes(&s), 5);
        // The entry limit is checked first, for new keys only.
        let two = KvQuota {
            entries: 2,
            ..lower
        };
        assert_eq!(kv.set(&s, b"new", b"", two), Err(KvError::Full));
        kv.set(&s, b"e", b"", two).unwrap();
        assert_eq!(kv.len(&s), 2);
        assert_eq!(kv.bytes(&s), 4);
    }

    #[test]
    fn the_memory_store_keeps_only_scopes_with_data() {
        let kv = MemoryKv::new();
        let (s, other) = (
            scope(),
            KvScope {
                tenant: "t".into(),
                plugin: "q".into(),
            },
        );
        let none = KvQuota {
            entries: 0,
            bytes: 0,
        };
        // Refused sets and deletes in empty scopes make no scope.
        assert_eq!(kv.set(&s, b"k", b"v", none), Err(KvError::Full));
        assert!(!kv.delete(&s, b"k").unwrap());
        assert_eq!(kv.scopes(), 0);
        kv.put(&s, "a", "1");
        kv.put(&s, "b", "2");
        kv.put(&other, "a", "1");
        assert!(kv.delete(&s, b"a").unwrap());
        assert_eq!(kv.scopes(), 2);
        assert!(kv.delete(&s, b"b").unwrap());
        assert_eq!(kv.scopes(), 1);
        // Clearing takes one scope's data, whole, and says whether there
        // was any.
        kv.put(&s, "c", "3");
        assert!(kv.clear(&s).unwrap());
        assert!(!kv.clear(&s).unwrap());
        assert_eq!((kv.len(&s), kv.bytes(&s), kv.len(&other)), (0, 0, 1));
        assert_eq!(kv.get(&other, b"a").unwrap().as_deref(), Some(&b"1"[..]));
        // Many at once: how many held data.
        kv.put(&s, "d", "4");
        assert_eq!(kv.clear_all(&[s.clone(), scope(), other.clone()]), Ok(2));
        assert_eq!(kv.scopes(), 0);
    }
}
