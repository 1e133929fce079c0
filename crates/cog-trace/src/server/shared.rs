//! What every [`Trace`](super::Trace) of one layer shares: the settings
//! [`TraceLayer`](super::TraceLayer) was built with, and its instruments.

use std::borrow::Cow;
use std::sync::Arc;

use http::request::Parts;
use opentelemetry::global::BoxedTracer;

use super::metrics::Metrics;
use crate::propagation::Propagation;

pub(super) type RouteFn = Arc<dyn Fn(&Parts) -> Option<Cow<'static, str>> + Send + Sync>;
pub(super) type FilterFn = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// The settings every [`Trace`](super::Trace) of one layer shares (behind an `Arc`).
#[derive(Clone)]
pub(super) struct Shared {
    /// `None` when no meter provider was installed: nothing to record.
    pub(super) metrics: Option<Metrics>,
    pub(super) tracer: Option<Arc<BoxedTracer>>,
    /// The pipeline's sampler, when known: lets the layer skip the SDK
    /// entirely for requests that will not be sampled.
    pub(super) sampler: Option<crate::SamplerKind>,
    pub(super) propagation: Propagation,
    pub(super) route: Option<RouteFn>,
    pub(super) filter: Option<FilterFn>,
    pub(super) capture: Vec<http::HeaderName>,
    pub(super) trusted_hops: usize,
    pub(super) public_endpoint: bool,
    pub(super) keep_query: bool,
}
