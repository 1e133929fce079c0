//! The cog demo: every layer stacked on one axum service.
//!
//! ```text
//! cargo run --release -p example-demo
//! ```
//!
//! Listens on `COG_LISTEN` (default `127.0.0.1:8080`). Without
//! `COG_REDIS_URL`, everything is in memory and the control plane is the
//! file `COG_STORE` (default `./cog-state.json`); with it, limits, cache,
//! plugin data and the control plane are shared through Redis, so several
//! instances behave as one. `OTEL_*` variables configure span export;
//! `/metrics` serves every metric to Prometheus (OpenMetrics). A setting
//! that does not read (`COG_RATELIMIT_LEASE_MS=50ms`: milliseconds take no
//! unit) stops it at start, naming the variable. On an empty
//! store it creates plans `free` (10/s, burst 20) and `pro` (200/s, burst
//! 400) and a tenant `demo`, and prints its API key. SIGTERM or Ctrl-C
//! stops it gracefully: requests in flight are answered and their spans
//! exported before it exits.

//!
//! The library is the demo's parts, for its tests and for the load
//! generator (`example-load`), which runs it in process.

pub mod app;
pub mod metrics;
pub mod serve;
