use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use tower_layer::Layer;

use super::service::{Config, CostFn, Metrics, RateLimit};
use crate::extract::KeyExtractor;
use crate::source::QuotaSource;
use crate::store::Store;

/// Applies rate limits to requests; see the [module docs](crate::layer).
///
/// ```
/// use cog_ratelimit::{Limit, MemoryStore, PeerIp, Quota, RateLimitLayer};
///
/// let quota = Quota::new([Limit::per_second(10), Limit::per_day(10_000)]).unwrap();
/// let layer = RateLimitLayer::new(MemoryStore::new(), PeerIp::new(), quota)
///     .cost_with(|parts| if parts.method == http::Method::POST { 5 } else { 1 });
/// # let _ = layer;
/// ```
pub struct RateLimitLayer<St, K, Q> {
    store: St,
    key: Arc<K>,
    quotas: Arc<Q>,
    cost: Option<CostFn>,
    shadow: bool,
}

impl<St, K, Q> RateLimitLayer<St, K, Q>
where
    St: Store + Clone,
    K: KeyExtractor,
    Q: QuotaSource,
{
    /// Limits requests by the subject `key` extracts, with the quota
    /// `quotas` resolves, decided by `store`. Every request costs 1.
    pub fn new(store: St, key: K, quotas: Q) -> Self {
        RateLimitLayer {
            store,
            key: Arc::new(key),
            quotas: Arc::new(quotas),
            cost: None,
            shadow: false,
        }
    }

    /// Charges each request what `cost` says (e.g. by route, or by a
    /// declared size) instead of 1.
    pub fn cost_with<F>(mut self, cost: F) -> Self
    where
        F: Fn(&Parts) -> u64 + Send + Sync + 'static,
    {
        self.cost = Some(Arc::new(cost));
        self
    }

    /// Shadow mode: decide and record, never reject, add no headers.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// The store deciding for this layer.
    pub fn store(&self) -> &St {
        &self.store
    }
}

impl<St: Clone, K, Q> Clone for RateLimitLayer<St, K, Q> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            store: self.store.clone(),
            key: self.key.clone(),
            quotas: self.quotas.clone(),
            cost: self.cost.clone(),
            shadow: self.shadow,
        }
    }
}

impl<St: fmt::Debug, K: fmt::Debug, Q: fmt::Debug> fmt::Debug for RateLimitLayer<St, K, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("store", &self.store)
            .field("key", &self.key)
            .field("quotas", &self.quotas)
            .field("cost", &self.cost.as_ref().map(|_| "custom"))
            .field("shadow", &self.shadow)
            .finish()
    }
}

impl<S, St, K, Q> Layer<S> for RateLimitLayer<St, K, Q>
where
    St: Store + Clone,
    K: KeyExtractor,
    Q: QuotaSource,
{
    type Service = RateLimit<S, St, K, Q>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::from_config(
            inner,
            Arc::new(Config {
                store: self.store.clone(),
                key: self.key.clone(),
                quotas: self.quotas.clone(),
                cost: self.cost.clone(),
                shadow: self.shadow,
                metrics: Metrics::new(),
            }),
        )
    }
}
