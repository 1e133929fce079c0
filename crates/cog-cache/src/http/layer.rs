//! [`HttpCacheLayer`] and its settings.

use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use tower_layer::Layer;

use super::service::HttpCache;
use super::shared::{MAX_REVALIDATIONS, Shared};
use super::stored::StoredResponse;
use crate::cache::TieredCache;
use crate::marker::Markers;

/// Caches HTTP responses; see the [module docs](super).
#[derive(Clone)]
pub struct HttpCacheLayer {
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for HttpCacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCacheLayer")
            .field("max_body", &self.shared.max_body)
            .field("targets", &self.shared.targets)
            .finish_non_exhaustive()
    }
}

impl HttpCacheLayer {
    /// Caches responses in `cache` (its TTL settings do not matter: each
    /// entry lives as long as its response's freshness says).
    pub fn new(cache: TieredCache<String, StoredResponse>) -> Self {
        HttpCacheLayer {
            shared: Arc::new(Shared {
                cache,
                tenant: None,
                authorized: None,
                max_body: 1 << 20,
                targets: Vec::new(),
                revalidating: Markers::new(MAX_REVALIDATIONS),
            }),
        }
    }

    fn with(self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::try_unwrap(self.shared).unwrap_or_else(|s| Shared {
            cache: s.cache.clone(),
            tenant: s.tenant.clone(),
            authorized: s.authorized.clone(),
            max_body: s.max_body,
            targets: s.targets.clone(),
            revalidating: Markers::new(MAX_REVALIDATIONS),
        });
        f(&mut shared);
        HttpCacheLayer {
            shared: Arc::new(shared),
        }
    }

    /// Namespaces entries by the tenant `tenant` finds in the request
    /// (`None`: the shared namespace). Tenant A never sees tenant B's
    /// responses.
    pub fn tenant_with(
        self,
        tenant: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.with(|s| s.tenant = Some(Arc::new(tenant)))
    }

    /// Allows caching for requests with `Authorization` when `allow` says so
    /// (e.g. for some routes). Off by default.
    pub fn cache_authorized(self, allow: impl Fn(&Parts) -> bool + Send + Sync + 'static) -> Self {
        self.with(|s| s.authorized = Some(Arc::new(allow)))
    }

    /// Obeys targeted cache control (RFC 9213): of these fields, the first a
    /// response carries with a valid, non-empty value (a Structured Fields
    /// dictionary) decides how this cache stores and reuses it, in place of
    /// `Cache-Control` and `Expires` — which still reach the client as they
    /// are. None by default; a cache that acts for the origin, as a CDN
    /// does, would obey `CDN-Cache-Control`:
    ///
    /// ```
    /// # use cog_cache::TieredCache;
    /// # use cog_cache::http::HttpCacheLayer;
    /// # let cache = TieredCache::builder().build().unwrap();
    /// // `CDN-Cache-Control: max-age=600` with `Cache-Control: no-store`:
    /// // kept here ten minutes, never by the client.
    /// let layer = HttpCacheLayer::new(cache)
    ///     .targeted([http::HeaderName::from_static("cdn-cache-control")]);
    /// # let _ = layer;
    /// ```
    ///
    /// Directives read from them: `max-age`, `s-maxage`, `no-store`,
    /// `no-cache`, `private`, `public`, `must-revalidate`,
    /// `proxy-revalidate`, `stale-while-revalidate`, `stale-if-error`; one
    /// of these with a value of the wrong type (`max-age="60"`) makes the
    /// field invalid, as a syntax error does.
    pub fn targeted(self, fields: impl IntoIterator<Item = http::HeaderName>) -> Self {
        let fields: Vec<_> = fields.into_iter().collect();
        self.with(|s| s.targets = fields)
    }

    /// Largest body stored (default 1 MiB). A body known to fit is read
    /// and stored before the answer goes out; one of unknown length
    /// (streamed) is passed on as it comes and stored once it has ended,
    /// if it stayed within this; a larger one is passed on, not stored.
    pub fn max_body(self, bytes: usize) -> Self {
        self.with(|s| s.max_body = bytes)
    }
}

impl<S> Layer<S> for HttpCacheLayer {
    type Service = HttpCache<S>;

    fn layer(&self, inner: S) -> HttpCache<S> {
        HttpCache {
            inner,
            shared: self.shared.clone(),
        }
    }
}

impl<S> HttpCache<S> {
    /// `inner`, with its responses cached in `cache` with the default
    /// settings (see [`HttpCacheLayer`] for the others).
    pub fn new(inner: S, cache: TieredCache<String, StoredResponse>) -> Self {
        HttpCacheLayer::new(cache).layer(inner)
    }

    /// A layer caching responses in `cache`: [`HttpCacheLayer::new`].
    pub fn layer(cache: TieredCache<String, StoredResponse>) -> HttpCacheLayer {
        HttpCacheLayer::new(cache)
    }
}
