//! Shared pieces of the cog crates.
//!
//! - [`keys::encode_segment`]: turns any request-derived string (tenant id,
//!   API key hash, IP, cache key) into a Redis key segment that cannot break
//!   the key schema, hash tags included, and cannot collide with another.
//! - [`Breaker`]: the circuit breaker every Redis-backed component uses to
//!   stop waiting on a Redis that is slow or gone, and to find out — one
//!   probe at a time — when it is back.
//! - [`ResponseFuture`]: the boxed response future of cog's tower layers.
//! - [`redis::is_unavailable_reply`]: which Redis error replies mean "cannot
//!   serve now" (an outage for failure policies), not a bug.
//! - [`route::template`]: the route a router matched (`MatchedRoute`, or
//!   axum's `MatchedPath`).
//! - [`peer::addr`]: the address of a request's peer (`PeerAddr`,
//!   `SocketAddr`, or axum's `ConnectInfo`).
//! - [`text::push_u64`]: decimal numbers into header values without
//!   `write!` (on every response).
//! - [`inner_service!`]: `get_ref` / `get_mut` / `into_inner` for a
//!   middleware, written once.
//! - [`striped::Striped`]: counters bumped on every request, one copy per
//!   thread's stripe — no cache line fought over between cores.
//! - `serve::Serve` (feature `serve`): an axum router over TCP with a
//!   deadline for request heads and a bounded drain on stop.
//! - [`telemetry::Child`]: the OpenTelemetry spans cog opens inside a
//!   sampled request — internal steps and Redis client calls.

pub mod breaker;
pub mod future;
pub mod keys;
pub mod peer;
pub mod placement;
pub mod redis;
pub mod route;
#[cfg(feature = "serve")]
pub mod serve;
pub mod service;
pub mod striped;
pub mod telemetry;
pub mod text;

pub use breaker::Breaker;
pub use future::ResponseFuture;
