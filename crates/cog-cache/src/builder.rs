//! Configuring a [`TieredCache`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::TieredCache;
use crate::envelope::schema_tag;
use crate::inner::{Config, Inner, TenantCap, Weigher};
use crate::traits::{CacheKey, CacheValue};

/// Builds a [`TieredCache`]; from [`TieredCache::builder`].
pub struct CacheBuilder<K, V> {
    capacity: u64,
    config: Config<K, V>,
    l1_ttl: Option<Duration>,
    schema: Option<u64>,
    #[cfg(feature = "redis")]
    redis: Option<fred::clients::Client>,
    /// The Redis tier's settings, kept apart from the client so that they
    /// hold whichever is given first.
    #[cfg(feature = "redis")]
    l2: crate::l2::L2Settings,
    #[cfg(feature = "redis")]
    regions: Vec<fred::clients::Client>,
    /// Bounds each call to another region's Redis.
    #[cfg(feature = "redis")]
    region_timeout: Duration,
    #[cfg(feature = "redis")]
    placed: Option<Placed>,
    #[cfg(feature = "redis")]
    placed_window: Duration,
    _types: PhantomData<fn(K) -> V>,
}

/// What [`CacheBuilder::placed`] was given.
#[cfg(feature = "redis")]
struct Placed {
    router: Arc<cog_core::placement::Router>,
    clients: Result<Vec<fred::clients::Client>, cog_core::placement::PlacementError>,
}

impl<K, V> fmt::Debug for CacheBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("capacity", &self.capacity)
            .field("ttl", &self.config.ttl)
            .finish_non_exhaustive()
    }
}

/// Why a cache could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The Redis tier needs a tokio runtime for its invalidation listener.
    #[error("a Redis-backed cache must be built inside a tokio runtime")]
    NoRuntime,
    /// The invalidation subscriber could not be created.
    #[error("creating the invalidation subscriber: {0}")]
    Subscriber(String),
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
    /// [`placed`](CacheBuilder::placed) without a client for one of the
    /// router's deployments, or without [`redis`](CacheBuilder::redis).
    #[cfg(feature = "redis")]
    #[error("placement: {0}")]
    Placement(String),
    /// A Redis-backed cache was built without
    /// [`schema`](CacheBuilder::schema).
    #[error("a Redis-backed cache needs a value schema: call .schema(\"name-v1\") on the builder")]
    SchemaRequired,
}

impl<K: CacheKey, V: CacheValue> CacheBuilder<K, V> {
    pub(crate) fn new() -> Self {
        CacheBuilder {
            capacity: 64 << 20,
            config: Config {
                ttl: Duration::from_secs(300),
                l1_ttl: Duration::MAX,
                jitter: 0.1,
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
                negative_ttl: Duration::from_secs(30),
                schema: 0,
                compress_above: Some(1024),
                tenant_cap: None,
                weigher: None,
                max_refreshes: 10_000,
            },
            l1_ttl: None,
            schema: None,
            #[cfg(feature = "redis")]
            redis: None,
            #[cfg(feature = "redis")]
            l2: crate::l2::L2Settings::default(),
            #[cfg(feature = "redis")]
            regions: Vec::new(),
            #[cfg(feature = "redis")]
            region_timeout: Duration::from_secs(1),
            #[cfg(feature = "redis")]
            placed: None,
            #[cfg(feature = "redis")]
            placed_window: Duration::from_secs(24 * 3600),
            _types: PhantomData,
        }
    }

    /// Most background refreshes (stale-while-revalidate) running at once
    /// (default 10 000). Past it, stale values are served without starting
    /// another; the bound keeps memory flat however many keys go stale.
    pub fn max_background_refreshes(mut self, n: usize) -> Self {
        self.config.max_refreshes = n;
        self
    }

    /// L1 capacity in bytes (default 64 MiB), as weighed by the
    /// [`weigher`](Self::weigher) — by default, an entry weighs its
    /// serialized size (as stored in L2, when it went there) plus 64 bytes
    /// and the size of `V`.
    pub fn l1_capacity_bytes(mut self, bytes: u64) -> Self {
        self.capacity = bytes;
        self
    }

    /// How long a value is fresh (default 5 min).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// Caps how long a value stays fresh in L1 (default: no cap beyond the
    /// entry's own TTL — jittered, or the one given to
    /// [`insert_with_ttl`](crate::TieredCache::insert_with_ttl)). A short L1
    /// TTL bounds how stale an instance can be if an invalidation message
    /// is lost; past it, a read goes to L2.
    pub fn l1_ttl(mut self, ttl: Duration) -> Self {
        self.l1_ttl = Some(ttl);
        self
    }

    /// Spreads TTLs uniformly over `ttl × (1 ± fraction)` so entries
    /// written together do not expire together (default 0.1).
    pub fn ttl_jitter(mut self, fraction: f64) -> Self {
        self.config.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// After the TTL, keep answering with the stale value for this long
    /// while one background load refreshes it (default off).
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.config.stale_while_revalidate = window;
        self
    }

    /// After the TTL, answer with the stale value for this long when the
    /// loader fails (default off).
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.config.stale_if_error = window;
        self
    }

    /// How long an absent value (`Ok(None)` from
    /// [`get_or_load_optional`](TieredCache::get_or_load_optional)) is
    /// cached (default 30 s).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.config.negative_ttl = ttl;
        self
    }

    /// Names the value schema; required with [`redis`](Self::redis),
    /// meaningless without. Change it whenever the value's serialized form
    /// changes: entries written under another schema are misses, never
    /// old bytes read as a new type.
    ///
    /// There is no default: the type's name (what this once defaulted to)
    /// changes between compilers, turning every L2 entry into a miss after
    /// a toolchain bump, and stays the same across real format changes.
    pub fn schema(mut self, schema: &str) -> Self {
        self.schema = Some(schema_tag(schema));
        self
    }

    /// Compresses L2 values larger than `bytes` with LZ4 (default 1 KiB;
    /// `None` never compresses).
    pub fn compress_above(mut self, bytes: Option<usize>) -> Self {
        self.config.compress_above = bytes;
        self
    }

    /// Caps the L1 bytes one tenant may hold; past it, that tenant's values
    /// are served but not kept in L1 (default: no cap).
    pub fn tenant_l1_cap(mut self, bytes: u64) -> Self {
        self.config.tenant_cap = Some(TenantCap::All(bytes));
        self
    }

    /// Caps each tenant's L1 bytes at what `cap` gives for its id (`None`:
    /// no cap for that tenant) — e.g. its plan's budget, as
    /// `cog_control::Directory::cache_budget` gives it. Asked on every L1
    /// write (not on reads), so a changed answer holds from the next
    /// write; entries a tenant already holds stay until they leave. Replaces
    /// [`tenant_l1_cap`](Self::tenant_l1_cap).
    pub fn tenant_l1_cap_with(
        mut self,
        cap: impl Fn(&str) -> Option<u64> + Send + Sync + 'static,
    ) -> Self {
        self.config.tenant_cap = Some(TenantCap::Each(Arc::new(cap)));
        self
    }

    /// Weighs entries with `weigher` (bytes) instead of their serialized
    /// size.
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u64 + Send + Sync + 'static) -> Self {
        self.config.weigher = Some(Arc::new(weigher) as Weigher<K, V>);
        self
    }

    /// Adds the Redis tier on an initialized `fred` client: key prefix
    /// `cog:cache:`, 50 ms timeout, 1 s circuit retry, no lease, unless
    /// set — before or after this call — by
    /// [`redis_prefix`](Self::redis_prefix),
    /// [`redis_timeout`](Self::redis_timeout),
    /// [`redis_retry_interval`](Self::redis_retry_interval) and
    /// [`lease`](Self::lease).
    ///
    /// Takes fred's `Client`: fred's major version is part of this crate's
    /// API under the `redis` feature (why: `docs/architecture.md`, "The
    /// Redis client is part of the API").
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, client: fred::clients::Client) -> Self {
        self.redis = Some(client);
        self
    }

    /// Adds another region's Redis (its own L2, on `client`): every
    /// invalidation made here — key, tag or tenant — is also applied to
    /// that region's L2 and published there, so its instances drop their L1
    /// entries. Sent off the caller's path, in order, retried every
    /// `redis_retry_interval` while the region is unreachable; at most
    /// 10 000 wait per region. Past that, the invalidations of the tenant
    /// with the most waiting fold into one of that whole tenant (its other
    /// entries there go too); only when no tenant has two waiting is the
    /// oldest dropped, its entries living there until their TTL. Reads and
    /// writes stay on the
    /// local L2. Each call to another region is bounded by
    /// [`region_timeout`](Self::region_timeout), not the local
    /// [`redis_timeout`](Self::redis_timeout). Needs [`redis`](Self::redis).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn region(mut self, client: fred::clients::Client) -> Self {
        self.regions.push(client);
        self
    }

    /// Bounds each call to another region's Redis (default 1 s): a
    /// cross-region round trip, off every request's path, so it can be far
    /// longer than the local L2's [`redis_timeout`](Self::redis_timeout).
    /// A region slower than this counts as unreachable, and its
    /// invalidations wait. Zero is refused by [`build`](Self::build).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn region_timeout(mut self, timeout: Duration) -> Self {
        self.region_timeout = timeout;
        self
    }

    /// Keeps each tenant's L2 entries, tag sets and leases on the Redis
    /// deployment its partition is placed on (see
    /// [`cog_core::placement`]): `deployments` names a client for each of
    /// `router`'s deployments. Share the router with the other placed
    /// stores of the process (the limiter's `PlacedStore`, the plugin KV):
    /// one [`Router::set_placement`](cog_core::placement::Router::set_placement)
    /// moves them all.
    ///
    /// Invalidation messages between instances stay on
    /// [`redis`](Self::redis), which is needed too. For `window` after a
    /// partition moves (24 h with [`placed`](Self::placed); see
    /// [`placed_window`](Self::placed_window)), a miss on the new deployment
    /// reads the old one and copies what it finds (hot entries follow the
    /// move on their first read, with their remaining lifetime), and
    /// invalidations delete on both. Entries not read in that window stay
    /// behind until their TTL: keep it at least your longest TTL (plus
    /// stale windows), so a partition moved back cannot find one that
    /// missed an invalidation.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn placed(
        mut self,
        router: Arc<cog_core::placement::Router>,
        deployments: impl IntoIterator<Item = (impl AsRef<str>, fred::clients::Client)>,
    ) -> Self {
        let clients = router.arrange(deployments);
        self.placed = Some(Placed { router, clients });
        self
    }

    /// How long after a move the previous deployment is read and cleared
    /// (default 24 h; see [`placed`](Self::placed)).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn placed_window(mut self, window: Duration) -> Self {
        self.placed_window = window;
        self
    }

    /// The Redis key prefix (default `cog:cache:`), which also names the
    /// invalidation channel (`<prefix>invalidate`). Give each cache on one
    /// Redis a prefix of its own: caches sharing one share tag sets, and a
    /// tag or tenant invalidation in one deletes the other's entries too.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.l2.prefix = prefix.into();
        self
    }

    /// Bounds every Redis call (default 50 ms; zero is refused by
    /// [`build`](Self::build)).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.l2.timeout = timeout;
        self
    }

    /// How long the L2 circuit stays open after a failure before a probe
    /// (default 1 s, ± 30 % jitter).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_retry_interval(mut self, interval: Duration) -> Self {
        self.l2.retry_interval = interval;
        self
    }

    /// Loads each missing key once per cluster: the instance that takes a
    /// Redis lease (`SET NX PX ttl`, released with a token check) loads;
    /// the others wait — up to `ttl` — for its value to appear in L2. A
    /// `ttl` under 1 ms is refused by [`build`](Self::build).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn lease(mut self, ttl: Duration) -> Self {
        self.l2.lease = Some(ttl);
        self
    }

    /// Builds the cache. With Redis, this starts the invalidation listener
    /// and must run inside a tokio runtime.
    ///
    /// # Errors
    /// [`BuildError`] when a setting is out of range or the Redis listener
    /// cannot start.
    pub fn build(mut self) -> Result<TieredCache<K, V>, BuildError> {
        if self.config.ttl.is_zero() {
            return Err(BuildError::Invalid("ttl must be positive"));
        }
        self.config.l1_ttl = self.l1_ttl.unwrap_or(Duration::MAX);
        self.config.schema = self.schema.unwrap_or(0);
        #[cfg(feature = "redis")]
        {
            if let Some(client) = self.redis.take() {
                if self.schema.is_none() {
                    return Err(BuildError::SchemaRequired);
                }
                let settings = std::mem::take(&mut self.l2);
                if settings.timeout.is_zero() || self.region_timeout.is_zero() {
                    return Err(BuildError::Invalid("a Redis timeout must be positive"));
                }
                if settings.lease.is_some_and(|l| l.as_millis() == 0) {
                    return Err(BuildError::Invalid("the lease must be at least 1 ms"));
                }
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(BuildError::NoRuntime);
                }
                let channel = format!("{}invalidate", settings.prefix);
                let retry = settings.retry_interval;
                let remotes: Vec<_> = self
                    .regions
                    .drain(..)
                    .map(|c| {
                        let settings = crate::l2::L2Settings {
                            timeout: self.region_timeout,
                            ..settings.clone()
                        };
                        Arc::new(crate::regions::Remote::region(crate::l2::L2::new(
                            c, settings,
                        )))
                    })
                    .collect();
                let placed = match self.placed.take() {
                    Some(p) => Some(crate::inner::PlacedL2 {
                        l2s: p
                            .clients
                            .map_err(|e| BuildError::Placement(e.to_string()))?
                            .into_iter()
                            .map(|c| crate::l2::L2::new(c, settings.clone()))
                            .collect(),
                        router: p.router,
                        window: self.placed_window,
                    }),
                    None => None,
                };
                let l2 = crate::l2::L2::new(client.clone(), settings);
                let origin = l2.origin;
                let inner = Inner::with_remotes(
                    self.config,
                    self.capacity,
                    Some(l2),
                    remotes.clone(),
                    placed,
                );
                for r in remotes.into_iter().chain(inner.here.clone()) {
                    crate::regions::spawn(Arc::downgrade(&inner), r, retry);
                }
                crate::subscriber::spawn(&client, Arc::downgrade(&inner), origin, channel)
                    .map_err(|e| BuildError::Subscriber(e.to_string()))?;
                return Ok(TieredCache::from_inner(inner));
            }
        }
        #[cfg(feature = "redis")]
        if self.placed.is_some() {
            return Err(BuildError::Placement(
                "a placed cache needs .redis(client) for its invalidation messages".into(),
            ));
        }
        Ok(TieredCache::from_inner(Inner::new(
            self.config,
            self.capacity,
            None,
        )))
    }
}
