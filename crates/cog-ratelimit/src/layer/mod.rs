//! The tower middleware: layer, service, response body.

mod body;
#[allow(clippy::module_inception)]
mod layer;
mod service;

pub use body::RateLimitBody;

pub use cog_core::ResponseFuture;
pub use layer::RateLimitLayer;
pub use service::{RATELIMIT, RATELIMIT_POLICY, RateLimit};
