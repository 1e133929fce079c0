//! The server layer: one span per request.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, Version, header};
use http_body::Body;
use opentelemetry::global::BoxedTracer;
use opentelemetry::metrics::MeterProvider;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Link, Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use tower_layer::Layer;
use tower_service::Service;

use crate::propagation::{Incoming, Propagation};

type RouteFn = Arc<dyn Fn(&Parts) -> Option<Cow<'static, str>> + Send + Sync>;
type FilterFn = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

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

struct Shared {
    /// `None` when no meter provider was installed: nothing to record.
    metrics: Option<Metrics>,
    tracer: Option<Arc<BoxedTracer>>,
    /// The pipeline's sampler, when known: lets the layer skip the SDK
    /// entirely for requests that will not be sampled.
    sampler: Option<crate::SamplerKind>,
    propagation: Propagation,
    route: Option<RouteFn>,
    filter: Option<FilterFn>,
    capture: Vec<http::HeaderName>,
    trusted_hops: usize,
    public_endpoint: bool,
    keep_query: bool,
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

/// Middleware built by [`TraceLayer`].
#[derive(Clone)]
pub struct Trace<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for Trace<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Trace<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the middleware, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`Trace`]: the inner future, run inside the
    /// request's context, then the span and metrics finished.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        traced: Option<InFlight>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("traced", &self.traced.is_some())
            .finish_non_exhaustive()
    }
}

/// What a traced request carries until its response.
struct InFlight {
    cx: Context,
    active: Option<ActiveGuard>,
    route: Option<Cow<'static, str>>,
    /// A gRPC call: its status is in the response, not the HTTP status.
    grpc: bool,
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    E: fmt::Display,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, task: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(traced) = this.traced.as_ref() else {
            let result = std::task::ready!(this.inner.poll(task));
            return Poll::Ready(result.map(|res| res.map(ResponseBody::plain)));
        };
        let result = {
            let _attached = traced.cx.clone().attach();
            std::task::ready!(this.inner.poll(task))
        };
        let InFlight {
            cx,
            active,
            route,
            grpc,
        } = this.traced.take().expect("checked above");
        if let Some(active) = active {
            let status = result.as_ref().ok().map(|r| r.status().as_u16());
            active.finish(route, status);
        }
        Poll::Ready(finish(cx, grpc, result))
    }
}

pin_project_lite::pin_project! {
    /// Response body of [`Trace`]: the inner body, unchanged. For a gRPC
    /// call whose status comes in the trailers, the span ends when they
    /// arrive (or when the body ends or is dropped without them).
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        grpc: Option<Context>,
    }
}

impl<B> ResponseBody<B> {
    fn plain(inner: B) -> Self {
        ResponseBody { inner, grpc: None }
    }

    /// The inner body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("awaiting_grpc_status", &self.grpc.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        task: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(task));
        if this.grpc.is_some() {
            let done = match &frame {
                Some(Ok(f)) => f.trailers_ref().map(grpc_status),
                Some(Err(_)) => Some(GrpcEnd::BodyError),
                None => Some(GrpcEnd::NoStatus),
            };
            if let Some(end) = done
                && let Some(cx) = this.grpc.take()
            {
                end_grpc(&cx, end);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Trace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: fmt::Display,
    ReqBody: Body,
    ResBody: Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let (parts, body) = req.into_parts();
        let traced = shared.tracer.is_some() && shared.filter.as_ref().is_none_or(|f| f(&parts));
        if !traced {
            return ResponseFuture {
                inner: self.inner.call(Request::from_parts(parts, body)),
                traced: None,
            };
        }
        let find_route = |parts: &Parts| match &shared.route {
            Some(r) => r(parts),
            // What the router matched: axum's `MatchedPath` (when the
            // layer is added with `Router::layer`) or a `MatchedRoute`.
            None => cog_core::route::template(parts).map(|t| Cow::Owned(t.to_owned())),
        };
        let incoming = shared.propagation.extract(&parts.headers);
        let (cx, route, is_grpc) = match unsampled_fast_path(shared, incoming) {
            // Nothing is recorded: the route only matters to the metrics
            // (a route closure may allocate), gRPC status to nothing.
            Ok(cx) => {
                let route = shared.metrics.as_ref().and_then(|_| find_route(&parts));
                (cx, route, false)
            }
            Err(incoming) => {
                let route = find_route(&parts);
                let grpc = grpc_call(&parts);
                let request_size = body.size_hint().exact();
                let cx = start_span(shared, &parts, route.as_ref(), grpc, request_size, incoming);
                (cx, route, grpc.is_some())
            }
        };
        let active = shared
            .metrics
            .is_some()
            .then(|| ActiveGuard::start(shared.clone(), &parts.method, &parts));
        let inner = {
            // The inner service's `call` runs in the request's context too.
            let _attached = cx.clone().attach();
            self.inner.call(Request::from_parts(parts, body))
        };
        ResponseFuture {
            inner,
            traced: Some(InFlight {
                cx,
                active,
                route,
                grpc: is_grpc,
            }),
        }
    }
}

/// `http.server.request.duration` (s) and `http.server.active_requests`.
struct Metrics {
    duration: opentelemetry::metrics::Histogram<f64>,
    active: opentelemetry::metrics::UpDownCounter<i64>,
}

impl Metrics {
    /// The instruments of the global meter provider, or `None` while it is
    /// the API's no-op provider (no SDK installed): the layer then skips
    /// metrics entirely instead of timing requests and building attributes
    /// for instruments that drop them. Install the meter provider before
    /// building the layer (instruments taken from the no-op provider stay
    /// no-ops anyway).
    fn from_global() -> Option<Self> {
        Metrics::from_provider(&*opentelemetry::global::meter_provider())
    }

    fn from_provider(provider: &(dyn MeterProvider + Send + Sync)) -> Option<Self> {
        // The no-op provider is the one without state: any provider that
        // records has somewhere to put the records. (`dyn MeterProvider`
        // cannot be downcast; its size can be read.)
        if std::mem::size_of_val(provider) == 0 {
            return None;
        }
        let meter = provider.meter("cog-trace");
        Some(Metrics {
            duration: meter
                .f64_histogram("http.server.request.duration")
                .with_description("Duration of HTTP server requests")
                .with_unit("s")
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                ])
                .build(),
            active: meter
                .i64_up_down_counter("http.server.active_requests")
                .with_description("Number of active HTTP server requests")
                .with_unit("{request}")
                .build(),
        })
    }
}

impl ActiveGuard {
    /// Counts a request as active until finished or dropped.
    /// The layer must have metrics.
    fn start(shared: Arc<Shared>, method: &Method, parts: &Parts) -> ActiveGuard {
        let https = parts.uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let method = method_index(method);
        let attrs = &ACTIVE_ATTRS[method * 2 + usize::from(https)];
        if let Some(m) = &shared.metrics {
            m.active.add(1, attrs);
        }
        ActiveGuard {
            shared,
            started: quanta::Instant::now(),
            attrs,
            method: METHODS[method],
            scheme: if https { "https" } else { "http" },
            done: false,
        }
    }
}

/// `http.request.method` and `url.scheme` for every known method (and
/// `_OTHER`) and both schemes, built once: the active-requests
/// attributes, and the first two of the duration's, without building and
/// dropping them per request.
static ACTIVE_ATTRS: std::sync::LazyLock<Vec<[KeyValue; 2]>> = std::sync::LazyLock::new(|| {
    METHODS
        .iter()
        .flat_map(|m| {
            ["http", "https"].map(|scheme| {
                [
                    KeyValue::new("http.request.method", *m),
                    KeyValue::new("url.scheme", scheme),
                ]
            })
        })
        .collect()
});

/// One request in flight; holds the layer's shared state for the response
/// half.
struct ActiveGuard {
    shared: Arc<Shared>,
    started: quanta::Instant,
    attrs: &'static [KeyValue; 2],
    method: &'static str,
    scheme: &'static str,
    done: bool,
}

impl ActiveGuard {
    fn finish(mut self, route: Option<Cow<'static, str>>, status: Option<u16>) {
        self.done = true;
        let Some(metrics) = &self.shared.metrics else {
            return;
        };
        metrics.active.add(-1, self.attrs);
        // Built, not cloned from the table: a clone costs more than a new
        // pair of `&'static str`s.
        let mut attrs: smallvec::SmallVec<[KeyValue; 5]> = smallvec::smallvec![
            KeyValue::new("http.request.method", self.method),
            KeyValue::new("url.scheme", self.scheme),
        ];
        if let Some(r) = route {
            attrs.push(KeyValue::new("http.route", r));
        }
        match status {
            Some(s) => {
                attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
                if s >= 500 {
                    attrs.push(KeyValue::new("error.type", s.to_string()));
                }
            }
            None => attrs.push(KeyValue::new("error.type", "_OTHER")),
        }
        metrics
            .duration
            .record(self.started.elapsed().as_secs_f64(), &attrs);
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if !self.done {
            // Abandoned (the client went away): no longer active.
            if let Some(m) = &self.shared.metrics {
                m.active.add(-1, self.attrs);
            }
        }
    }
}

/// A `Send + Sync` handle on whatever the global propagator is.
#[derive(Debug)]
pub(crate) struct GlobalPropagator;

impl TextMapPropagator for GlobalPropagator {
    fn inject_context(
        &self,
        cx: &Context,
        injector: &mut dyn opentelemetry::propagation::Injector,
    ) {
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, injector))
    }

    fn extract_with_context(
        &self,
        cx: &Context,
        extractor: &dyn opentelemetry::propagation::Extractor,
    ) -> Context {
        opentelemetry::global::get_text_map_propagator(|p| p.extract_with_context(cx, extractor))
    }

    fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
        opentelemetry::propagation::text_map_propagator::FieldIter::new(&[])
    }
}

pub(crate) fn method_attr(method: &Method) -> (&'static str, bool) {
    let i = method_index(method);
    (METHODS[i], i + 1 < METHODS.len())
}

/// The known methods, then `_OTHER`.
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "_OTHER",
];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::HEAD => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        Method::CONNECT => 7,
        Method::TRACE => 8,
        _ => 9,
    }
}

/// When the layer knows the sampler and it will surely say "drop" (always
/// off; parent-based with an unsampled parent, or with no parent and an
/// always-off root), the request gets a non-recording span context with a
/// fresh span id — enough for the response `traceparent` and for child
/// calls to stay unsampled — without an SDK span, a tracer call or any
/// attribute. Ratio samplers always go through the SDK, so its decision
/// stays the only one.
fn unsampled_fast_path(shared: &Shared, incoming: Incoming) -> Result<Context, Incoming> {
    use crate::SamplerKind as K;
    use opentelemetry::trace::{SpanContext, TraceFlags};
    use opentelemetry_sdk::trace::IdGenerator as _;
    let Some(sampler) = shared.sampler else {
        return Err(incoming);
    };
    let none = SpanContext::empty_context();
    let parent = incoming.parent.as_ref().unwrap_or(&none);
    let drop = match sampler {
        K::AlwaysOff => true,
        K::ParentBasedAlwaysOn | K::ParentBasedTraceIdRatio(_) => {
            parent.is_valid() && !parent.is_sampled()
        }
        K::ParentBasedAlwaysOff => !parent.is_valid() || !parent.is_sampled(),
        _ => false,
    };
    if !drop {
        return Err(incoming);
    }
    let ids = opentelemetry_sdk::trace::RandomIdGenerator::default();
    let trace_id = if parent.is_valid() {
        parent.trace_id()
    } else {
        ids.new_trace_id()
    };
    let sc = SpanContext::new(
        trace_id,
        ids.new_span_id(),
        TraceFlags::default(),
        false,
        parent.trace_state().clone(),
    );
    Ok(incoming.rest.with_remote_span_context(sc))
}

/// Attributes an HTTP server span can carry (without captured headers):
/// two at the start, ten from the request, three from the response.
const HTTP_ATTRIBUTES: usize = 15;
/// What a gRPC call adds: `rpc.system`, `rpc.service`, `rpc.method` and
/// `rpc.grpc.status_code`.
const GRPC_ATTRIBUTES: usize = 4;

/// Starts the server span of a request the fast path could not settle.
/// Sampling happens first, on the name, kind and the two attributes
/// samplers commonly look at; everything else is only built for a span
/// that records.
fn start_span(
    shared: &Shared,
    parts: &Parts,
    route: Option<&Cow<'static, str>>,
    grpc: Option<(&str, &str)>,
    request_size: Option<u64>,
    incoming: Incoming,
) -> Context {
    let tracer = shared.tracer.as_ref().expect("checked by the caller");
    let (method, known) = method_attr(&parts.method);
    let name: std::borrow::Cow<'static, str> = match (grpc, route) {
        // `{rpc.service}/{rpc.method}`: the path without its slash.
        (Some(_), _) => parts.uri.path()[1..].to_owned().into(),
        (None, Some(r)) => {
            let mut n = String::with_capacity(method.len() + 1 + r.len());
            n.push_str(method);
            n.push(' ');
            n.push_str(r);
            n.into()
        }
        (None, None) => method.into(),
    };
    // Room for every attribute the span may get: the SDK keeps this vector
    // for a recorded span, so later attributes never reallocate it. No
    // more than that, either: 15 attributes stay under the allocator's
    // per-thread cache limit (1 KiB), 22 did not.
    let grpc_room = if grpc.is_some() { GRPC_ATTRIBUTES } else { 0 };
    let mut attrs = Vec::with_capacity(HTTP_ATTRIBUTES + grpc_room + shared.capture.len());
    attrs.push(KeyValue::new("http.request.method", method));
    if let Some(r) = route {
        // A `&'static str` route stays one: no allocation.
        attrs.push(KeyValue::new("http.route", r.clone()));
    }
    if let Some((service, rpc_method)) = grpc {
        attrs.push(KeyValue::new("rpc.system", "grpc"));
        attrs.push(KeyValue::new("rpc.service", service.to_owned()));
        attrs.push(KeyValue::new("rpc.method", rpc_method.to_owned()));
    }
    let mut builder = tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_attributes(attrs);
    let parent = if shared.public_endpoint {
        if let Some(remote) = incoming.parent {
            builder = builder.with_links(vec![Link::with_context(remote)]);
        }
        // Nothing from outside is trusted: no parent, no baggage.
        Context::new()
    } else {
        incoming.into_context()
    };
    let mut span = tracer.build_with_context(builder, &parent);
    if span.is_recording() {
        span.set_attributes(request_attributes(shared, parts, known, request_size));
    }
    // The context owns the span from here: handler code sees it as the
    // current span, and the layer ends it through the context.
    parent.with_span(span)
}

fn request_attributes(
    shared: &Shared,
    parts: &Parts,
    known_method: bool,
    request_size: Option<u64>,
) -> Vec<KeyValue> {
    let mut attrs = Vec::with_capacity(12 + shared.capture.len());
    if !known_method {
        attrs.push(KeyValue::new(
            "http.request.method_original",
            parts.method.as_str().to_owned(),
        ));
    }
    attrs.push(KeyValue::new("url.path", parts.uri.path().to_owned()));
    if let Some(q) = parts.uri.query() {
        let q = if shared.keep_query {
            q.to_owned()
        } else {
            redact_query(q)
        };
        attrs.push(KeyValue::new("url.query", q));
    }
    let scheme: Cow<'static, str> = match parts.uri.scheme_str() {
        None | Some("http") => "http".into(),
        Some("https") => "https".into(),
        Some(other) => other.to_owned().into(),
    };
    attrs.push(KeyValue::new("url.scheme", scheme));
    if let Some((host, port)) = server_address(parts) {
        attrs.push(KeyValue::new("server.address", host));
        if let Some(port) = port {
            attrs.push(KeyValue::new("server.port", i64::from(port)));
        }
    }
    if let Some(ip) = client_address(&parts.headers, parts, shared.trusted_hops) {
        attrs.push(KeyValue::new("client.address", ip));
    }
    if let Some(ua) = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        attrs.push(KeyValue::new("user_agent.original", ua.to_owned()));
    }
    let version = match parts.version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    attrs.push(KeyValue::new("network.protocol.version", version));
    if let Some(n) = request_size.or_else(|| content_length(&parts.headers)) {
        attrs.push(KeyValue::new("http.request.body.size", n as i64));
    }
    for name in &shared.capture {
        let values: Vec<opentelemetry::StringValue> = parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.to_owned().into())
            .collect();
        if !values.is_empty() {
            attrs.push(KeyValue::new(
                format!("http.request.header.{}", name.as_str()),
                opentelemetry::Value::Array(values.into()),
            ));
        }
    }
    attrs
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `a=1&b=2` → `a=REDACTED&b=REDACTED`: keys stay, values go. Byte
/// scans (`&` and `=` are ASCII), not `str::split`, whose searcher costs
/// ten times more on a short query.
pub(crate) fn redact_query(q: &str) -> String {
    // Exactly the size of the result: the attribute keeps it as a boxed
    // `str`, and spare capacity would cost a reallocation there.
    let (mut len, mut in_value) = (0, false);
    for b in q.bytes() {
        match b {
            b'&' => (len, in_value) = (len + 1, false),
            b'=' if !in_value => (len, in_value) = (len + "=REDACTED".len(), true),
            _ if !in_value => len += 1,
            _ => {}
        }
    }
    let mut out = String::with_capacity(len);
    let mut rest = q;
    loop {
        let end = rest.bytes().position(|b| b == b'&').unwrap_or(rest.len());
        let pair = &rest[..end];
        match pair.bytes().position(|b| b == b'=') {
            Some(eq) => {
                out.push_str(&pair[..eq]);
                out.push_str("=REDACTED");
            }
            None => out.push_str(pair),
        }
        if end == rest.len() {
            return out;
        }
        out.push('&');
        rest = &rest[end + 1..];
    }
}

/// `server.address` and `server.port`: from the URI (HTTP/2, proxies) or
/// the `Host` header.
fn server_address(parts: &Parts) -> Option<(String, Option<u16>)> {
    if let Some(host) = parts.uri.host() {
        return Some((host.to_owned(), parts.uri.port_u16()));
    }
    let host = parts.headers.get(header::HOST)?.to_str().ok()?;
    split_host_port(host).map(|(h, p)| (h.to_owned(), p))
}

/// `example.com:8443` → (`example.com`, 8443); `[::1]:80` → (`[::1]`, 80).
/// `None` for anything that is not a plausible host (a header is not
/// trusted to be well formed).
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match s.rfind(':') {
        // A colon inside brackets belongs to an IPv6 address.
        Some(i) if !s[i..].contains(']') => (&s[..i], Some(s[i + 1..].parse::<u16>().ok()?)),
        _ => (s, None),
    };
    let plausible = !host.is_empty()
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
        });
    plausible.then_some((host, port))
}

fn client_address(headers: &HeaderMap, parts: &Parts, trusted_hops: usize) -> Option<String> {
    let peer = parts.extensions.get::<SocketAddr>().map(|a| a.ip());
    if trusted_hops == 0 {
        return peer.map(|p| p.to_string());
    }
    let mut chain: Vec<String> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        chain.extend(v.to_str().ok()?.split(',').map(|s| s.trim().to_owned()));
    }
    if let Some(p) = peer {
        chain.push(p.to_string());
    }
    let idx = chain.len().checked_sub(trusted_hops + 1)?;
    chain.get(idx).cloned()
}

fn finish<B: Body, E: fmt::Display>(
    cx: Context,
    grpc: bool,
    result: Result<Response<B>, E>,
) -> Result<Response<ResponseBody<B>>, E> {
    let span = cx.span();
    let recording = span.is_recording();
    match result {
        Ok(mut res) => {
            let status = res.status();
            if recording {
                // One call (one lock of the span) for all of them.
                let code = KeyValue::new("http.response.status_code", i64::from(status.as_u16()));
                let size = res
                    .body()
                    .size_hint()
                    .exact()
                    .map(|n| KeyValue::new("http.response.body.size", n as i64));
                let error = status
                    .is_server_error()
                    .then(|| KeyValue::new("error.type", status.as_u16().to_string()));
                span.set_attributes([Some(code), size, error].into_iter().flatten());
                if status.is_server_error() {
                    span.set_status(Status::error(""));
                }
            }
            // The caller learns which trace served it: `traceparent` only
            // (baggage and trace state stay inside).
            let sc = span.span_context();
            if sc.is_valid() {
                let tp = traceparent(
                    sc.trace_id().to_bytes(),
                    sc.span_id().to_bytes(),
                    sc.trace_flags().to_u8(),
                );
                if let Ok(v) = http::HeaderValue::from_bytes(&tp) {
                    res.headers_mut().insert(TRACEPARENT, v);
                }
            }
            if !(grpc && status.is_success()) {
                if recording {
                    span.end();
                }
                return Ok(res.map(ResponseBody::plain));
            }
            // A trailers-only answer (how a handler's error goes out) has
            // the status in the headers; otherwise it comes last.
            if res.headers().contains_key("grpc-status") {
                end_grpc(&cx, grpc_status(res.headers()));
                return Ok(res.map(ResponseBody::plain));
            }
            let grpc = recording.then_some(cx);
            Ok(res.map(|inner| ResponseBody { inner, grpc }))
        }
        Err(e) => {
            if recording {
                span.set_attribute(KeyValue::new("error.type", "_OTHER"));
                span.set_status(Status::error(e.to_string()));
                span.end();
            }
            Err(e)
        }
    }
}

/// `(rpc.service, rpc.method)` of a gRPC request: `content-type:
/// application/grpc…` and a `/package.Service/Method` path.
fn grpc_call(parts: &Parts) -> Option<(&str, &str)> {
    if parts.method != Method::POST {
        return None;
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE)?.as_bytes();
    if !content_type.starts_with(b"application/grpc") {
        return None;
    }
    let (service, method) = parts.uri.path().strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// How a gRPC call ended.
enum GrpcEnd {
    /// `grpc-status` as sent (`None` when it is not a number).
    Status(Option<u32>),
    /// The body ended without trailers.
    NoStatus,
    /// The body failed.
    BodyError,
}

fn grpc_status(headers: &HeaderMap) -> GrpcEnd {
    GrpcEnd::Status(
        headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()),
    )
}

/// Records `rpc.grpc.status_code` and ends the span. For a server, the
/// codes that mean the server failed (UNKNOWN, DEADLINE_EXCEEDED,
/// UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS) set the status to
/// error; the others (a client's mistake, or OK) leave it unset.
fn end_grpc(cx: &Context, how: GrpcEnd) {
    let span = cx.span();
    if span.is_recording() {
        match how {
            GrpcEnd::Status(Some(code)) => {
                span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
                if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
                    span.set_attribute(KeyValue::new("error.type", code.to_string()));
                    span.set_status(Status::error(""));
                }
            }
            GrpcEnd::Status(None) | GrpcEnd::NoStatus => {
                span.set_attribute(KeyValue::new("error.type", "_OTHER"));
                span.set_status(Status::error("the call ended without a valid grpc-status"));
            }
            GrpcEnd::BodyError => {
                span.set_attribute(KeyValue::new("error.type", "_OTHER"));
                span.set_status(Status::error("the response body failed"));
            }
        }
    }
    end(&span);
}

/// Ends a recording span (ending one that does not record would only read
/// the clock).
fn end(span: &opentelemetry::trace::SpanRef<'_>) {
    if span.is_recording() {
        span.end();
    }
}

/// `00-<trace id>-<span id>-<flags>`, hex-encoded by hand (the formatter
/// machinery costs more than the rest of the header).
fn traceparent(trace: [u8; 16], span: [u8; 8], flags: u8) -> [u8; 55] {
    /// Each byte's two lower-case hex digits.
    const PAIRS: [[u8; 2]; 256] = {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [HEX[i >> 4], HEX[i & 15]];
            i += 1;
        }
        t
    };
    let mut out = [b'-'; 55];
    out[0] = b'0';
    out[1] = b'0';
    for (i, b) in trace.iter().enumerate() {
        out[3 + 2 * i..5 + 2 * i].copy_from_slice(&PAIRS[usize::from(*b)]);
    }
    for (i, b) in span.iter().enumerate() {
        out[36 + 2 * i..38 + 2 * i].copy_from_slice(&PAIRS[usize::from(*b)]);
    }
    out[53..55].copy_from_slice(&PAIRS[usize::from(flags)]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_skipped_only_for_the_no_op_provider() {
        let noop = opentelemetry::metrics::noop::NoopMeterProvider::new();
        assert!(Metrics::from_provider(&noop).is_none());
        let sdk = opentelemetry_sdk::metrics::SdkMeterProvider::builder().build();
        assert!(Metrics::from_provider(&sdk).is_some());
    }

    #[test]
    fn query_values_are_redacted() {
        assert_eq!(redact_query("a=1&b=2"), "a=REDACTED&b=REDACTED");
        assert_eq!(redact_query("flag&x=&=y"), "flag&x=REDACTED&=REDACTED");
        assert_eq!(redact_query(""), "");
        // As the obvious `split` version does it, over awkward inputs.
        let reference = |q: &str| {
            q.split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) => format!("{k}=REDACTED"),
                    None => pair.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("&")
        };
        for q in [
            "a",
            "&",
            "&&",
            "=",
            "a=",
            "=b",
            "a=1&",
            "&a=1",
            "a==b",
            "a=1=2&b",
            "é=ü&ß",
            "k=v&&k2",
            "x=%20&y=a+b",
            "🙂=🙃",
        ] {
            let redacted = redact_query(q);
            assert_eq!(redacted, reference(q), "{q}");
            assert_eq!(redacted.capacity(), redacted.len(), "{q}");
        }
    }

    #[test]
    fn host_header_is_split_defensively() {
        assert_eq!(
            split_host_port("api.example.com"),
            Some(("api.example.com", None))
        );
        assert_eq!(
            split_host_port("api.example.com:8443"),
            Some(("api.example.com", Some(8443)))
        );
        assert_eq!(split_host_port("[::1]:80"), Some(("[::1]", Some(80))));
        assert_eq!(split_host_port("[::1]"), Some(("[::1]", None)));
        for bad in ["", ":80", "a b", "host:99999", "host:port", "évil", "a/b"] {
            assert_eq!(split_host_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn traceparent_matches_the_w3c_format() {
        let tp = traceparent(
            [0xab; 16],
            [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
            1,
        );
        assert_eq!(
            std::str::from_utf8(&tp).unwrap(),
            format!("00-{}-0123456789abcdef-01", "ab".repeat(16))
        );
        // Against the formatter, over many values.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let trace = (u128::from(x) << 64 | u128::from(x.rotate_left(17))).to_be_bytes();
            let span = x.rotate_right(5).to_be_bytes();
            let tp = traceparent(trace, span, (x >> 3) as u8);
            assert_eq!(
                std::str::from_utf8(&tp).unwrap(),
                format!(
                    "00-{:032x}-{:016x}-{:02x}",
                    u128::from_be_bytes(trace),
                    u64::from_be_bytes(span),
                    (x >> 3) as u8
                )
            );
        }
    }
}
