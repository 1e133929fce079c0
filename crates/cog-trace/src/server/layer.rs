//! [`TraceLayer`]: the builder, and the state its services share.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use opentelemetry::global::BoxedTracer;
use opentelemetry::propagation::TextMapPropagator;
use tower_layer::Layer;

use super::metrics::Metrics;
use super::service::Trace;
use crate::propagation::{GlobalPropagator, Propagation};

pub(super) type RouteFn = Arc<dyn Fn(&Parts) -> Option<Cow<'static, str>> + Send + Sync>;
pub(super) type FilterFn = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// Headers that are never captured, whatever the allow-list says.
const NEVER_CAPTURED: [&str; 4] = [
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];

/// Traces requests: one server span each, named `{method} {route}`, with
/// the stable HTTP semantic-convention attributes. See the
/// [crate docs](crate).
#[derive(Clone)]
pub struct TraceLayer {
    shared: Arc<Shared>,
}

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

impl fmt::Debug for TraceLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceLayer")
            .field("capture", &self.shared.capture)
            .field("trusted_hops", &self.shared.trusted_hops)
            .field("public_endpoint", &self.shared.public_endpoint)
            .finish_non_exhaustive()
    }
}

impl Default for TraceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceLayer {
    /// Uses the global tracer provider as it is now (call
    /// [`init`](crate::init) first), and the propagators `init` configured
    /// (the global propagator when `init` was not called).
    pub fn new() -> Self {
        TraceLayer {
            shared: Arc::new(Shared {
                metrics: Metrics::from_global(),
                tracer: Some(Arc::new(opentelemetry::global::tracer("cog-trace"))),
                sampler: crate::init::INIT_SAMPLER.get().copied(),
                propagation: match crate::init::INIT_W3C.get() {
                    Some(Some(baggage)) => Propagation::W3c { baggage: *baggage },
                    _ => Propagation::Other(Arc::new(GlobalPropagator)),
                },
                route: None,
                filter: None,
                capture: Vec::new(),
                trusted_hops: 0,
                public_endpoint: false,
                keep_query: false,
            }),
        }
    }

    /// Uses this pipeline's tracer and propagator instead of the globals.
    pub fn from_guard(guard: &crate::TraceGuard) -> Self {
        let tracer = guard
            .tracer("cog-trace")
            .map(|t| Arc::new(BoxedTracer::new(Box::new(t))));
        let sampler = guard.sampler();
        TraceLayer::new().with(|s| {
            s.tracer = tracer;
            s.sampler = Some(sampler);
            s.propagation = match guard.w3c() {
                Some(baggage) => Propagation::W3c { baggage },
                None => Propagation::Other(guard.propagator()),
            };
        })
    }

    /// Uses `tracer` (from any SDK pipeline) instead of the global one.
    pub fn tracer(self, tracer: opentelemetry_sdk::trace::SdkTracer) -> Self {
        self.with(|s| {
            s.tracer = Some(Arc::new(BoxedTracer::new(Box::new(tracer))));
            // An SDK tracer from elsewhere: its sampler decides.
            s.sampler = None;
        })
    }

    /// Uses `propagator` instead of the global one.
    pub fn propagator(self, propagator: Arc<dyn TextMapPropagator + Send + Sync>) -> Self {
        self.with(|s| s.propagation = Propagation::Other(propagator))
    }

    fn with(self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut s = match Arc::try_unwrap(self.shared) {
            Ok(s) => s,
            Err(shared) => Shared {
                metrics: Metrics::from_global(),
                tracer: shared.tracer.clone(),
                sampler: shared.sampler,
                propagation: shared.propagation.clone(),
                route: shared.route.clone(),
                filter: shared.filter.clone(),
                capture: shared.capture.clone(),
                trusted_hops: shared.trusted_hops,
                public_endpoint: shared.public_endpoint,
                keep_query: shared.keep_query,
            },
        };
        f(&mut s);
        TraceLayer {
            shared: Arc::new(s),
        }
    }

    /// Finds the route template (`/items/{id}`) of a request, for the span
    /// name and `http.route`. The closure may return a `String` or,
    /// cheaper, a `&'static str` from a route table.
    ///
    /// Without it, the layer uses what the router matched: axum's
    /// `MatchedPath` (feature `axum`, on by default — add the layer with
    /// `Router::layer`, which runs it after routing) or a
    /// [`MatchedRoute`](cog_core::route::MatchedRoute) extension another
    /// router inserted. With neither, spans are named by the method alone
    /// and metrics carry no `http.route` (never the raw path: it would
    /// make one series per URL).
    pub fn route_with<R>(self, route: impl Fn(&Parts) -> Option<R> + Send + Sync + 'static) -> Self
    where
        R: Into<Cow<'static, str>>,
    {
        self.with(|s| s.route = Some(Arc::new(move |parts: &Parts| route(parts).map(Into::into))))
    }

    /// Traces only requests for which `filter` is true (e.g. skip
    /// `/healthz`).
    pub fn filter(self, filter: impl Fn(&Parts) -> bool + Send + Sync + 'static) -> Self {
        self.with(|s| s.filter = Some(Arc::new(filter)))
    }

    /// Records these request headers as `http.request.header.<name>`.
    /// `Authorization`, `Cookie`, `Set-Cookie` and `Proxy-Authorization`
    /// are never recorded.
    pub fn capture_request_headers(
        self,
        names: impl IntoIterator<Item = http::HeaderName>,
    ) -> Self {
        let names: Vec<_> = names
            .into_iter()
            .filter(|n| !NEVER_CAPTURED.contains(&n.as_str()))
            .collect();
        self.with(|s| s.capture = names)
    }

    /// Trusts `hops` proxies in front of the service for `client.address`
    /// (from `X-Forwarded-For`); by default only the peer address counts.
    pub fn trusted_hops(self, hops: usize) -> Self {
        self.with(|s| s.trusted_hops = hops)
    }

    /// Treats the service as a public endpoint: an incoming context becomes
    /// a link of a new trace, never its parent.
    pub fn public_endpoint(self, public: bool) -> Self {
        self.with(|s| s.public_endpoint = public)
    }

    /// Reads context as W3C trace context (and W3C baggage when `baggage`),
    /// decoded by the layer itself: what [`init`](crate::init) sets up by
    /// default, without the cost of the generic propagator API.
    pub fn w3c(self, baggage: bool) -> Self {
        self.with(|s| s.propagation = Propagation::W3c { baggage })
    }

    /// Records `url.query` as sent (default: values redacted).
    pub fn keep_query(self, keep: bool) -> Self {
        self.with(|s| s.keep_query = keep)
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            shared: self.shared.clone(),
        }
    }
}
