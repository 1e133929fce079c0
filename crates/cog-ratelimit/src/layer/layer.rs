use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use tower_layer::Layer;

use super::service::{Config, CostFn, Metrics, RateLimit};
use crate::extract::KeyExtractor;
use crate::source::QuotaSource;
use crate::store::Store;

/// Applies rate limits to requests.
///
/// [`RateLimitLayer`] extracts a subject from each request
/// ([`KeyExtractor`](crate::extract::KeyExtractor)), resolves its quota
/// ([`QuotaSource`](crate::QuotaSource)), and asks a [`Store`](crate::store::Store)
/// for a decision:
///
/// - admitted: the request goes to the inner service; the response gets
///   `RateLimit-Policy` and `RateLimit` headers;
/// - denied: `429 Too Many Requests` with `Retry-After` and the same
///   headers, and the inner service is not called;
/// - store unavailable with a fail-closed policy, or quota lookup failed:
///   `503 Service Unavailable` with `Retry-After: 1`;
/// - no subject (the extractor returned `None`) or no quota: passed
///   through, unlimited.
///
/// Concurrency slots are held until the response body ends — its last
/// frame, an error, or the body dropped — so a streaming response counts as
/// in flight until it is done; a request abandoned before its response
/// gives them back at once. The response body is therefore
/// [`RateLimitBody<B>`](crate::RateLimitBody), a pass-through wrapper of the inner body.
///
/// In [shadow mode](RateLimitLayer::shadow) every decision is made and
/// recorded, but nothing is rejected and no header is added: a way to try a
/// limit on production traffic before enforcing it.
///
/// ```
/// use cog_ratelimit::{Limit, Quota, RateLimitLayer};
/// use cog_ratelimit::extract::PeerIp;
/// use cog_ratelimit::store::MemoryStore;
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

impl<S, St, K, Q> RateLimit<S, St, K, Q>
where
    St: Store + Clone,
    K: KeyExtractor,
    Q: QuotaSource,
{
    /// `inner`, limited as [`RateLimitLayer::new`] describes.
    pub fn new(inner: S, store: St, key: K, quotas: Q) -> Self {
        RateLimitLayer::new(store, key, quotas).layer(inner)
    }

    /// The layer of this service: [`RateLimitLayer::new`].
    pub fn layer(store: St, key: K, quotas: Q) -> RateLimitLayer<St, K, Q> {
        RateLimitLayer::new(store, key, quotas)
    }
}
