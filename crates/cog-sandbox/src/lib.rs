//! Untrusted plugins — WebAssembly modules or Python source — with hard
//! CPU, memory and time limits.
//!
//! Plugins are wasm modules (built with `cog-pdk` or by hand) that export
//! hooks run before and after the inner service. They import nothing but
//! the host API of `docs/plugin-abi.md`: no WASI, no filesystem, no
//! network, no clock, no environment. Python plugins
//! ([`Runtime::load_python`]) run in CPython for WASI with a
//! capability-free WASI and the same host API as the `cog` module; see
//! [`Python`].
//!
//! - [`Runtime`] compiles and caches modules (in memory and, optionally,
//!   as checksummed artifacts on disk), and refuses bad ones with a typed
//!   [`PluginError`].
//! - [`Limits`]: CPU (metering points), memory cap (enforced by the
//!   engine: `memory.grow` fails at the cap), wall-clock deadline (a
//!   watchdog stops a guest that spins by emptying its fuel counter),
//!   input/output/log/KV sizes.
//! - [`Python`]: a CPython for WASI (`scripts/setup` fetches one) and how
//!   its interpreters run ([`Clock`], [`Entropy`], start-up budget,
//!   snapshots, idle bound).
//! - [`Plugin::call`] runs one hook on an [`Exchange`]. Instances are
//!   reused for the same plugin and tenant after clean calls (never across
//!   tenants, never after a failure), so a warm call costs ~2 µs.
//! - [`KvStore`]: per-(tenant, plugin) data with its own quotas, in memory
//!   ([`MemoryKv`]) or in Redis (`RedisKv`, feature `redis`; `PlacedKv`
//!   over several deployments by tenant placement).
//! - [`PluginLayer`](layer::PluginLayer): a tower layer that resolves each request's plugins
//!   ([`PluginResolver`](layer::PluginResolver)), runs request hooks before the inner service and
//!   response hooks after it, on blocking threads, with a per-plugin
//!   failure policy ([`OnError`]).
//!
//! # Example
//!
//! ```no_run
//! use cog_sandbox::{Exchange, Limits, Phase, Runtime};
//! # fn example(wasm: &[u8]) -> Result<(), cog_sandbox::PluginError> {
//! let runtime = Runtime::new();
//! let plugin = runtime.load("add-header", wasm, Limits::default())?;
//! let mut exchange = Exchange::new(http::Method::GET, "/x".parse().unwrap(), "acme");
//! plugin.call(Phase::Request, &mut exchange)?;
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod exchange;
mod host;
mod kv;
pub mod layer;
mod limits;
mod metrics;
mod ops;
mod plugin;
mod python;
#[cfg(feature = "redis")]
mod redis_kv;
mod runtime;
mod stack;
mod tunables;
mod watchdog;

pub use error::{Cause, PluginError};
pub use exchange::{Exchange, Phase, Rejection};
pub use host::ABI_VERSION;
pub use kv::{KvError, KvQuota, KvScope, KvStore, MemoryKv};
pub use limits::Limits;
pub use plugin::{OnError, Plugin};
pub use python::{Clock, Entropy, Python};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_kv::{PlacedKv, RedisKv};
pub use runtime::{ArtifactStats, PythonStats, Runtime};

/// The README's examples, compiled as doctests so that they keep up
/// with the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
