//! The tiered cache: L1 in process, optional L2 in Redis.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quick_cache::sync::{Cache as L1Cache, DefaultLifecycle, PlaceholderGuard};
use quick_cache::{Equivalent, OptionsBuilder, Weighter};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope;
use crate::generation::{Generations, Seen};
use crate::l2::{Invalidation, L2};
use crate::marker::Markers;
use crate::stats::{Stats, StatsSnapshot};
use crate::tenant::{Charge, TenantUsage};

/// What a cache key must be: hashable for L1, serializable for its Redis
/// key (the serialization, escaped, names it; keys whose serialization
/// fails stay in L1) and so invalidations can name it to other instances.
pub trait CacheKey:
    Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

impl<T> CacheKey for T where
    T: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

/// What a cached value must be: cloned out of L1, serialized into L2.
pub trait CacheValue: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T> CacheValue for T where T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}

/// Why a read-through could not produce a value.
#[derive(Debug, thiserror::Error)]
// A word-sized tag: with the default byte-sized one, a
// `Result<String, CacheError<()>>` is copied byte-wise around the niche,
// and the reads that follow stall (an L1 hit through `get_or_load` took
// ~20 % longer).
#[repr(u64)]
pub enum CacheError<E> {
    /// The loader failed and no stale value was allowed to stand in.
    #[error("loader failed: {0}")]
    Load(E),
    /// The loader panicked or its task was cancelled.
    #[error("loader did not complete")]
    LoaderAborted,
    /// The key holds a cached absence (written by
    /// [`get_or_load_optional`](TieredCache::get_or_load_optional)); use
    /// that method for keys that may be absent.
    #[error("the key is cached as absent")]
    Absent,
}

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
    pub(crate) tenant_cap: Option<u64>,
    pub(crate) weigher: Option<Weigher<K, V>>,
    pub(crate) max_refreshes: usize,
}

/// A duration in nanoseconds, saturating at `u64::MAX` (~584 years).
pub(crate) fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

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
struct L1Ref<'a, K> {
    tenant: &'a str,
    key: &'a K,
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

type BoxedLoad<'a, T, E> = Pin<Box<dyn Future<Output = Result<T, CacheError<E>>> + Send + 'a>>;

/// The future of [`TieredCache::get_or_load`] and
/// [`TieredCache::get_or_load_optional`]: an L1 hit is answered before the
/// first poll and only handed over; a miss is the boxed read-through.
///
/// A plain enum rather than an `async` block: the hit then costs a move of
/// the value, not a generator's state machine (measured: ~25 % of a hit).
enum GetOrLoad<'a, T, E> {
    Hit(Option<Result<T, CacheError<E>>>),
    Miss(BoxedLoad<'a, T, E>),
}

// Never pinned into: the value is moved out of `Hit`, and `Miss` is a box.
impl<T, E> Unpin for GetOrLoad<'_, T, E> {}

impl<T, E> Future for GetOrLoad<'_, T, E> {
    type Output = Result<T, CacheError<E>>;

    #[inline]
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut *self {
            GetOrLoad::Hit(found) => {
                std::task::Poll::Ready(found.take().expect("polled after completion"))
            }
            GetOrLoad::Miss(load) => load.as_mut().poll(cx),
        }
    }
}

/// The placeholder a single loader holds for a missing key.
type Guard<'a, K, V> = PlaceholderGuard<
    'a,
    L1Key<K>,
    Slot<V>,
    SlotWeighter,
    foldhash::fast::RandomState,
    DefaultLifecycle<L1Key<K>, Slot<V>>,
>;

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

/// A two-tier read-through cache: L1 in process (quick_cache, bounded by
/// weight in bytes), optional L2 in Redis shared by every instance.
///
/// Cheap to clone; clones share everything. See the [crate docs](crate)
/// for the behaviour in detail.
pub struct TieredCache<K, V> {
    pub(crate) inner: Arc<Inner<K, V>>,
    default_tenant: Arc<str>,
    tags: Tags,
}

pub(crate) struct Inner<K, V> {
    pub(crate) l1: L1<K, V>,
    pub(crate) config: Config<K, V>,
    pub(crate) usage: Arc<TenantUsage>,
    pub(crate) l2: Option<L2>,
    pub(crate) stats: Stats,
    clock: quanta::Clock,
    start: quanta::Instant,
    refreshing: Arc<Markers<L1Key<K>>>,
    pub(crate) generations: Generations,
    /// L2 writes of loads, for invalidations that arrive after them.
    pub(crate) recent: crate::recent::RecentWrites<K>,
    /// Whether this instance receives other instances' invalidations (set
    /// once its subscription is active; always for a cache without L2).
    pub(crate) listening: tokio::sync::watch::Sender<bool>,
}

impl<K, V> Clone for TieredCache<K, V> {
    fn clone(&self) -> Self {
        TieredCache {
            inner: self.inner.clone(),
            default_tenant: self.default_tenant.clone(),
            tags: self.tags.clone(),
        }
    }
}

impl<K: CacheKey, V: CacheValue> fmt::Debug for TieredCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredCache")
            .field("l1_entries", &self.inner.l1.len())
            .field("l1_weight", &self.inner.l1.weight())
            .field("l2", &self.inner.l2.is_some())
            .finish_non_exhaustive()
    }
}

/// A view of a [`TieredCache`] whose keys live in one tenant's namespace:
/// in L1, in Redis, and for invalidation. Cheap to create and clone.
pub struct TenantCache<K, V> {
    cache: TieredCache<K, V>,
}

impl<K, V> Clone for TenantCache<K, V> {
    fn clone(&self) -> Self {
        TenantCache {
            cache: self.cache.clone(),
        }
    }
}

impl<K, V> fmt::Debug for TenantCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantCache")
            .field("tenant", &self.cache.default_tenant)
            .finish_non_exhaustive()
    }
}

impl<K, V> std::ops::Deref for TenantCache<K, V> {
    type Target = TieredCache<K, V>;
    fn deref(&self) -> &TieredCache<K, V> {
        &self.cache
    }
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
    pub(crate) fn new(config: Config<K, V>, capacity_bytes: u64, l2: Option<L2>) -> Arc<Self> {
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

    fn jittered(&self, ttl: Duration) -> u64 {
        let ns = ttl.as_nanos() as f64;
        let j = self.config.jitter;
        if j <= 0.0 {
            return ns as u64;
        }
        (ns * (1.0 + j * (rand::random::<f64>() * 2.0 - 1.0))).max(0.0) as u64
    }

    /// A fresh slot for a value just loaded (or absence, for `None`).
    fn fresh_slot(
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

    fn slot_until(
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

    fn weigh(&self, key: &K, value: Option<&V>, encoded_len: Option<usize>) -> u64 {
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

    /// `slot`, charged to `tenant` if the cache caps tenants and the
    /// tenant has room for it; `None` (and counted) if it has not. `old` is
    /// the weight of the entry the slot replaces, whose charge goes when
    /// it does.
    fn charged(&self, tenant: &Arc<str>, mut slot: Slot<V>, old: u64) -> Option<Slot<V>> {
        if let Some(cap) = self.config.tenant_cap {
            let weight = u64::from(slot.weight);
            if self.usage.get(tenant) + weight > cap.saturating_add(old) {
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
    fn slot_read_l2(&self, key: &K, env: envelope::Envelope<V>, len: usize) -> Slot<V> {
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

    /// Writes a slot to L2 (best effort: failures only feed the breaker).
    async fn put_l2(&self, tenant: &str, key: &K, slot: &Slot<V>) -> Option<usize> {
        let l2 = self.l2.as_ref()?;
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
        let len = bytes.len();
        let data_key = l2.data_key(tenant, key)?;
        if let Err(e) = l2.set(&data_key, bytes, ttl_ms).await {
            self.stats.l2_error(&e);
            return Some(len);
        }
        for tag in slot.tags.iter().flat_map(|t| t.iter()) {
            if let Err(e) = l2.add_to_tag(tenant, tag, &data_key, ttl_ms).await {
                self.stats.l2_error(&e);
            }
        }
        Some(len)
    }
}

impl<K: CacheKey, V: CacheValue> TieredCache<K, V> {
    pub(crate) fn from_inner(inner: Arc<Inner<K, V>>) -> Self {
        TieredCache {
            inner,
            default_tenant: Arc::from(""),
            tags: None,
        }
    }

    /// A builder with the defaults: 64 MiB L1, 5 min TTL with 10 % jitter,
    /// no stale serving, 30 s negative TTL, L1 only.
    pub fn builder() -> crate::CacheBuilder<K, V> {
        crate::CacheBuilder::new()
    }

    /// The view of this cache scoped to `tenant`.
    pub fn tenant(&self, tenant: &str) -> TenantCache<K, V> {
        TenantCache {
            cache: TieredCache {
                inner: self.inner.clone(),
                default_tenant: Arc::from(tenant),
                tags: self.tags.clone(),
            },
        }
    }

    /// This view, with every value it writes (loads and inserts) tagged
    /// with `tags`, for [`invalidate_tag`](Self::invalidate_tag).
    pub fn tagged<T: Into<Arc<str>>>(
        &self,
        tags: impl IntoIterator<Item = T>,
    ) -> TieredCache<K, V> {
        let tags: Box<[Arc<str>]> = tags.into_iter().map(Into::into).collect();
        TieredCache {
            inner: self.inner.clone(),
            default_tenant: self.default_tenant.clone(),
            tags: (!tags.is_empty()).then(|| Arc::new(tags)),
        }
    }

    /// Removes every entry of this view's tenant tagged `tag`: here, in L2,
    /// and — through Redis pub/sub — in every other instance's L1.
    pub async fn invalidate_tag(&self, tag: &str) {
        let inner = &self.inner;
        let tenant = self.tenant_str().to_string();
        let msg = Invalidation::<K>::Tag {
            tenant: tenant.clone(),
            tag: tag.to_owned(),
        };
        crate::l2::apply::<K, V>(inner, &msg);
        if let Some(l2) = &inner.l2 {
            if let Err(e) = l2.delete_tag(&tenant, tag).await {
                inner.stats.l2_error(&e);
            }
            // Again: a load here may have read L2 before the delete.
            crate::l2::apply::<K, V>(inner, &msg);
            if let Err(e) = l2.publish(&msg).await {
                inner.stats.l2_error(&e);
            }
        }
    }

    /// Resolves once this instance receives other instances' invalidations
    /// (its Redis subscription is active) — at once for a cache without
    /// L2. Entries read before it may miss an invalidation sent meanwhile;
    /// await it where that matters (and in tests, instead of sleeping).
    pub async fn invalidations_ready(&self) {
        let mut rx = self.inner.listening.subscribe();
        // The sender lives as long as the cache: this cannot fail.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// Counters since the cache was built.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot(self.l2_circuit_open())
    }

    /// Whether the L2 circuit is open (Redis failing; L2 skipped).
    pub fn l2_circuit_open(&self) -> bool {
        self.inner.l2.as_ref().is_some_and(|l2| l2.circuit_open())
    }

    /// The Redis key holding `key` in L2 (for this view's tenant), if the
    /// cache has an L2.
    pub fn l2_key(&self, key: &K) -> Option<String> {
        self.inner
            .l2
            .as_ref()
            .and_then(|l2| l2.data_key(self.tenant_str(), key))
    }

    fn tenant_str(&self) -> &Arc<str> {
        &self.default_tenant
    }

    /// The value for `key`: from L1, else L2, else `loader` — which runs
    /// once per instance however many callers miss at once (and once per
    /// cluster with the Redis lease). See the crate docs for stale serving.
    ///
    /// # Errors
    /// The loader's error, when no stale value may stand in for it.
    pub fn get_or_load<'a, F, Fut, E>(
        &'a self,
        key: &'a K,
        loader: F,
    ) -> impl Future<Output = Result<V, CacheError<E>>> + Send + 'a
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + 'static,
    {
        // A hit is answered here, synchronously; the future only hands it
        // over. The miss path is built and boxed out of line, only when
        // taken (its future is large).
        match self.l1_fresh(key) {
            Some(found) => GetOrLoad::Hit(Some(found.ok_or(CacheError::Absent))),
            None => GetOrLoad::Miss(self.load_boxed(key, loader)),
        }
    }

    #[cold]
    #[inline(never)]
    fn load_boxed<'a, F, Fut, E>(&'a self, key: &'a K, loader: F) -> BoxedLoad<'a, V, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + 'static,
    {
        Box::pin(async move {
            let load = move || async move { loader().await.map(Some) };
            // `None` only comes from a negative entry that
            // `get_or_load_optional` wrote for the same key.
            self.traced_read_through(key, load)
                .await?
                .ok_or(CacheError::Absent)
        })
    }

    /// Like [`get_or_load`](Self::get_or_load), for a loader that may find
    /// nothing: `Ok(None)` is cached too (negative caching, with its own
    /// TTL).
    ///
    /// # Errors
    /// The loader's error, when no stale value may stand in for it.
    pub fn get_or_load_optional<'a, F, Fut, E>(
        &'a self,
        key: &'a K,
        loader: F,
    ) -> impl Future<Output = Result<Option<V>, CacheError<E>>> + Send + 'a
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Send + 'static,
    {
        match self.l1_fresh(key) {
            Some(found) => GetOrLoad::Hit(Some(Ok(found))),
            None => GetOrLoad::Miss(self.load_optional_boxed(key, loader)),
        }
    }

    #[cold]
    #[inline(never)]
    fn load_optional_boxed<'a, F, Fut, E>(
        &'a self,
        key: &'a K,
        loader: F,
    ) -> BoxedLoad<'a, Option<V>, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Send + 'static,
    {
        Box::pin(self.traced_read_through(key, loader))
    }

    /// [`read_through`](Self::read_through) in a `cache.lookup` span (when
    /// the request is sampled): an L1 miss, with the L2 calls and the
    /// loader under it.
    async fn traced_read_through<F, Fut, E>(
        &self,
        key: &K,
        loader: F,
    ) -> Result<Option<V>, CacheError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Send + 'static,
    {
        let span = cog_core::telemetry::Child::internal("cog-cache", "cache.lookup");
        span.set(|| opentelemetry::KeyValue::new("cog.tenant", self.tenant_str().to_string()));
        let result = span.wrap(self.read_through(key, loader)).await;
        if result.is_err() {
            span.fail("load", || "no value: the loader failed".into());
        }
        result
    }

    /// A fresh L1 entry for `key`, found without allocating or awaiting.
    #[inline]
    fn l1_fresh(&self, key: &K) -> Option<Option<V>> {
        let inner = &self.inner;
        let slot = inner.l1.get(&L1Ref {
            tenant: self.tenant_str(),
            key,
        })?;
        if inner.now() < slot.fresh_until {
            inner.stats.l1_hit();
            Some(slot.value)
        } else {
            None
        }
    }

    /// The value for `key` if it is fresh in L1 — synchronous, no L2, no
    /// loading. `None` also for a cached absence.
    pub fn get_fresh(&self, key: &K) -> Option<V> {
        self.l1_fresh(key).flatten()
    }

    /// The cached value for `key` from L1, else L2, without loading.
    pub async fn get(&self, key: &K) -> Option<V> {
        let inner = &self.inner;
        let tenant = self.tenant_str();
        let now = inner.now();
        if let Some(slot) = inner.l1.get(&L1Ref { tenant, key })
            && now < slot.fresh_until
        {
            inner.stats.l1_hit();
            return slot.value;
        }
        let seen = inner.generations.seen(self.l1_ref(key));
        // An L1 hit takes well under a microsecond, less than a span would
        // cost: only a lookup that goes to Redis gets one.
        let span = match inner.l2 {
            Some(_) => cog_core::telemetry::Child::internal("cog-cache", "cache.lookup"),
            None => cog_core::telemetry::Child::default(),
        };
        let found = span.wrap(self.read_l2(key)).await;
        span.set(|| opentelemetry::KeyValue::new("cog.cache.found", found.is_some()));
        span.end();
        let (slot, fresh) = found?;
        if !fresh {
            return None;
        }
        if !inner.generations.changed(seen) {
            inner.put_l1(self.l1_key(key), slot.clone());
        }
        slot.value
    }

    /// Stores `value` under `key` in L1 and L2.
    pub async fn insert(&self, key: K, value: V) {
        let inner = &self.inner;
        let slot = inner.fresh_slot(&key, Some(value), None, &self.tags);
        let tenant = self.tenant_str().clone();
        inner.put_l2(&tenant, &key, &slot).await;
        inner.put_l1(L1Key { tenant, key }, slot);
    }

    /// Stores `value` under `key`, fresh for exactly `ttl` (no jitter).
    pub async fn insert_with_ttl(&self, key: K, value: V, ttl: Duration) {
        let inner = &self.inner;
        let expires = inner.now().saturating_add(nanos(ttl));
        let slot = inner.slot_until(&key, Some(value), expires, None, self.tags.clone());
        let tenant = self.tenant_str().clone();
        inner.put_l2(&tenant, &key, &slot).await;
        inner.put_l1(L1Key { tenant, key }, slot);
    }

    /// The tenant this view is scoped to (`""` for the shared namespace).
    pub fn tenant_id(&self) -> &str {
        &self.default_tenant
    }

    /// Removes `key` here, from L2, and — through Redis pub/sub — from
    /// every other instance's L1.
    pub async fn invalidate(&self, key: &K) {
        let inner = &self.inner;
        let msg = Invalidation::Key {
            tenant: self.tenant_str().to_string(),
            key: key.clone(),
        };
        crate::l2::apply::<K, V>(inner, &msg);
        if let Some(l2) = &inner.l2 {
            if let Some(data_key) = l2.data_key(self.tenant_str(), key)
                && let Err(e) = l2.del(&data_key).await
            {
                inner.stats.l2_error(&e);
            }
            // Again: a load here may have read L2 before the delete.
            crate::l2::apply::<K, V>(inner, &msg);
            if let Err(e) = l2.publish(&msg).await {
                inner.stats.l2_error(&e);
            }
        }
    }

    /// Removes every entry of this view's tenant: here, in L2 (a `SCAN`
    /// of the tenant's keys, on every node of a cluster), and — through
    /// Redis pub/sub — in every other instance's L1.
    pub async fn invalidate_tenant(&self) {
        let inner = &self.inner;
        let tenant = self.tenant_str().to_string();
        let msg = Invalidation::<K>::Tenant(tenant.clone());
        crate::l2::apply::<K, V>(inner, &msg);
        if let Some(l2) = &inner.l2 {
            if let Err(e) = l2.delete_tenant(&tenant).await {
                inner.stats.l2_error(&e);
            }
            // Again: a load here may have read L2 before the delete.
            crate::l2::apply::<K, V>(inner, &msg);
            if let Err(e) = l2.publish(&msg).await {
                inner.stats.l2_error(&e);
            }
        }
    }

    fn l1_ref<'k>(&'k self, key: &'k K) -> L1Ref<'k, K> {
        L1Ref {
            tenant: self.tenant_str(),
            key,
        }
    }

    fn l1_key(&self, key: &K) -> L1Key<K> {
        L1Key {
            tenant: self.tenant_str().clone(),
            key: key.clone(),
        }
    }

    /// Reads `key` from L2 if it is healthy; corrupt or foreign bytes are a
    /// miss (and counted). Returns the slot and whether it is fresh.
    async fn read_l2(&self, key: &K) -> Option<(Slot<V>, bool)> {
        let inner = &self.inner;
        let l2 = inner.l2.as_ref()?;
        let data_key = l2.data_key(self.tenant_str(), key)?;
        let bytes = match l2.get(&data_key).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                inner.stats.l2_miss();
                return None;
            }
            Err(e) => {
                inner.stats.l2_error(&e);
                return None;
            }
        };
        match envelope::decode::<V>(&bytes, inner.config.schema) {
            Ok(env) => {
                let fresh = unix_ms() < env.fresh_until_ms;
                let slot = inner.slot_read_l2(key, env, bytes.len());
                if fresh {
                    inner.stats.l2_hit();
                }
                Some((slot, fresh))
            }
            Err(e) => {
                tracing::debug!(target: "cog_cache", error = %e, "unreadable value in L2, treated as a miss");
                inner.stats.l2_corrupt();
                None
            }
        }
    }

    async fn read_through<F, Fut, E>(&self, key: &K, loader: F) -> Result<Option<V>, CacheError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Send + 'static,
    {
        let inner = &self.inner;
        let tenant = self.tenant_str();
        let now = inner.now();
        // Fast path: a fresh L1 entry, found without allocating.
        let stale = match inner.l1.get(&L1Ref { tenant, key }) {
            Some(slot) if now < slot.fresh_until => {
                inner.stats.l1_hit();
                return Ok(slot.value);
            }
            // Past its L1 TTL but not its own: L2 may know better.
            Some(slot) if now >= slot.expires && now < inner.stale_until(&slot) => {
                // Stale while revalidate: answer now, refresh once behind.
                inner.stats.stale_served();
                self.spawn_refresh(key, loader);
                return Ok(slot.value);
            }
            Some(slot) => {
                let owned = self.l1_key(key);
                inner.l1.remove_if(&owned, |s| s.fresh_until <= now);
                Some(slot)
            }
            None => None,
        };
        inner.stats.l1_miss();
        let owned = self.l1_key(key);
        match inner.l1.get_value_or_guard_async(&owned).await {
            // Another caller loaded it while we waited.
            Ok(slot) => Ok(slot.value),
            Err(guard) => self.fill(key, guard, stale, loader).await,
        }
    }

    /// Runs as the single loader for `key` on this instance; fills the
    /// guard with whatever it gets.
    async fn fill<F, Fut, E>(
        &self,
        key: &K,
        guard: Guard<'_, K, V>,
        stale: Option<Slot<V>>,
        loader: F,
    ) -> Result<Option<V>, CacheError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Send + 'static,
    {
        let seen = self.inner.generations.seen(self.l1_ref(key));
        let (loaded, l2_stale) = self.load_once(key, seen, loader).await;
        match loaded {
            Ok(slot) => {
                let value = slot.value.clone();
                self.finish(guard, slot, seen);
                Ok(value)
            }
            Err(e) => self.serve_stale(guard, stale.or(l2_stale), e, seen),
        }
    }

    /// L2, then the Redis lease, then `loader`: a fresh slot for `key`
    /// (written to L2 if it was loaded and `key` was not invalidated since
    /// `seen`), or why there is none — with any stale L2 value found on the
    /// way.
    async fn load_once<F, Fut, E>(
        &self,
        key: &K,
        seen: Seen,
        loader: F,
    ) -> (Result<Slot<V>, CacheError<E>>, Option<Slot<V>>)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Send + 'static,
    {
        let inner = &self.inner;
        let tenant = self.tenant_str().clone();
        let stale = match self.read_l2(key).await {
            Some((slot, true)) => return (Ok(slot), None),
            Some((slot, false)) => Some(slot),
            None => None,
        };
        // Once per cluster: whoever holds the lease loads; the others wait
        // for its value to appear in L2.
        let lease = match &inner.l2 {
            Some(l2) => l2.lease(&tenant, key).await,
            None => None,
        };
        if let Some(crate::l2::LeaseOutcome::Waited) = lease
            && let Some((slot, true)) = self.read_l2(key).await
        {
            return (Ok(slot), stale);
        }
        // A task of its own: a panicking loader is an error, not a panic
        // of the caller (nor of a background refresh). Spans it opens stay
        // in the caller's trace.
        let result = tokio::spawn(cog_core::telemetry::carry(loader())).await;
        let loaded = match result {
            Ok(Ok(value)) => {
                inner.stats.load();
                let slot = inner.fresh_slot(key, value, None, &self.tags);
                Ok(self.put_l2_unless_invalidated(key, slot, seen).await)
            }
            Ok(Err(e)) => {
                inner.stats.load_error();
                Err(CacheError::Load(e))
            }
            Err(_) => {
                inner.stats.load_error();
                Err(CacheError::LoaderAborted)
            }
        };
        if let (Some(crate::l2::LeaseOutcome::Held(token)), Some(l2)) = (lease, &inner.l2) {
            l2.release(&tenant, key, token).await;
        }
        (loaded, stale)
    }

    /// Writes a just-loaded slot to L2 unless `key` was invalidated since
    /// `seen` (and takes it out again if that happened during the write);
    /// returns it weighed by its encoded size.
    async fn put_l2_unless_invalidated(&self, key: &K, slot: Slot<V>, seen: Seen) -> Slot<V> {
        let inner = &self.inner;
        if inner.generations.changed(seen) {
            return slot;
        }
        let encoded = inner.put_l2(self.tenant_str(), key, &slot).await;
        if let (Some(_), Some(l2)) = (encoded, &inner.l2)
            && let Some(data_key) = l2.data_key(self.tenant_str(), key)
        {
            if inner.generations.changed(seen) {
                if let Err(e) = l2.del(&data_key).await {
                    inner.stats.l2_error(&e);
                }
            } else {
                inner
                    .recent
                    .record(self.tenant_str(), key.clone(), &slot.tags, data_key);
            }
        }
        match encoded {
            Some(len) if inner.config.weigher.is_none() => Slot {
                weight: inner
                    .weigh(key, slot.value.as_ref(), Some(len))
                    .min(u64::from(u32::MAX)) as u32,
                ..slot
            },
            _ => slot,
        }
    }

    /// Fills the guard with `slot`, unless the key was invalidated since
    /// `seen` or its tenant has no room. Otherwise dropping the guard
    /// wakes the waiters; they load in turn.
    fn finish(&self, guard: Guard<'_, K, V>, slot: Slot<V>, seen: Seen) {
        let inner = &self.inner;
        if inner.generations.changed(seen) {
            return;
        }
        if let Some(slot) = inner.charged(self.tenant_str(), slot, 0) {
            let _ = guard.insert(slot);
        }
    }

    /// Stale if error: a failed load answers with the last value if it is
    /// within the stale-if-error window.
    fn serve_stale<E>(
        &self,
        guard: Guard<'_, K, V>,
        stale: Option<Slot<V>>,
        err: CacheError<E>,
        seen: Seen,
    ) -> Result<Option<V>, CacheError<E>> {
        let inner = &self.inner;
        let now = inner.now();
        match stale {
            Some(slot) if now < inner.error_until(&slot) => {
                inner.stats.stale_served();
                let value = slot.value.clone();
                // Waiters get the stale value too rather than each retrying.
                self.finish(guard, slot, seen);
                Ok(value)
            }
            _ => Err(err),
        }
    }

    /// Refreshes `key` in the background, once however many callers see it
    /// stale (and once per cluster with the lease). At most
    /// [`max_background_refreshes`](crate::CacheBuilder::max_background_refreshes)
    /// run at once; past that the stale value is served without one.
    fn spawn_refresh<F, Fut, E>(&self, key: &K, loader: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Send + 'static,
    {
        // Released however the refresh ends, panics included.
        let Some(mark) = self.inner.refreshing.mark(self.l1_key(key)) else {
            return;
        };
        let this = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let _mark = mark;
            let inner = &this.inner;
            let seen = inner.generations.seen(this.l1_ref(&key));
            if let (Ok(slot), _) = this.load_once(&key, seen, loader).await
                && !inner.generations.changed(seen)
            {
                inner.put_l1(this.l1_key(&key), slot);
            }
        });
    }
}
