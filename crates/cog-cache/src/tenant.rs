//! Per-tenant L1 usage, so one tenant cannot evict everyone else.
//!
//! The accounting is correct by construction: every entry that enters L1
//! under a tenant cap carries a [`Charge`] — its weight, added to its
//! tenant's counter when the charge is made and subtracted when the charge
//! is dropped. L1 drops an entry however it leaves (eviction, replacement
//! of the same key, an oversized value refused, `remove`, `remove_if`,
//! `retain`, `clear`), so no code path has to remember to subtract, and
//! none can subtract twice. Copies of an entry (what a lookup returns)
//! carry no charge: cloning a [`Charge`] gives an empty one.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

/// Bytes of L1 held per tenant, with every live charge counted exactly
/// once.
///
/// The map holds a counter per tenant that has (or recently had) entries
/// in L1. Counters nobody holds any more are pruned whenever the map has
/// doubled since the last prune, so the map stays within twice the number
/// of tenants with live entries — itself bounded by L1's entry count.
#[derive(Default)]
pub(crate) struct TenantUsage {
    counters: RwLock<Counters>,
}

#[derive(Default)]
struct Counters {
    map: HashMap<Arc<str>, Arc<AtomicU64>>,
    /// Prune again when the map grows past this.
    prune_at: usize,
}

/// The smallest map that is ever pruned.
const PRUNE_FLOOR: usize = 64;

impl TenantUsage {
    /// Bytes `tenant` holds in L1 now.
    pub(crate) fn get(&self, tenant: &str) -> u64 {
        self.counters
            .read()
            .map
            .get(tenant)
            .map_or(0, |b| b.load(Ordering::Relaxed))
    }

    /// Counts `weight` bytes against `tenant` until the returned charge is
    /// dropped.
    pub(crate) fn charge(&self, tenant: &Arc<str>, weight: u64) -> Charge {
        let counter = self.counter(tenant);
        counter.fetch_add(weight, Ordering::Relaxed);
        Charge(Some(Held { counter, weight }))
    }

    fn counter(&self, tenant: &Arc<str>) -> Arc<AtomicU64> {
        if let Some(c) = self.counters.read().map.get(&**tenant) {
            return c.clone();
        }
        let mut counters = self.counters.write();
        if counters.map.len() >= counters.prune_at.max(PRUNE_FLOOR) {
            // Only the map holds these: no live entry is charged to them.
            counters.map.retain(|_, c| Arc::strong_count(c) > 1);
            counters.prune_at = 2 * counters.map.len();
        }
        counters.map.entry(tenant.clone()).or_default().clone()
    }

    /// Tenants with a counter (for tests of the bound).
    #[cfg(test)]
    pub(crate) fn tenants(&self) -> usize {
        self.counters.read().map.len()
    }
}

/// Weight counted against a tenant while this lives (see the module docs).
/// Cloning gives an empty charge: only the copy inside L1 counts.
pub(crate) struct Charge(Option<Held>);

struct Held {
    counter: Arc<AtomicU64>,
    weight: u64,
}

impl Charge {
    /// No weight counted (entries of caches without a tenant cap).
    pub(crate) const NONE: Charge = Charge(None);
}

impl Clone for Charge {
    #[inline]
    fn clone(&self) -> Self {
        Charge::NONE
    }
}

impl Drop for Charge {
    #[inline]
    fn drop(&mut self) {
        if let Some(held) = &self.0 {
            held.counter.fetch_sub(held.weight, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for Charge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(h) => write!(f, "Charge({})", h.weight),
            None => f.write_str("Charge(none)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_counts_until_dropped_and_its_clones_count_nothing() {
        let usage = TenantUsage::default();
        let t: Arc<str> = Arc::from("t");
        let a = usage.charge(&t, 10);
        let b = usage.charge(&t, 5);
        assert_eq!(usage.get("t"), 15);
        let copy = a.clone();
        drop(copy);
        assert_eq!(usage.get("t"), 15);
        drop(a);
        assert_eq!(usage.get("t"), 5);
        drop(b);
        assert_eq!(usage.get("t"), 0);
        assert_eq!(usage.get("other"), 0);
        drop(Charge::NONE);
    }

    #[test]
    fn tenants_without_charges_are_pruned() {
        let usage = TenantUsage::default();
        let kept: Arc<str> = Arc::from("kept");
        let held = usage.charge(&kept, 1);
        for i in 0..1_000_000 {
            let t: Arc<str> = Arc::from(format!("t{i}").as_str());
            drop(usage.charge(&t, 1));
            assert!(usage.tenants() <= 2 * PRUNE_FLOOR);
        }
        assert_eq!(usage.get("kept"), 1);
        drop(held);
        assert_eq!(usage.get("kept"), 0);
    }

    #[test]
    fn tenants_with_charges_are_never_pruned() {
        let usage = TenantUsage::default();
        let held: Vec<Charge> = (0..3 * PRUNE_FLOOR)
            .map(|i| usage.charge(&Arc::from(format!("t{i}").as_str()), 2))
            .collect();
        for i in 0..3 * PRUNE_FLOOR {
            assert_eq!(usage.get(&format!("t{i}")), 2);
        }
        assert!(usage.tenants() >= 3 * PRUNE_FLOOR);
        drop(held);
    }

    #[test]
    fn debug_shows_the_weight() {
        let usage = TenantUsage::default();
        let c = usage.charge(&Arc::from("t"), 7);
        assert_eq!(format!("{c:?}"), "Charge(7)");
        assert_eq!(format!("{:?}", c.clone()), "Charge(none)");
    }

    #[test]
    fn the_map_is_pruned_only_once_it_has_doubled() {
        let usage = TenantUsage::default();
        // 100 tenants with live entries: the prune at 64 keeps them all and
        // sets the next one at 128.
        let held: Vec<Charge> = (0..100)
            .map(|i| usage.charge(&Arc::from(format!("held{i}").as_str()), 1))
            .collect();
        for i in 0..27 {
            drop(usage.charge(&Arc::from(format!("gone{i}").as_str()), 1));
        }
        assert_eq!(usage.tenants(), 127);
        drop(usage.charge(&Arc::from("one more"), 1));
        drop(usage.charge(&Arc::from("and another"), 1));
        assert_eq!(usage.tenants(), 101);
        drop(held);
    }
}

/// The accounting against what L1 really holds, after random operation
/// sequences through the public API.
#[cfg(test)]
mod property {
    use std::time::Duration;

    use proptest::prelude::*;

    use crate::TieredCache;

    type Cache = TieredCache<u8, Vec<u8>>;

    const TENANTS: [&str; 3] = ["a", "b", ""];
    const CAP: u64 = 1_500;

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert (or replace) `key` with `len` bytes, optionally tagged.
        Insert {
            t: usize,
            key: u8,
            len: usize,
            tag: Option<u8>,
        },
        /// Insert already expired, then read it through: the expired entry
        /// is removed and the loader's value takes its place.
        Expire {
            t: usize,
            key: u8,
            len: usize,
        },
        /// Read through a loader (a miss fills the placeholder).
        Load {
            t: usize,
            key: u8,
            len: usize,
        },
        Remove {
            t: usize,
            key: u8,
        },
        InvalidateTag {
            t: usize,
            tag: u8,
        },
        InvalidateTenant {
            t: usize,
        },
        Flush,
    }

    fn op() -> impl Strategy<Value = Op> {
        let t = 0..TENANTS.len();
        let key = 0u8..12;
        // Up past the L1 shard's hot budget, so some values are refused.
        let len = 0usize..2_500;
        prop_oneof![
            6 => (t.clone(), key.clone(), len.clone(), proptest::option::of(0u8..3))
                .prop_map(|(t, key, len, tag)| Op::Insert { t, key, len, tag }),
            2 => (t.clone(), key.clone(), len.clone())
                .prop_map(|(t, key, len)| Op::Expire { t, key, len }),
            3 => (t.clone(), key.clone(), len).prop_map(|(t, key, len)| Op::Load { t, key, len }),
            2 => (t.clone(), key).prop_map(|(t, key)| Op::Remove { t, key }),
            1 => (t.clone(), 0u8..3).prop_map(|(t, tag)| Op::InvalidateTag { t, tag }),
            1 => t.prop_map(|t| Op::InvalidateTenant { t }),
            1 => Just(Op::Flush),
        ]
    }

    async fn run(cache: &Cache, op: Op) {
        match op {
            Op::Insert { t, key, len, tag } => {
                let view = cache.tenant(TENANTS[t]);
                match tag {
                    Some(tag) => {
                        view.tagged([tag.to_string()])
                            .insert(key, vec![0; len])
                            .await
                    }
                    None => view.insert(key, vec![0; len]).await,
                }
            }
            Op::Expire { t, key, len } => {
                let view = cache.tenant(TENANTS[t]);
                view.insert_with_ttl(key, vec![1; len], Duration::ZERO)
                    .await;
                let _ = view
                    .get_or_load(&key, move || async move { Ok::<_, ()>(vec![2; len]) })
                    .await;
            }
            Op::Load { t, key, len } => {
                let _ = cache
                    .tenant(TENANTS[t])
                    .get_or_load(&key, move || async move { Ok::<_, ()>(vec![3; len]) })
                    .await;
            }
            Op::Remove { t, key } => cache.tenant(TENANTS[t]).invalidate(&key).await,
            Op::InvalidateTag { t, tag } => {
                cache
                    .tenant(TENANTS[t])
                    .invalidate_tag(&tag.to_string())
                    .await;
            }
            Op::InvalidateTenant { t } => cache.tenant(TENANTS[t]).invalidate_tenant().await,
            Op::Flush => cache.inner.l1.clear(),
        }
    }

    /// Per tenant: what the accounting says == the weights L1 holds, and
    /// within the cap.
    fn check(cache: &Cache) -> Result<(), TestCaseError> {
        for tenant in TENANTS {
            let live: u64 = cache
                .inner
                .l1
                .iter()
                .filter(|(k, _)| &*k.tenant == tenant)
                .map(|(_, s)| u64::from(s.weight))
                .sum();
            let tracked = cache.inner.usage.get(tenant);
            prop_assert_eq!(tracked, live, "tenant {:?}", tenant);
            prop_assert!(
                tracked <= CAP,
                "tenant {:?} over its cap: {}",
                tenant,
                tracked
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn tracked_usage_equals_the_live_entries(ops in proptest::collection::vec(op(), 1..80)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let cache: Cache = TieredCache::builder()
                .l1_capacity_bytes(6_000)
                .tenant_l1_cap(CAP)
                .weigher(|_, v: &Vec<u8>| v.len() as u64)
                .build()
                .unwrap();
            for op in ops {
                rt.block_on(run(&cache, op));
                check(&cache)?;
            }
        }
    }
}
