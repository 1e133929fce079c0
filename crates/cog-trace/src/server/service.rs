//! [`Trace`]: the service, and how a request's span starts.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::request::Parts;
use http::{Request, Response, Version, header};
use http_body::Body;
use opentelemetry::trace::{Link, Span as _, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use tower_service::Service;

use super::active::ActiveGuard;
use super::body::ResponseBody;
use super::future::{InFlight, ResponseFuture};
use super::grpc::grpc_call;
use super::shared::Shared;
use crate::attributes::{
    client_address, content_length, method_attr, redact_query, server_address,
};
use crate::propagation::Incoming;

/// Middleware built by [`TraceLayer`](super::TraceLayer).
#[derive(Clone)]
pub struct Trace<S> {
    pub(super) inner: S,
    pub(super) shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for Trace<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

cog_core::inner_service!(Trace<S>);

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
        let shared = &*self.shared;
        if shared.tracer.is_none() {
            return ResponseFuture {
                inner: self.inner.call(req),
                traced: None,
            };
        }
        if shared.filter.is_none() && shared.metrics.is_none() {
            // Only the headers are read: an unsampled request goes on as
            // it came, without taking it apart.
            let incoming = shared.propagation.extract(req.headers());
            return match unsampled_fast_path(shared, incoming) {
                Ok(cx) => enter(&mut self.inner, req, cx, None, false),
                Err(incoming) => {
                    let (parts, body) = req.into_parts();
                    let (cx, _, grpc) = start_span(shared, &parts, &body, incoming);
                    enter(
                        &mut self.inner,
                        Request::from_parts(parts, body),
                        cx,
                        None,
                        grpc,
                    )
                }
            };
        }
        let (parts, body) = req.into_parts();
        if !shared.filter.as_ref().is_none_or(|f| f(&parts)) {
            return ResponseFuture {
                inner: self.inner.call(Request::from_parts(parts, body)),
                traced: None,
            };
        }
        let incoming = shared.propagation.extract(&parts.headers);
        let (cx, route, grpc) = match unsampled_fast_path(shared, incoming) {
            // Nothing is recorded: the route only matters to the metrics
            // (a route closure may allocate), gRPC status to nothing.
            Ok(cx) => (
                cx,
                shared.metrics.as_ref().and_then(|_| route(shared, &parts)),
                false,
            ),
            Err(incoming) => start_span(shared, &parts, &body, incoming),
        };
        let active = shared
            .metrics
            .is_some()
            .then(|| ActiveGuard::start(self.shared.clone(), &parts, route));
        enter(
            &mut self.inner,
            Request::from_parts(parts, body),
            cx,
            active,
            grpc,
        )
    }
}

/// Calls the inner service in the request's context (its `call` runs
/// there too), and carries the context to the response.
fn enter<S, ReqBody, ResBody>(
    inner: &mut S,
    req: Request<ReqBody>,
    cx: Context,
    active: Option<ActiveGuard>,
    grpc: bool,
) -> ResponseFuture<S::Future>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    let inner = {
        let _attached = cx.clone().attach();
        inner.call(req)
    };
    ResponseFuture {
        inner,
        traced: Some(InFlight { cx, active, grpc }),
    }
}

/// The request's route template: the layer's route function, or what the
/// router matched (axum's `MatchedPath` when the layer is added with
/// `Router::layer`, or a `MatchedRoute`).
fn route(shared: &Shared, parts: &Parts) -> Option<Cow<'static, str>> {
    match &shared.route {
        Some(r) => r(parts),
        None => cog_core::route::template(parts).map(|t| Cow::Owned(t.to_owned())),
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
/// Returns the request's context, its route and whether it is a gRPC call.
fn start_span<B: Body>(
    shared: &Shared,
    parts: &Parts,
    body: &B,
    incoming: Incoming,
) -> (Context, Option<Cow<'static, str>>, bool) {
    let tracer = shared.tracer.as_ref().expect("checked by the caller");
    let route = route(shared, parts);
    let grpc = grpc_call(parts);
    let request_size = body.size_hint().exact();
    let (method, known) = method_attr(&parts.method);
    let name: std::borrow::Cow<'static, str> = match (grpc, &route) {
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
    if let Some(r) = &route {
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
    (parent.with_span(span), route, grpc.is_some())
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
