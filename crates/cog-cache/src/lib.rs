//! A two-tier cache: L1 in process, L2 in Redis, with stampede protection,
//! stale serving, cross-instance invalidation and automatic failover.
//!
//! [`TieredCache`] puts an expensive call — a database query, an LLM
//! completion, an upstream API — behind a cache shared by many instances:
//!
//! - **L1** is [`quick_cache`], bounded by weight in bytes. L1 alone is a
//!   complete configuration, no Redis needed.
//! - **L2** (feature `redis`) is Redis through `fred`, shared by every
//!   instance. Values travel in a compact, versioned envelope (format
//!   version + schema tag; LZ4 above a size threshold): bytes of another
//!   format or schema, and garbage, are a miss and a counted error — never
//!   a panic, never old bytes decoded as new.
//! - **Read-through** with [`get_or_load`](TieredCache::get_or_load):
//!   concurrent misses for one key run the loader once per instance, and
//!   with the Redis lease ([`CacheBuilder::lease`]) once per cluster.
//! - **Freshness**: per-entry TTL with jitter; stale-while-revalidate
//!   (answer stale, refresh once in the background); stale-if-error (the
//!   loader failed: answer the last value within a window); negative
//!   caching of absent values with their own TTL.
//! - **Invalidation** reaches every instance's L1 through Redis pub/sub;
//!   after a reconnect L1 is flushed (messages may have been lost), and the
//!   L1 TTL bounds staleness even if one is.
//! - **Failover**: L2 errors and timeouts open a circuit breaker; while it
//!   is open, reads go L1 → loader and writes skip L2, and callers see no
//!   error. One probe at a time (with jitter across instances) closes it
//!   when Redis is back. An invalidation Redis refused is queued and sent
//!   again until it lands ([`TieredCache::invalidations_pending`]).
//! - **Tenants**: [`TieredCache::tenant`] namespaces keys per tenant, and
//!   [`CacheBuilder::tenant_l1_cap`] stops one tenant from evicting
//!   everyone else ([`CacheBuilder::tenant_l1_cap_with`]: each tenant's
//!   own cap, e.g. its plan's).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use cog_cache::TieredCache;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cache: TieredCache<String, String> = TieredCache::builder()
//!     .l1_capacity_bytes(16 << 20)
//!     .ttl(Duration::from_secs(60))
//!     .stale_while_revalidate(Duration::from_secs(30))
//!     .build()
//!     .unwrap();
//!
//! let answer = cache
//!     .tenant("acme")
//!     .get_or_load(&"prompt:hello".to_owned(), || async {
//!         Ok::<_, std::io::Error>("expensive answer".to_owned())
//!     })
//!     .await
//!     .unwrap();
//! assert_eq!(answer, "expensive answer");
//! # }
//! ```
//!
//! # Redis slow, gone and back
//!
//! | situation | behaviour |
//! |---|---|
//! | an L2 call fails or exceeds the timeout (default 50 ms) | counted; the circuit opens for the retry interval (1 s ± 30 %) |
//! | circuit open | reads: L1, then the loader; writes: L1 only; no error surfaced |
//! | an invalidation fails (an error, a timeout, the circuit open) | applied to L1 at once; its deletes and message queued and sent again every retry interval until they land |
//! | retry interval over | one caller probes; success closes the circuit |
//! | invalidation channel reconnects | L1 is flushed |
//!
//! # Feature flags
//!
//! - `http` (default): [`http::HttpCacheLayer`], the HTTP response cache.
//! - `redis`: the L2 tier, leases and cross-instance invalidation.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod cache;
mod envelope;
mod error;
mod generation;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod inner;
mod l2;
mod marker;
mod recent;
#[cfg(feature = "redis")]
mod regions;
mod slot;
mod stats;
#[cfg(feature = "redis")]
mod subscriber;
mod tenant;
mod traits;

pub use builder::{BuildError, CacheBuilder};
pub use cache::{TenantCache, TieredCache};
pub use error::CacheError;
pub use stats::StatsSnapshot;
pub use traits::{CacheKey, CacheValue};

/// The README's examples, compiled as doctests so that they keep up
/// with the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
