//! API-key authentication on the request path: [`AuthenticateLayer`] and
//! its service, against a [`Directory`](crate::Directory).

mod layer;
mod service;

pub use layer::AuthenticateLayer;
pub use service::{Authenticate, ResponseFuture};
