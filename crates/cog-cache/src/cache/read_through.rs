//! The read-through engine behind an L1 miss: L2, then the cluster lease,
//! then the loader — once per key however many callers miss at once — with
//! stale serving around it (while revalidating, and if the load fails).
//! The hit path is in the parent module.

use std::future::Future;
use std::pin::Pin;

use super::TieredCache;
use crate::error::CacheError;
use crate::generation::Seen;
use crate::l2::LeaseOutcome;
use crate::slot::{Guard, L1Ref, Slot};
use crate::traits::{CacheKey, CacheValue};

pub(super) type BoxedLoad<'a, T, E> =
    Pin<Box<dyn Future<Output = Result<T, CacheError<E>>> + Send + 'a>>;

impl<K: CacheKey, V: CacheValue> TieredCache<K, V> {
    #[cold]
    #[inline(never)]
    pub(super) fn load_boxed<'a, F, Fut, E>(&'a self, key: &'a K, loader: F) -> BoxedLoad<'a, V, E>
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

    #[cold]
    #[inline(never)]
    pub(super) fn load_optional_boxed<'a, F, Fut, E>(
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
        let lease = match inner.l2_of(&tenant) {
            Some(l2) => l2.lease(&tenant, key).await,
            None => None,
        };
        if let Some(LeaseOutcome::Waited) = lease
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
        if let (Some(LeaseOutcome::Held(token)), Some(l2)) = (lease, inner.l2_of(&tenant)) {
            l2.release(&tenant, key, token).await;
        }
        (loaded, stale)
    }

    /// Writes a just-loaded slot to L2 unless `key` was invalidated since
    /// `seen` (and takes it out again if that happened during the write);
    /// returns it weighed by its encoded size.
    pub(super) async fn put_l2_unless_invalidated(
        &self,
        key: &K,
        slot: Slot<V>,
        seen: Seen,
    ) -> Slot<V> {
        let inner = &self.inner;
        if inner.generations.changed(seen) {
            return slot;
        }
        let encoded = inner.put_l2(self.tenant_str(), key, &slot).await;
        if let (Some(_), Some(l2)) = (encoded, inner.l2_of(self.tenant_str()))
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
