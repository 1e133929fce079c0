//! Rate limiting as tower middleware.
//!
//! [`RateLimitLayer`] extracts a subject from each request
//! ([`KeyExtractor`](crate::KeyExtractor)), resolves its quota
//! ([`QuotaSource`](crate::QuotaSource)), and asks a [`Store`](crate::Store)
//! for a decision:
//!
//! - admitted: the request goes to the inner service; the response gets
//!   `RateLimit-Policy` and `RateLimit` headers;
//! - denied: `429 Too Many Requests` with `Retry-After` and the same
//!   headers, and the inner service is not called;
//! - store unavailable with a fail-closed policy, or quota lookup failed:
//!   `503 Service Unavailable` with `Retry-After: 1`;
//! - no subject (the extractor returned `None`) or no quota: passed
//!   through, unlimited.
//!
//! Concurrency slots are held until the response body ends — its last
//! frame, an error, or the body dropped — so a streaming response counts as
//! in flight until it is done; a request abandoned before its response
//! gives them back at once. The response body is therefore
//! [`RateLimitBody<B>`], a pass-through wrapper of the inner body.
//!
//! In [shadow mode](RateLimitLayer::shadow) every decision is made and
//! recorded, but nothing is rejected and no header is added: a way to try a
//! limit on production traffic before enforcing it.

mod body;
#[allow(clippy::module_inception)]
mod layer;
mod service;

pub use body::RateLimitBody;

pub use cog_core::ResponseFuture;
pub use layer::RateLimitLayer;
pub use service::{RATELIMIT, RATELIMIT_POLICY, RateLimit};
