//! The route template a router matched for a request (`/v1/items/{id}`),
//! for span names, metric labels and rate-limit keys.

use std::sync::Arc;

use http::request::Parts;

/// The route template a router matched for this request (e.g.
/// `/v1/items/{id}`), as a request extension. Routers other than axum
/// insert it (axum's `MatchedPath` is read directly with the `axum`
/// feature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRoute(pub Arc<str>);

/// The route template of a request: a [`MatchedRoute`] extension, else
/// (with the `axum` feature) axum's `MatchedPath`; `None` when no router
/// said which route matched.
pub fn template(parts: &Parts) -> Option<&str> {
    if let Some(m) = parts.extensions.get::<MatchedRoute>() {
        return Some(&m.0);
    }
    #[cfg(feature = "axum")]
    if let Some(m) = parts.extensions.get::<axum::extract::MatchedPath>() {
        return Some(m.as_str());
    }
    None
}
