//! Per-tenant L1 usage, so one tenant cannot evict everyone else.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use quick_cache::Lifecycle;

use crate::cache::{L1Key, Slot};

/// Bytes of L1 held per tenant (approximate: kept in step on insert,
/// replace, remove and eviction).
#[derive(Default)]
pub(crate) struct TenantUsage {
    bytes: RwLock<HashMap<Arc<str>, AtomicU64>>,
}

impl TenantUsage {
    pub(crate) fn get(&self, tenant: &str) -> u64 {
        self.bytes
            .read()
            .get(tenant)
            .map_or(0, |b| b.load(Ordering::Relaxed))
    }

    pub(crate) fn add(&self, tenant: &Arc<str>, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(b) = self.bytes.read().get(&**tenant) {
            b.fetch_add(n, Ordering::Relaxed);
            return;
        }
        self.bytes
            .write()
            .entry(tenant.clone())
            .or_default()
            .fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, tenant: &str, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(b) = self.bytes.read().get(tenant) {
            let _ = b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
        }
    }

    pub(crate) fn reset(&self, tenant: Option<&str>) {
        match tenant {
            Some(t) => {
                if let Some(b) = self.bytes.read().get(t) {
                    b.store(0, Ordering::Relaxed);
                }
            }
            None => self.bytes.write().clear(),
        }
    }
}

/// Keeps [`TenantUsage`] in step with evictions.
#[derive(Clone)]
pub(crate) struct TenantLifecycle {
    usage: Arc<TenantUsage>,
}

impl TenantLifecycle {
    pub(crate) fn new(usage: Arc<TenantUsage>) -> Self {
        TenantLifecycle { usage }
    }
}

impl<K, V> Lifecycle<L1Key<K>, Slot<V>> for TenantLifecycle {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), key: L1Key<K>, val: Slot<V>) {
        self.usage.sub(&key.tenant, u64::from(val.weight));
    }
}
