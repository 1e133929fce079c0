//! Horizontally scalable rate limiting for tower services.
//!
//! cog-ratelimit decides whether a request may proceed against a
//! [`Quota`] — one or more [`Limit`]s checked all-or-nothing — and keeps the
//! state either in this process ([`MemoryStore`](store::MemoryStore)) or in Redis
//! ([`RedisStore`](store::RedisStore), feature `redis`), where every instance of a service
//! shares exact limits.
//!
//! - **Algorithms**: GCRA (`Limit::per_second(10).burst(20)`: exact, one
//!   timestamp per subject), sliding window counter
//!   (`Limit::sliding_window(100, 60s)`), and concurrency
//!   (`Limit::concurrency(5)`: requests in flight, with lease expiry so a
//!   crashed instance cannot leak slots).
//! - **Costs and several limits at once**: a request can cost more than 1,
//!   and a quota like "10/s and 10 000/day" is one decision, one Redis round
//!   trip, counted against every limit or none.
//! - **Redis**: one Lua script per decision on Redis `TIME`, microsecond
//!   precision, hash-tagged keys (Redis Cluster works), subjects escaped or
//!   hashed. Every call is bounded by a timeout; when Redis is slow or gone
//!   a [`FailurePolicy`](store::FailurePolicy) decides (fail open, fail closed, or a local limiter
//!   enforcing limit ÷ N), and it recovers on its own when Redis returns.
//! - **Tower layer**: [`RateLimitLayer`] answers `429` with `Retry-After`
//!   and the IETF `RateLimit-Policy` / `RateLimit` headers, or runs in
//!   shadow mode. Subjects come from a [`KeyExtractor`](extract::KeyExtractor) (header, API key,
//!   peer IP with trusted proxies, route, closure) and quotas from a
//!   [`QuotaSource`] (static, or a control plane).
//!
//! # Example
//!
//! ```
//! use cog_ratelimit::{Limit, Quota};
//! use cog_ratelimit::store::{MemoryStore, Store};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let quota = Quota::new([Limit::per_second(2), Limit::per_day(1000)])?;
//!
//! assert!(store.check("tenant-a", &quota, 1).await?.is_allowed());
//! assert!(store.check("tenant-a", &quota, 1).await?.is_allowed());
//! let third = store.check("tenant-a", &quota, 1).await?;
//! assert!(!third.is_allowed());
//! println!("retry in {:?}", third.retry_after());
//! # Ok(()) }
//! ```
//!
//! As middleware, with Redis shared by every instance:
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use cog_ratelimit::{Limit, Quota, RateLimitLayer};
//! use cog_ratelimit::extract::ApiKey;
//! use cog_ratelimit::store::{FailurePolicy, RedisStore};
//!
//! let client = cog_ratelimit::store::connect("redis://127.0.0.1:6379").await?;
//! let store = RedisStore::new(client).on_failure(FailurePolicy::Local { instances: 4 });
//! let quota = Quota::new([Limit::per_second(10).burst(20), Limit::per_day(10_000)])?;
//! let layer = RateLimitLayer::new(store, ApiKey::new(), quota);
//! // axum: Router::new().route(...).layer(layer)
//! # let _ = layer; Ok(()) }
//! ```
//!
//! # Redis slow, gone and back
//!
//! See [`RedisStore`](store::RedisStore): calls time out (50 ms by default), a breaker routes
//! decisions to the [`FailurePolicy`](store::FailurePolicy) for a retry interval, then one probe
//! goes to Redis and a success restores shared limits. Denials are
//! remembered locally until their retry time, so a subject known to be over
//! its limit costs no round trip.
//!
//! # Feature flags
//!
//! - `redis`: [`RedisStore`](store::RedisStore), on `fred`.
//! - `axum`: [`Route`](extract::Route) keys on axum's `MatchedPath` (the route template).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod algo;
mod decision;
pub mod extract;
mod headers;
mod layer;
mod quota;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod region;
mod source;
pub mod store;

pub use decision::{Decision, DecisionSource, LimitStatus};
pub use layer::{
    RATELIMIT, RATELIMIT_POLICY, RateLimit, RateLimitBody, RateLimitLayer, ResponseFuture,
};
pub use quota::{InvalidQuota, Limit, LimitKind, MAX_COUNT, MAX_PERIOD, Quota};
pub use source::{BoxError, QuotaSource, StaticQuotas};

/// The README's examples, compiled as doctests so that they keep up
/// with the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
