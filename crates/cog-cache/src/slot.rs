//! What L1 holds: keys (tenant + key, and a borrowed form for lookups),
//! slots (value, deadlines, weight, tags, tenant charge) and their weigher.

use std::hash::Hash;
use std::sync::Arc;

use quick_cache::sync::{DefaultLifecycle, PlaceholderGuard};
use quick_cache::{Equivalent, Weighter};

use crate::tenant::Charge;

/// L1 key: tenant + user key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct L1Key<K> {
    pub(crate) tenant: Arc<str>,
    pub(crate) key: K,
}

/// Hashes the tenant, then the key — the tenant only when there is one, so
/// a cache without tenants hashes no more than its keys.
#[inline]
fn hash_l1<K: Hash, H: std::hash::Hasher>(tenant: &str, key: &K, state: &mut H) {
    if !tenant.is_empty() {
        tenant.hash(state);
    }
    key.hash(state);
}

impl<K: Hash> Hash for L1Key<K> {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        hash_l1(&self.tenant, &self.key, state);
    }
}

/// Borrowed form of [`L1Key`] for lookups that allocate nothing. Hashes
/// exactly like it.
pub(crate) struct L1Ref<'a, K> {
    pub(crate) tenant: &'a str,
    pub(crate) key: &'a K,
}

impl<K: Hash> Hash for L1Ref<'_, K> {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        hash_l1(self.tenant, self.key, state);
    }
}

impl<K: Eq> Equivalent<L1Key<K>> for L1Ref<'_, K> {
    #[inline]
    fn equivalent(&self, k: &L1Key<K>) -> bool {
        // Tenants are shared `Arc<str>`s: the same pointer is the common
        // case, and saves comparing bytes.
        let same_tenant =
            std::ptr::eq(k.tenant.as_ptr(), self.tenant.as_ptr()) || *k.tenant == *self.tenant;
        same_tenant && k.key == *self.key
    }
}

/// An L1 entry: the value (`None`: cached absence), its deadlines on the
/// cache's monotonic clock, and its weight.
#[derive(Clone)]
pub(crate) struct Slot<V> {
    pub(crate) value: Option<V>,
    /// Fresh in L1 until (at most `expires`; earlier with a short L1 TTL).
    pub(crate) fresh_until: u64,
    /// The value's own freshness deadline (shared through L2).
    pub(crate) expires: u64,
    /// Bytes, as weighed when stored.
    pub(crate) weight: u32,
    pub(crate) tags: Tags,
    /// The weight counted against the tenant's L1 cap while this slot is
    /// in L1; copies carry none (see [`crate::tenant`]).
    pub(crate) charge: Charge,
}

/// Tags of an entry, for [`TieredCache::invalidate_tag`]. One thin
/// pointer: L1 entries stay small, and small entries are fast entries.
pub(crate) type Tags = Option<Arc<Box<[Arc<str>]>>>;

impl<V> Slot<V> {
    pub(crate) fn has_tag(&self, tag: &str) -> bool {
        self.tags
            .as_ref()
            .is_some_and(|t| t.iter().any(|x| &**x == tag))
    }
}

#[derive(Clone, Copy)]
pub(crate) struct SlotWeighter;

impl<K, V> Weighter<L1Key<K>, Slot<V>> for SlotWeighter {
    fn weight(&self, _: &L1Key<K>, v: &Slot<V>) -> u64 {
        u64::from(v.weight.max(1))
    }
}

/// The placeholder a single loader holds for a missing key.
pub(crate) type Guard<'a, K, V> = PlaceholderGuard<
    'a,
    L1Key<K>,
    Slot<V>,
    SlotWeighter,
    foldhash::fast::RandomState,
    DefaultLifecycle<L1Key<K>, Slot<V>>,
>;
