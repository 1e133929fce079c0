//! What every [`HttpCache`](super::HttpCache) of one layer shares: its
//! cache and settings.

use std::sync::Arc;

use http::request::Parts;

use super::stored::StoredResponse;
use crate::cache::TieredCache;
use crate::marker::Markers;

pub(super) type TenantFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;
pub(super) type AllowFn = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// The settings and state of one [`HttpCacheLayer`](super::HttpCacheLayer).
pub(super) struct Shared {
    pub(super) cache: TieredCache<String, StoredResponse>,
    pub(super) tenant: Option<TenantFn>,
    pub(super) authorized: Option<AllowFn>,
    pub(super) max_body: usize,
    /// The targeted cache-control fields obeyed (RFC 9213), in order.
    pub(super) targets: Vec<http::HeaderName>,
    pub(super) revalidating: Arc<Markers<String>>,
}

/// Most background revalidations running at once, per layer.
pub(super) const MAX_REVALIDATIONS: usize = 10_000;
