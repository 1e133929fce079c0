//! cog: the middleware a multi-tenant Rust API needs, as tower layers.
//!
//! This umbrella crate re-exports the cog crates behind features, so a
//! service can depend on `cog` alone:
//!
//! | feature     | module            | crate            |
//! |-------------|-------------------|------------------|
//! | `ratelimit` | [`ratelimit`]     | `cog-ratelimit`  |
//! | `cache`     | [`cache`]         | `cog-cache`      |
//! | `trace`     | `trace`           | `cog-trace`      |
//! | `sandbox`   | `sandbox`         | `cog-sandbox` (wasmer: a long first build) |
//! | `redis`     | Redis backends of every enabled crate | |
//!
//! Each crate also stands alone; depend on it directly if that is all you
//! need.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "ratelimit")]
#[cfg_attr(docsrs, doc(cfg(feature = "ratelimit")))]
pub use cog_ratelimit as ratelimit;

#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub use cog_cache as cache;

#[cfg(feature = "trace")]
#[cfg_attr(docsrs, doc(cfg(feature = "trace")))]
pub use cog_trace as trace;

#[cfg(feature = "sandbox")]
#[cfg_attr(docsrs, doc(cfg(feature = "sandbox")))]
pub use cog_sandbox as sandbox;

/// The README's example, compiled as a doctest so that it keeps up with
/// the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
