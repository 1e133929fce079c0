//! The tower middleware: layer, service, response body.

mod body;
mod future;
#[allow(clippy::module_inception)]
mod layer;
mod service;

pub use body::RateLimitBody;

pub use future::ResponseFuture;
pub use layer::RateLimitLayer;
pub use service::{RATELIMIT, RATELIMIT_POLICY, RateLimit};
