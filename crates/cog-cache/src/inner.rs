//! The state every handle of a cache shares, and how a value becomes an
//! entry: deadlines, weight, tenant charge, the L1 and L2 writes.
//! Handles ([`crate::TieredCache`]) and the read-through engine sit above
//! it; the tiers' own modules ([`crate::l2`], [`crate::tenant`],
//! [`crate::generation`]) below.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quick_cache::OptionsBuilder;
use quick_cache::sync::{Cache as L1Cache, DefaultLifecycle};

use crate::envelope;
use crate::generation::Generations;
use crate::l2::{Invalidation, L2};
use crate::marker::Markers;
use crate::slot::{L1Key, Slot, SlotWeighter, Tags};
use crate::stats::Stats;
use crate::tenant::{Charge, TenantUsage};
use crate::traits::{CacheKey, CacheValue};

pub(crate) type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u64 + Send + Sync>;

#[derive(Clone)]
pub(crate) struct Config<K, V> {
    pub(crate) ttl: Duration,
    pub(crate) l1_ttl: Duration,
    pub(crate) jitter: f64,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) schema: u64,
    pub(crate) compress_above: Option<usize>,
    pub(crate) tenant_cap: Option<TenantCap>,
    pub(crate) weigher: Option<Weigher<K, V>>,
    pub(crate) max_refreshes: usize,
}

/// A tenant's own cap (see [`TenantCap::Each`]).
pub(crate) type CapFn = Arc<dyn Fn(&str) -> Option<u64> + Send + Sync>;

/// How many L1 bytes a tenant may hold.
#[derive(Clone)]
pub(crate) enum TenantCap {
    /// The same for every tenant.
    All(u64),
    /// Each tenant's own (`None`: that tenant has none), asked on every L1
    /// write.
    Each(CapFn),
}

impl TenantCap {
    fn of(&self, tenant: &str) -> Option<u64> {
        match self {
            TenantCap::All(cap) => Some(*cap),
            TenantCap::Each(cap) => cap(tenant),
        }
    }
}

/// A duration in nanoseconds, saturating at `u64::MAX` (~584 years).
pub(crate) fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

type L1<K, V> = L1Cache<
    L1Key<K>,
    Slot<V>,
    SlotWeighter,
    foldhash::fast::RandomState,
    DefaultLifecycle<L1Key<K>, Slot<V>>,
>;

impl<K: CacheKey, V: CacheValue> crate::stats::Observed for Inner<K, V> {
    fn stats(&self) -> &Stats {
        &self.stats
    }

    fn circuit_open(&self) -> bool {
        self.l2.as_ref().is_some_and(|l2| l2.circuit_open())
    }
}

/// The L2s of the deployments tenants are placed on (see
/// [`CacheBuilder::placed`](crate::CacheBuilder::placed)).
#[cfg(feature = "redis")]
pub(crate) struct PlacedL2 {
    pub(crate) router: Arc<cog_core::placement::Router>,
    /// In the router's order.
    pub(crate) l2s: Vec<L2>,
    /// How long after a move the previous deployment is still read.
    pub(crate) window: Duration,
}

pub(crate) struct Inner<K, V> {
    pub(crate) l1: L1<K, V>,
    pub(crate) config: Config<K, V>,
    pub(crate) usage: Arc<TenantUsage>,
    pub(crate) l2: Option<L2>,
    pub(crate) stats: Stats,
    clock: quanta::Clock,
    start: quanta::Instant,
    /// Keys being refreshed in the background (one refresh per key).
    pub(crate) refreshing: Arc<Markers<L1Key<K>>>,
    pub(crate) generations: Generations,
    /// L2 writes of loads, for invalidations that arrive after them.
    pub(crate) recent: crate::recent::RecentWrites<K>,
    /// Whether this instance receives other instances' invalidations (set
    /// once its subscription is active; always for a cache without L2).
    pub(crate) listening: tokio::sync::watch::Sender<bool>,
    /// Other regions' L2s, which every invalidation also reaches.
    #[cfg(feature = "redis")]
    pub(crate) remotes: Vec<Arc<crate::regions::Remote<K>>>,
    /// Invalidations that did not land on this deployment at once, retried
    /// until they do (with an L2).
    #[cfg(feature = "redis")]
    pub(crate) here: Option<Arc<crate::regions::Remote<K>>>,
    /// Tenants' data on the deployments their partitions are placed on.
    #[cfg(feature = "redis")]
    pub(crate) placed: Option<PlacedL2>,
}

/// Starts quanta's upkeep thread once per process: it refreshes a coarse
/// clock every millisecond, so reading the time on a hit is one load. If it
/// cannot start, `recent()` falls back to reading the clock.
fn start_coarse_clock() {
    static UPKEEP: std::sync::OnceLock<Option<quanta::Handle>> = std::sync::OnceLock::new();
    UPKEEP.get_or_init(|| quanta::Upkeep::new(Duration::from_millis(1)).start().ok());
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<K: CacheKey, V: CacheValue> Inner<K, V> {
    /// Invalidations still to reach other regions.
    #[cfg(feature = "redis")]
    pub(crate) fn regions_pending(&self) -> usize {
        self.remotes.iter().map(|r| r.pending()).sum()
    }

    #[cfg(not(feature = "redis"))]
    pub(crate) fn regions_pending(&self) -> usize {
        0
    }

    /// Invalidations still to land: here, and in other regions.
    pub(crate) fn invalidations_pending(&self) -> usize {
        #[cfg(feature = "redis")]
        let here = self.here.as_ref().map_or(0, |h| h.pending());
        #[cfg(not(feature = "redis"))]
        let here = 0;
        here + self.regions_pending()
    }

    /// Delivers `msg` on this deployment: deletes what it names from every
    /// L2 that may hold the tenant's entries, applies it here again (a load
    /// here may have read L2 before the delete), and tells the other
    /// instances. Whether all of it landed; errors are counted.
    pub(crate) async fn deliver_here(&self, msg: &crate::l2::Invalidation<K>) -> bool {
        let mut landed = true;
        for l2 in self.l2s_of(msg.tenant()) {
            if let Err(e) = l2.invalidate(msg).await {
                self.stats.l2_error(&e);
                landed = false;
            }
        }
        if let Some(l2) = &self.l2 {
            self.apply(msg);
            if let Err(e) = l2.publish(msg).await {
                self.stats.l2_error(&e);
                landed = false;
            }
        }
        landed
    }

    /// Queues `msg`, which did not land on this deployment, to be retried
    /// until it does.
    pub(crate) fn retry_here(&self, msg: &crate::l2::Invalidation<K>) {
        #[cfg(feature = "redis")]
        if let Some(here) = &self.here {
            here.send(msg);
        }
        #[cfg(not(feature = "redis"))]
        let _ = msg;
    }

    /// The L2 holding `tenant`'s entries: its partition's deployment when
    /// tenants are placed, the one L2 otherwise.
    pub(crate) fn l2_of(&self, tenant: &str) -> Option<&L2> {
        #[cfg(feature = "redis")]
        if let Some(placed) = &self.placed {
            return Some(&placed.l2s[placed.router.route(tenant).to]);
        }
        let _ = tenant;
        self.l2.as_ref()
    }

    /// The L2 that held `tenant`'s entries before its partition moved, for
    /// the placement's window after the move.
    pub(crate) fn l2_before(&self, tenant: &str) -> Option<&L2> {
        #[cfg(feature = "redis")]
        if let Some(placed) = &self.placed {
            let route = placed.router.route(tenant);
            return route
                .from
                .filter(|_| route.since < placed.window)
                .map(|i| &placed.l2s[i]);
        }
        let _ = tenant;
        None
    }

    /// Every L2 that may hold `tenant`'s entries: where they are, and
    /// shortly after a move where they were (an invalidation clears both,
    /// or the old copy could follow the tenant back).
    pub(crate) fn l2s_of(&self, tenant: &str) -> impl Iterator<Item = &L2> {
        self.l2_of(tenant).into_iter().chain(self.l2_before(tenant))
    }

    /// Queues `msg` for every other region (no-op with none).
    pub(crate) fn fan_out(&self, msg: &crate::l2::Invalidation<K>) {
        #[cfg(feature = "redis")]
        for r in &self.remotes {
            r.send(msg);
        }
        #[cfg(not(feature = "redis"))]
        let _ = msg;
    }

    pub(crate) fn new(config: Config<K, V>, capacity_bytes: u64, l2: Option<L2>) -> Arc<Self> {
        Self::with_remotes(
            config,
            capacity_bytes,
            l2,
            #[cfg(feature = "redis")]
            Vec::new(),
            #[cfg(feature = "redis")]
            None,
        )
    }

    pub(crate) fn with_remotes(
        config: Config<K, V>,
        capacity_bytes: u64,
        l2: Option<L2>,
        #[cfg(feature = "redis")] remotes: Vec<Arc<crate::regions::Remote<K>>>,
        #[cfg(feature = "redis")] placed: Option<PlacedL2>,
    ) -> Arc<Self> {
        let l2_absent = l2.is_none();
        let usage = Arc::new(TenantUsage::default());
        let estimated_items = (capacity_bytes / 512).clamp(16, 10_000_000) as usize;
        let l1 = L1Cache::with_options(
            OptionsBuilder::new()
                .estimated_items_capacity(estimated_items)
                .weight_capacity(capacity_bytes.max(1))
                .build()
                .expect("valid L1 options"),
            SlotWeighter,
            foldhash::fast::RandomState::default(),
            DefaultLifecycle::default(),
        );
        start_coarse_clock();
        let clock = quanta::Clock::new();
        let start = clock.now();
        let inner = Arc::new(Inner {
            l1,
            usage,
            l2,
            stats: Stats::new(),
            clock,
            start,
            refreshing: Markers::new(config.max_refreshes),
            generations: Generations::default(),
            recent: Default::default(),
            listening: tokio::sync::watch::Sender::new(l2_absent),
            #[cfg(feature = "redis")]
            remotes,
            #[cfg(feature = "redis")]
            here: (!l2_absent).then(|| Arc::new(crate::regions::Remote::here())),
            #[cfg(feature = "redis")]
            placed,
            config,
        });
        let observed: Arc<dyn crate::stats::Observed> = inner.clone();
        crate::stats::observe(Arc::downgrade(&observed));
        inner
    }

    /// Nanoseconds on the cache's monotonic clock, to about a millisecond
    /// (a load of a value the upkeep thread refreshes, not a clock read).
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.clock
            .recent()
            .saturating_duration_since(self.start)
            .as_nanos() as u64
            + 1
    }

    pub(crate) fn jittered(&self, ttl: Duration) -> u64 {
        let ns = ttl.as_nanos() as f64;
        let j = self.config.jitter;
        if j <= 0.0 {
            return ns as u64;
        }
        (ns * (1.0 + j * (rand::random::<f64>() * 2.0 - 1.0))).max(0.0) as u64
    }

    /// A fresh slot for a value just loaded (or absence, for `None`).
    pub(crate) fn fresh_slot(
        &self,
        key: &K,
        value: Option<V>,
        encoded_len: Option<usize>,
        tags: &Tags,
    ) -> Slot<V> {
        let now = self.now();
        let ttl = match value {
            Some(_) => self.jittered(self.config.ttl),
            None => self.jittered(self.config.negative_ttl),
        };
        self.slot_until(
            key,
            value,
            now.saturating_add(ttl),
            encoded_len,
            tags.clone(),
        )
    }

    pub(crate) fn slot_until(
        &self,
        key: &K,
        value: Option<V>,
        expires: u64,
        encoded_len: Option<usize>,
        tags: Tags,
    ) -> Slot<V> {
        let weight = self.weigh(key, value.as_ref(), encoded_len);
        Slot {
            fresh_until: expires.min(self.now().saturating_add(nanos(self.config.l1_ttl))),

            expires,
            value,
            weight: weight.min(u64::from(u32::MAX)) as u32,
            tags,
            charge: Charge::NONE,
        }
    }

    pub(crate) fn weigh(&self, key: &K, value: Option<&V>, encoded_len: Option<usize>) -> u64 {
        let overhead = 64 + std::mem::size_of::<V>() as u64;
        match (value, &self.config.weigher, encoded_len) {
            (Some(v), Some(w), _) => w(key, v),
            (_, _, Some(len)) => len as u64 + overhead,
            (Some(v), None, None) => {
                postcard::experimental::serialized_size(v).unwrap_or(0) as u64 + overhead
            }
            (None, _, None) => overhead,
        }
    }

    /// Until when `slot` may be served while revalidating.
    pub(crate) fn stale_until(&self, slot: &Slot<V>) -> u64 {
        slot.expires
            .saturating_add(nanos(self.config.stale_while_revalidate))
    }

    /// Until when `slot` may stand in for a failed load.
    pub(crate) fn error_until(&self, slot: &Slot<V>) -> u64 {
        slot.expires
            .saturating_add(nanos(self.config.stale_if_error))
    }

    /// `slot`, charged to `tenant` if the cache caps tenants, when the
    /// tenant has room for it; `None` (and counted) if it has not. `old` is
    /// the weight of the entry the slot replaces, whose charge goes when
    /// it does. Every tenant's entries are charged once any cap is set, so
    /// a tenant that gets a cap later (a plan change) is held to it at once.
    pub(crate) fn charged(
        &self,
        tenant: &Arc<str>,
        mut slot: Slot<V>,
        old: u64,
    ) -> Option<Slot<V>> {
        if let Some(caps) = &self.config.tenant_cap {
            let weight = u64::from(slot.weight);
            if let Some(cap) = caps.of(tenant)
                && self.usage.get(tenant) + weight > cap.saturating_add(old)
            {
                self.stats.l1_tenant_capped();
                return None;
            }
            slot.charge = self.usage.charge(tenant, weight);
        }
        Some(slot)
    }

    /// Inserts into L1 unless the tenant is over its cap.
    pub(crate) fn put_l1(&self, key: L1Key<K>, slot: Slot<V>) {
        let old = match self.config.tenant_cap {
            Some(_) => self.l1.peek(&key).map_or(0, |s| u64::from(s.weight)),
            None => 0,
        };
        if let Some(slot) = self.charged(&key.tenant, slot, old) {
            self.l1.insert(key, slot);
        }
    }

    /// Builds the deadlines of a slot from an L2 envelope.
    pub(crate) fn slot_read_l2(&self, key: &K, env: envelope::Envelope<V>, len: usize) -> Slot<V> {
        let now_ms = unix_ms();
        let now = self.now();
        let left = env
            .fresh_until_ms
            .saturating_sub(now_ms)
            .saturating_mul(1_000_000);
        let tags = (!env.tags.is_empty()).then(|| {
            env.tags
                .into_iter()
                .map(Arc::from)
                .collect::<Box<[Arc<str>]>>()
        });
        let tags = tags.map(Arc::new);
        self.slot_until(key, env.value, now.saturating_add(left), Some(len), tags)
    }

    /// Writes a slot to L2 (best effort: failures only feed the breaker);
    /// returns the size of its value decoded (see [`envelope::decoded_size`]).
    pub(crate) async fn put_l2(&self, tenant: &str, key: &K, slot: &Slot<V>) -> Option<usize> {
        let l2 = self.l2_of(tenant)?;
        let now = self.now();
        let now_ms = unix_ms();
        let ms = |until: u64| now_ms.saturating_add(until.saturating_sub(now) / 1_000_000);
        let bytes = match envelope::encode(
            slot.value.as_ref(),
            slot.tags.as_deref().map_or(&[], |t| &t[..]),
            self.config.schema,
            ms(slot.expires),
            ms(self.stale_until(slot).max(self.error_until(slot))),
            self.config.compress_above,
        ) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(target: "cog_cache", error = %e, "value not serializable; kept in L1 only");
                return None;
            }
        };
        let ttl_ms = (self
            .stale_until(slot)
            .max(self.error_until(slot))
            .saturating_sub(now)
            / 1_000_000)
            .max(1);
        let len = envelope::decoded_size(&bytes);
        let data_key = l2.data_key(tenant, key)?;
        // Tags first: a value whose tags are not all recorded stays out of
        // L2 (in L1 only), or `invalidate_tag` could not find it there and
        // every instance would read it back after the tag's invalidation.
        // (As after any write L2 refused, an older value under its key —
        // recorded under its tags — may stay.)
        for tag in slot.tags.iter().flat_map(|t| t.iter()) {
            if let Err(e) = l2.add_to_tag(tenant, tag, &data_key, ttl_ms).await {
                self.stats.l2_error(&e);
                return Some(len);
            }
        }
        if let Err(e) = l2.set(&data_key, bytes, ttl_ms).await {
            self.stats.l2_error(&e);
        }
        Some(len)
    }

    /// Applies an invalidation to this instance's L1.
    /// Loads in flight for the keys it names write nothing back.
    pub(crate) fn apply(&self, msg: &Invalidation<K>) {
        match msg {
            Invalidation::Key { tenant, key } => {
                let k = L1Key {
                    tenant: Arc::from(tenant.as_str()),
                    key: key.clone(),
                };
                self.generations.bump_key(&k);
                self.l1.remove(&k);
            }
            Invalidation::Tenant(tenant) => {
                self.generations.bump_all();
                self.l1.retain(|k, _| *k.tenant != **tenant);
            }
            Invalidation::Tag { tenant, tag } => {
                self.generations.bump_all();
                self.l1
                    .retain(|k, s| !(*k.tenant == **tenant && s.has_tag(tag)));
            }
        }
    }

    /// Drops every L1 entry of `tenants`, and what loads in flight would
    /// write back.
    pub(crate) fn forget_l1(&self, tenants: &std::collections::HashSet<&str>) {
        self.generations.bump_all();
        self.l1.retain(|k, _| !tenants.contains(&*k.tenant));
    }

    /// Drops every L1 entry, and what loads in flight would write back:
    /// for when invalidations may have been missed.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn flush(&self) {
        self.generations.bump_all();
        self.l1.clear();
    }
}
