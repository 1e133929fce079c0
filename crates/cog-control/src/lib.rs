//! The control plane of a multi-tenant API: subscription plans, tenants,
//! API keys and plugins, and the lookups cog's layers consume.
//!
//! - The model: plain serde data — [`Plan`] (named rate limits, long-window
//!   quotas, cache budget, plugin limits), [`Tenant`] (plan, status,
//!   metadata, per-tenant overrides), [`ApiKey`] (stored as a SHA-256
//!   hash, never the key), [`PluginSpec`] (wasm bytes by digest).
//! - [`Store`](store::Store): one document plus a revision, compare-and-swap writes —
//!   [`FileStore`](store::FileStore) (`file:PATH`, atomic replace) and `RedisStore`
//!   (`redis://…`, feature `redis`, shared by every instance).
//! - [`Control`]: typed, validated changes, retried on concurrent writes;
//!   `apply`/`diff` of a declarative [`Spec`] in YAML, TOML or JSON
//!   ([`document`]).
//! - [`Directory`]: a live, in-memory view of the store for the request
//!   path — API key → tenant ([`Authenticate`](auth::Authenticate)), tenant → quota
//!   ([`cog_ratelimit::QuotaSource`]) — refreshed as soon as a change is
//!   announced, and by polling the revision as a backstop.
//!
//! # Example
//!
//! ```no_run
//! use cog_control::{Control, LimitSpec, Plan, Tenant};
//! # async fn example() -> Result<(), cog_control::ControlError> {
//! let control = Control::open("file:./cog-state.json").await?;
//! control
//!     .create_plan("free", Plan {
//!         limits: vec![LimitSpec::parse("rps=10/1s,burst=20").unwrap()],
//!         ..Plan::default()
//!     })
//!     .await?;
//! control.create_tenant("acme", Tenant::new("free")).await?;
//! let key = control.create_key("acme", None).await?;
//! println!("give this to acme, it is shown once: {}", key.secret);
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "admin")]
pub mod admin;
pub mod auth;
mod control;
mod diff;
mod directory;
pub mod document;
mod error;
pub mod keys;
mod model;
#[cfg(feature = "sandbox")]
mod plugin_data;
#[cfg(feature = "sandbox")]
mod plugins;
#[cfg(feature = "sandbox")]
pub use plugins::{sandbox_limits, sandbox_limits_for};
pub mod store;

pub use control::Control;
pub use diff::{Change, diff};
pub use directory::{Directory, Refusal, TenantContext};
pub use error::{ControlError, Invalid};
pub use model::{
    AUDIT_KEEP, AdminToken, ApiKey, Attach, AuditEntry, KeyStatus, LimitSpec, MAX_COUNT,
    MAX_PLUGIN_BYTES, OnFailure, PlacementTable, Plan, PluginLang, PluginLimits, PluginSpec,
    Recheck, SCHEMA_VERSION, Scope, Spec, State, Status, Tenant, Window, digest,
};

/// The README's examples, compiled as doctests so that they keep up
/// with the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
