//! The client layer: one span per outgoing request, context injected.

use std::fmt;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::{Request, Response};
use opentelemetry::global::BoxedTracer;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use tower_layer::Layer;
use tower_service::Service;

use crate::attributes::{method_attr, redact_query};
use crate::propagation::GlobalPropagator;
use crate::propagation::HeaderInjector;

/// Traces outgoing requests (hyper, reqwest-via-tower, any tower HTTP
/// client): a client span per request, child of the current context, whose
/// context is injected into the request headers.
#[derive(Clone)]
pub struct ClientTraceLayer {
    shared: Arc<ClientShared>,
}

struct ClientShared {
    tracer: Option<BoxedTracer>,
    propagator: Arc<dyn TextMapPropagator + Send + Sync>,
}

impl fmt::Debug for ClientTraceLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTraceLayer").finish_non_exhaustive()
    }
}

impl Default for ClientTraceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientTraceLayer {
    /// Uses the global tracer provider and propagator as they are now.
    pub fn new() -> Self {
        ClientTraceLayer {
            shared: Arc::new(ClientShared {
                tracer: Some(opentelemetry::global::tracer("cog-trace")),
                propagator: Arc::new(GlobalPropagator),
            }),
        }
    }

    /// Uses this pipeline's tracer and propagator.
    pub fn from_guard(guard: &crate::TraceGuard) -> Self {
        ClientTraceLayer {
            shared: Arc::new(ClientShared {
                tracer: guard
                    .tracer("cog-trace")
                    .map(|t| BoxedTracer::new(Box::new(t))),
                propagator: guard.propagator(),
            }),
        }
    }
}

impl<S> Layer<S> for ClientTraceLayer {
    type Service = ClientTrace<S>;

    fn layer(&self, inner: S) -> ClientTrace<S> {
        ClientTrace {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Middleware built by [`ClientTraceLayer`].
#[derive(Clone)]
pub struct ClientTrace<S> {
    inner: S,
    shared: Arc<ClientShared>,
}

cog_core::inner_service!(ClientTrace<S>);

impl<S: fmt::Debug> fmt::Debug for ClientTrace<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTrace")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Response future of [`ClientTrace`].
pub type ResponseFuture<B, E> = cog_core::ResponseFuture<B, E>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ClientTrace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Display + Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let Some(tracer) = &self.shared.tracer else {
            return ResponseFuture::new(self.inner.call(req));
        };
        let (method, _) = method_attr(req.method());
        let parent = Context::current();
        let builder = tracer
            .span_builder(method)
            .with_kind(SpanKind::Client)
            .with_attributes([KeyValue::new("http.request.method", method)]);
        let mut span = tracer.build_with_context(builder, &parent);
        if span.is_recording() {
            let uri = req.uri();
            // The origin: the URI's authority, else the `Host` header (a
            // request in origin form, as a client bound to one backend
            // sends).
            let authority = uri.authority().cloned().or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
            });
            let scheme = uri.scheme_str().unwrap_or("http");
            let mut attrs = Vec::with_capacity(4);
            let mut full = String::new();
            if let Some(authority) = &authority {
                attrs.push(KeyValue::new("server.address", authority.host().to_owned()));
                let port = authority.port_u16().or(match scheme {
                    "https" => Some(443),
                    "http" => Some(80),
                    _ => None,
                });
                if let Some(port) = port {
                    attrs.push(KeyValue::new("server.port", i64::from(port)));
                }
                // Credentials in the URI never reach a span (semantic
                // conventions: both parts become `REDACTED`).
                let (credentials, host) = match authority.as_str().rsplit_once('@') {
                    Some((_, host)) => ("REDACTED:REDACTED@", host),
                    None => ("", authority.as_str()),
                };
                full = format!("{scheme}://{credentials}{host}");
            }
            // Without any origin, the reference as requested (never
            // `http:///path`, which names no host).
            full.push_str(uri.path());
            if let Some(q) = uri.query() {
                full.push('?');
                full.push_str(&redact_query(q));
            }
            attrs.push(KeyValue::new("url.full", full));
            span.set_attributes(attrs);
        }
        let cx = parent.with_span(span);
        self.shared
            .propagator
            .inject_context(&cx, &mut HeaderInjector(req.headers_mut()));
        let fut = self.inner.call(req);
        ResponseFuture::new(async move {
            let result = fut.await;
            let span = cx.span();
            match &result {
                Ok(res) => {
                    let status = res.status();
                    span.set_attribute(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status.as_u16()),
                    ));
                    // For a client, 4xx is a failure too.
                    if status.is_client_error() || status.is_server_error() {
                        span.set_attribute(KeyValue::new(
                            "error.type",
                            status.as_u16().to_string(),
                        ));
                        span.set_status(Status::error(""));
                    }
                }
                Err(e) => {
                    span.set_attribute(KeyValue::new("error.type", "_OTHER"));
                    span.set_status(Status::error(e.to_string()));
                }
            }
            span.end();
            result
        })
    }
}

impl<S> ClientTrace<S> {
    /// `inner`, traced with the settings of [`ClientTraceLayer::new`].
    pub fn new(inner: S) -> Self {
        ClientTraceLayer::new().layer(inner)
    }

    /// The layer of this service: [`ClientTraceLayer::new`].
    pub fn layer() -> ClientTraceLayer {
        ClientTraceLayer::new()
    }
}
