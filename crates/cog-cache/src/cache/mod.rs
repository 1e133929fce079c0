//! The handles of a cache: [`TieredCache`] and its per-tenant view
//! [`TenantCache`] — lookups (the L1 hit path), inserts, invalidation. The
//! read-through engine behind a miss is in `read_through`.

mod read_through;

use std::future::Future;
use std::pin::Pin;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use self::read_through::BoxedLoad;
use crate::envelope;
use crate::error::CacheError;
use crate::inner::{Inner, nanos, unix_ms};
use crate::l2::Invalidation;
use crate::slot::{L1Key, L1Ref, Slot, Tags};
use crate::stats::StatsSnapshot;
use crate::traits::{CacheKey, CacheValue};

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
        self.invalidate_everywhere(Invalidation::Tag {
            tenant: self.tenant_str().to_string(),
            tag: tag.to_owned(),
        })
        .await;
    }

    /// Resolves once this instance receives other instances' invalidations
    /// (Redis has confirmed its subscription) — at once for a cache without
    /// L2. Entries read before it may miss an invalidation sent meanwhile;
    /// await it where that matters (and in tests, instead of sleeping).
    /// While Redis refuses the subscription (an ACL user without the
    /// channel) it does not resolve; once a later attempt succeeds, L1 is
    /// flushed first.
    pub async fn invalidations_ready(&self) {
        let mut rx = self.inner.listening.subscribe();
        // The sender lives as long as the cache: this cannot fail.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// Invalidations still to reach other regions (see
    /// [`CacheBuilder::region`](crate::CacheBuilder::region)).
    pub fn regions_pending(&self) -> usize {
        self.inner.regions_pending()
    }

    /// Invalidations still to land anywhere: on this deployment's L2s and
    /// channel (those Redis refused when they were made, retried every
    /// `redis_retry_interval`), and in other regions.
    pub fn invalidations_pending(&self) -> usize {
        self.inner.invalidations_pending()
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
            .l2_of(self.tenant_str())
            .and_then(|l2| l2.data_key(self.tenant_str(), key))
    }

    fn tenant_str(&self) -> &Arc<str> {
        &self.default_tenant
    }

    /// A fresh L1 entry for `key` of `tenant`, found without allocating or
    /// awaiting.
    #[inline]
    fn l1_fresh(&self, tenant: &str, key: &K) -> Option<Option<V>> {
        let inner = &self.inner;
        let slot = inner.l1.get(&L1Ref { tenant, key })?;
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
        self.get_fresh_in(self.tenant_str(), key)
    }

    /// As `self.tenant(tenant).get_fresh(key)`, without making the view
    /// (a shared count and an allocation): for a hit path that only
    /// needs a view when it misses.
    pub(crate) fn get_fresh_in(&self, tenant: &str, key: &K) -> Option<V> {
        let found = self.l1_fresh(tenant, key);
        if found.is_none() {
            self.inner.stats.l1_miss();
        }
        found.flatten()
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
        inner.stats.l1_miss();
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
        self.invalidate_everywhere(Invalidation::Key {
            tenant: self.tenant_str().to_string(),
            key: key.clone(),
        })
        .await;
    }

    /// Removes every entry of this view's tenant: here, in L2 (a `SCAN`
    /// of the tenant's keys, on every node of a cluster), and — through
    /// Redis pub/sub — in every other instance's L1.
    pub async fn invalidate_tenant(&self) {
        self.invalidate_everywhere(Invalidation::Tenant(self.tenant_str().to_string()))
            .await;
    }

    /// Removes every entry of each of `tenants` from this instance's L1
    /// and from L2 — one walk of each L2's keys for them all, where
    /// [`invalidate_tenant`](Self::invalidate_tenant) walks once per
    /// tenant — without telling other instances or regions. For a hook
    /// that every instance runs, each for its own L1, such as
    /// `cog_control::Directory::on_removed` (a deleted tenant's entries).
    /// What Redis refuses is queued and retried, tenant by tenant, as
    /// `invalidate_tenant` (then telling the other instances too).
    pub async fn forget_tenants<T: AsRef<str>>(&self, tenants: impl IntoIterator<Item = T>) {
        let tenants: Vec<T> = tenants.into_iter().collect();
        let ids: std::collections::HashSet<&str> = tenants.iter().map(AsRef::as_ref).collect();
        if ids.is_empty() {
            return;
        }
        let inner = &self.inner;
        inner.forget_l1(&ids);
        // Each L2 once, with every tenant it may hold.
        let mut groups: Vec<(&crate::l2::L2, Vec<&str>)> = Vec::new();
        for &tenant in &ids {
            for l2 in inner.l2s_of(tenant) {
                match groups.iter_mut().find(|(g, _)| std::ptr::eq(*g, l2)) {
                    Some((_, theirs)) => theirs.push(tenant),
                    None => groups.push((l2, vec![tenant])),
                }
            }
        }
        for (l2, theirs) in groups {
            if let Err(e) = l2.delete_tenants(&theirs).await {
                inner.stats.l2_error(&e);
                for tenant in theirs {
                    inner.retry_here(&Invalidation::Tenant(tenant.to_owned()));
                }
            }
        }
        // A load here may have read L2 before the delete.
        inner.forget_l1(&ids);
    }

    /// Applies `msg` here, on this deployment (its L2s and the other
    /// instances) and in the other regions. What Redis refused — an error,
    /// a timeout, the circuit open — is not lost: the whole invalidation is
    /// queued and retried until it lands.
    async fn invalidate_everywhere(&self, msg: Invalidation<K>) {
        let inner = &self.inner;
        inner.apply(&msg);
        if !inner.deliver_here(&msg).await {
            inner.retry_here(&msg);
        }
        inner.fan_out(&msg);
    }

    /// After a miss on the tenant's deployment shortly after its
    /// partition moved: the entry from the deployment it moved from, with
    /// the generation seen before reading it.
    async fn read_before_move(
        &self,
        key: &K,
        data_key: &str,
    ) -> Option<(Vec<u8>, crate::generation::Seen)> {
        let inner = &self.inner;
        let before = inner.l2_before(self.tenant_str())?;
        let seen = inner.generations.seen(self.l1_ref(key));
        match before.get(data_key).await {
            Ok(b) => b.map(|b| (b, seen)),
            Err(e) => {
                inner.stats.l2_error(&e);
                None
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
        let tenant = self.tenant_str();
        let l2 = inner.l2_of(tenant)?;
        let data_key = l2.data_key(tenant, key)?;
        let mut adopted = None;
        let bytes = match l2.get(&data_key).await {
            Ok(Some(b)) => b,
            Ok(None) => match self.read_before_move(key, &data_key).await {
                Some((b, seen)) => {
                    adopted = Some(seen);
                    b
                }
                None => {
                    inner.stats.l2_miss();
                    return None;
                }
            },
            Err(e) => {
                inner.stats.l2_error(&e);
                return None;
            }
        };
        match envelope::decode::<V>(&bytes, inner.config.schema) {
            Ok(env) => {
                let fresh = unix_ms() < env.fresh_until_ms;
                let mut slot = inner.slot_read_l2(key, env, envelope::decoded_size(&bytes));
                if let Some(seen) = adopted {
                    // The entry follows its tenant to the new deployment.
                    slot = self.put_l2_unless_invalidated(key, slot, seen).await;
                }
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
}

// The hit path — `get_or_load`, its future and `l1_fresh` — lives here, in
// one module, and the miss path in `read_through`: rustc partitions
// generic code into codegen units by module, and a hit split across units
// measured ~40 % slower (`cache_l1_hit/cog`, 65 → 90 ns).
impl<K: CacheKey, V: CacheValue> TieredCache<K, V> {
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
        match self.l1_fresh(self.tenant_str(), key) {
            Some(found) => GetOrLoad::Hit(Some(found.ok_or(CacheError::Absent))),
            None => GetOrLoad::Miss(self.load_boxed(key, loader)),
        }
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
        match self.l1_fresh(self.tenant_str(), key) {
            Some(found) => GetOrLoad::Hit(Some(Ok(found))),
            None => GetOrLoad::Miss(self.load_optional_boxed(key, loader)),
        }
    }
}

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
