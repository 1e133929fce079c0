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
use super::shared::Shared;
use crate::propagation::{GlobalPropagator, Propagation};

/// Headers that are never captured, whatever the allow-list says: the
/// standard credentials, and `X-Api-Key`, where cog-ratelimit's `ApiKey`
/// reads a caller's key.
const NEVER_CAPTURED: [&str; 5] = [
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
    "x-api-key",
];

/// Traces requests: one server span each, named `{method} {route}`, with
/// the stable HTTP semantic-convention attributes. See the
/// [crate docs](crate).
///
/// A builder with plain fields: each method sets one and returns the
/// layer; every service it builds shares one copy of the settings.
#[derive(Clone)]
pub struct TraceLayer {
    shared: Shared,
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
            shared: Shared {
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
            },
        }
    }

    /// Uses this pipeline's tracer and propagator instead of the globals.
    pub fn from_guard(guard: &crate::TraceGuard) -> Self {
        let tracer = guard
            .tracer("cog-trace")
            .map(|t| Arc::new(BoxedTracer::new(Box::new(t))));
        let sampler = guard.sampler();
        let mut layer = TraceLayer::new();
        layer.shared.tracer = tracer;
        layer.shared.sampler = Some(sampler);
        layer.shared.propagation = match guard.w3c() {
            Some(baggage) => Propagation::W3c { baggage },
            None => Propagation::Other(guard.propagator()),
        };
        layer
    }

    /// Uses `tracer` (from any SDK pipeline) instead of the global one.
    pub fn tracer(mut self, tracer: opentelemetry_sdk::trace::SdkTracer) -> Self {
        self.shared.tracer = Some(Arc::new(BoxedTracer::new(Box::new(tracer))));
        // An SDK tracer from elsewhere: its sampler decides.
        self.shared.sampler = None;
        self
    }

    /// Uses `propagator` instead of the global one.
    pub fn propagator(mut self, propagator: Arc<dyn TextMapPropagator + Send + Sync>) -> Self {
        self.shared.propagation = Propagation::Other(propagator);
        self
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
    pub fn route_with<R>(
        mut self,
        route: impl Fn(&Parts) -> Option<R> + Send + Sync + 'static,
    ) -> Self
    where
        R: Into<Cow<'static, str>>,
    {
        self.shared.route = Some(Arc::new(move |parts: &Parts| route(parts).map(Into::into)));
        self
    }

    /// Traces only requests for which `filter` is true (e.g. skip
    /// `/healthz`).
    pub fn filter(mut self, filter: impl Fn(&Parts) -> bool + Send + Sync + 'static) -> Self {
        self.shared.filter = Some(Arc::new(filter));
        self
    }

    /// Records these request headers as `http.request.header.<name>`.
    /// `Authorization`, `Cookie`, `Set-Cookie`, `Proxy-Authorization` and
    /// `X-Api-Key` are never recorded.
    pub fn capture_request_headers(
        mut self,
        names: impl IntoIterator<Item = http::HeaderName>,
    ) -> Self {
        let names: Vec<_> = names
            .into_iter()
            .filter(|n| !NEVER_CAPTURED.contains(&n.as_str()))
            .collect();
        self.shared.capture = names;
        self
    }

    /// Trusts `hops` proxies in front of the service for `client.address`
    /// (from `X-Forwarded-For`); by default only the peer address counts:
    /// a [`PeerAddr`](crate::PeerAddr) or `SocketAddr` request
    /// extension, or (feature `axum`) axum's `ConnectInfo<SocketAddr>`.
    pub fn trusted_hops(mut self, hops: usize) -> Self {
        self.shared.trusted_hops = hops;
        self
    }

    /// Treats the service as a public endpoint: an incoming context becomes
    /// a link of a new trace, never its parent.
    pub fn public_endpoint(mut self, public: bool) -> Self {
        self.shared.public_endpoint = public;
        self
    }

    /// Reads context as W3C trace context (and W3C baggage when `baggage`),
    /// decoded by the layer itself: what [`init`](crate::init) sets up by
    /// default, without the cost of the generic propagator API.
    pub fn w3c(mut self, baggage: bool) -> Self {
        self.shared.propagation = Propagation::W3c { baggage };
        self
    }

    /// Records `url.query` as sent (default: values redacted).
    pub fn keep_query(mut self, keep: bool) -> Self {
        self.shared.keep_query = keep;
        self
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            shared: Arc::new(self.shared.clone()),
        }
    }
}

impl<S> Trace<S> {
    /// `inner`, traced with the settings of [`TraceLayer::new`].
    pub fn new(inner: S) -> Self {
        TraceLayer::new().layer(inner)
    }

    /// The layer of this service: [`TraceLayer::new`].
    pub fn layer() -> TraceLayer {
        TraceLayer::new()
    }
}
