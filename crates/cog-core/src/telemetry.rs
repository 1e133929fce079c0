//! The OpenTelemetry spans cog's components open inside a request: an
//! internal span for each step (a rate-limit decision, a cache lookup, a
//! plugin call) and a client span for each Redis round trip.
//!
//! A [`Child`] is only ever a child: it is opened when the current
//! OpenTelemetry context holds a *sampled* span (the server span of
//! `cog_trace::server::TraceLayer`, or any span an application made current) and is
//! nothing otherwise — no tracer call, no allocation, one thread-local
//! read. Spans come from the global tracer provider, under the
//! instrumentation scope of the crate that opens them.
//!
//! Redis client spans follow the OpenTelemetry database conventions:
//! kind client, named `{db.operation.name}`, with `db.system.name =
//! "redis"`, `db.operation.name`, `server.address` and `server.port`; a
//! failed call sets the span status to error and `error.type`.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};

/// Whether the current context's span is sampled: the one condition under
/// which cog opens child spans.
pub fn current_is_sampled() -> bool {
    Context::map_current(|cx| cx.has_active_span() && cx.span().span_context().is_sampled())
}

/// The current context, when its span is sampled: to make current again
/// on another thread or task, so spans opened there join the trace.
pub fn sampled_context() -> Option<Context> {
    current_is_sampled().then(Context::current)
}

/// `fut`, polled with the current context (when its span is sampled) made
/// current again: for work handed to `tokio::spawn`.
pub fn carry<F: Future>(fut: F) -> InSpan<F> {
    InSpan {
        inner: fut,
        cx: sampled_context(),
    }
}

/// Where a Redis client span says the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// `server.address`: host name or IP.
    pub address: String,
    /// `server.port`.
    pub port: u16,
}

/// A span under the current one, or nothing when the current span is not
/// sampled. Ends when dropped (or with [`Child::end`]).
#[derive(Debug, Default)]
#[must_use = "a child span ends when dropped"]
pub struct Child {
    cx: Option<Context>,
}

impl Child {
    /// An internal span named `name`, under the instrumentation scope
    /// `scope` (the crate's name).
    pub fn internal(scope: &'static str, name: &'static str) -> Child {
        Child::open(scope, name.into(), SpanKind::Internal, Vec::new)
    }

    /// A Redis client span for `operation` (`EVALSHA`, `GET`, …) against
    /// the server `peer` finds (called only when the span is opened).
    pub fn redis(
        scope: &'static str,
        operation: &'static str,
        peer: impl FnOnce() -> Option<Peer>,
    ) -> Child {
        Child::open(scope, operation.into(), SpanKind::Client, || {
            let mut attrs = Vec::with_capacity(4);
            attrs.push(KeyValue::new("db.system.name", "redis"));
            attrs.push(KeyValue::new("db.operation.name", operation));
            if let Some(p) = peer() {
                attrs.push(KeyValue::new("server.address", p.address));
                attrs.push(KeyValue::new("server.port", i64::from(p.port)));
            }
            attrs
        })
    }

    fn open(
        scope: &'static str,
        name: Cow<'static, str>,
        kind: SpanKind,
        attrs: impl FnOnce() -> Vec<KeyValue>,
    ) -> Child {
        if !current_is_sampled() {
            return Child { cx: None };
        }
        let parent = Context::current();
        let tracer = opentelemetry::global::tracer(scope);
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attrs())
            .start_with_context(&tracer, &parent);
        Child {
            cx: Some(parent.with_span(span)),
        }
    }

    /// Whether there is a span (the parent was sampled).
    pub fn is_recording(&self) -> bool {
        self.cx.is_some()
    }

    /// Sets the attribute `make` builds (only called for a real span).
    pub fn set(&self, make: impl FnOnce() -> KeyValue) {
        if let Some(cx) = &self.cx {
            cx.span().set_attribute(make());
        }
    }

    /// Marks the span failed: status error with `description`, and
    /// `error.type`.
    pub fn fail(&self, error_type: &'static str, description: impl FnOnce() -> String) {
        if let Some(cx) = &self.cx {
            let span = cx.span();
            span.set_attribute(KeyValue::new("error.type", error_type));
            span.set_status(Status::error(description()));
        }
    }

    /// The span's context, to make current where work continues on
    /// another thread (`let _g = child.context().attach()`).
    pub fn context(&self) -> Context {
        self.cx.clone().unwrap_or_else(Context::current)
    }

    /// Runs `fut` with this span as the current one at every poll (spans
    /// opened inside become its children). Free when there is no span.
    pub fn wrap<F: Future>(&self, fut: F) -> InSpan<F> {
        InSpan {
            inner: fut,
            cx: self.cx.clone(),
        }
    }

    /// Ends the span now.
    pub fn end(self) {}
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(cx) = self.cx.take() {
            cx.span().end();
        }
    }
}

pin_project_lite::pin_project! {
    /// A future polled with a span as the current context
    /// ([`Child::wrap`]).
    #[derive(Debug)]
    pub struct InSpan<F> {
        #[pin]
        inner: F,
        cx: Option<Context>,
    }
}

impl<F: Future> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, task: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _attached = this.cx.as_ref().map(|cx| cx.clone().attach());
        this.inner.poll(task)
    }
}

/// The server a fred client talks to, for `server.address` and
/// `server.port`: the one connected server (a standalone server, or the
/// primary a Sentinel named); else the configured server, or the first
/// configured cluster node.
#[cfg(feature = "fred")]
pub fn redis_peer(client: &impl fred::interfaces::ClientLike) -> Option<Peer> {
    use fred::types::config::ServerConfig;
    let peer = |s: &fred::types::config::Server| Peer {
        address: s.host.to_string(),
        port: s.port,
    };
    let connected = client.active_connections();
    if let [one] = connected.as_slice() {
        return Some(peer(one));
    }
    match &client.client_config().server {
        ServerConfig::Centralized { server } => Some(peer(server)),
        ServerConfig::Clustered { hosts, .. } => hosts.first().map(peer),
        _ => connected.first().map(peer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    fn remote(sampled: bool) -> Context {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(7),
            SpanId::from(9),
            flags,
            true,
            TraceState::default(),
        ))
    }

    #[test]
    fn nothing_is_opened_without_a_sampled_parent() {
        assert!(!Child::internal("t", "x").is_recording());
        let _g = remote(false).attach();
        assert!(!Child::redis("t", "GET", || unreachable!("not asked")).is_recording());
    }

    #[test]
    fn a_sampled_parent_gets_a_child() {
        let _g = remote(true).attach();
        let child = Child::internal("t", "x");
        assert!(child.is_recording());
        // The child's context carries the parent's trace.
        assert_eq!(
            child.context().span().span_context().trace_id(),
            TraceId::from(7)
        );
    }
}
