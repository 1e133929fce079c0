//! [`ResponseFuture`]: the inner future in the request's context, then
//! the span and metrics finished.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http::Response;
use http_body::Body;
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};

use super::active::ActiveGuard;
use super::body::ResponseBody;
use super::grpc::{end_grpc, grpc_status};
use crate::propagation::traceparent;

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

pin_project_lite::pin_project! {
    /// Response future of [`Trace`]: the inner future, run inside the
    /// request's context, then the span and metrics finished.
    pub struct ResponseFuture<F> {
        #[pin]
        pub(super) inner: F,
        pub(super) traced: Option<InFlight>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("traced", &self.traced.is_some())
            .finish_non_exhaustive()
    }
}

/// What a traced request carries until its response (small: it is moved
/// with the future).
pub(super) struct InFlight {
    pub(super) cx: Context,
    /// The metrics' part, with the route.
    pub(super) active: Option<ActiveGuard>,
    /// A gRPC call: its status is in the response, not the HTTP status.
    pub(super) grpc: bool,
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
        let InFlight { cx, active, grpc } = this.traced.take().expect("checked above");
        if let Some(active) = active {
            let status = result.as_ref().ok().map(|r| r.status().as_u16());
            active.finish(status);
        }
        Poll::Ready(finish(cx, grpc, result))
    }
}

/// Finishes the span with the answer (or the error) and wraps its body.
/// The answer is annotated where it lies and moved once, into the result:
/// a response is large, and every move is a copy.
fn finish<B: Body, E: fmt::Display>(
    cx: Context,
    grpc: bool,
    mut result: Result<Response<B>, E>,
) -> Result<Response<ResponseBody<B>>, E> {
    let body_ends_span = match &mut result {
        Ok(res) => answered(&cx, grpc, res),
        Err(e) => {
            let span = cx.span();
            if span.is_recording() {
                span.set_attribute(KeyValue::new("error.type", "_OTHER"));
                span.set_status(Status::error(e.to_string()));
                span.end();
            }
            false
        }
    };
    // Only a recorded gRPC call still waiting for its status keeps the
    // context, so that the trailers end the span.
    let grpc = body_ends_span.then_some(cx);
    result.map(|res| res.map(|inner| ResponseBody { inner, grpc }))
}

/// Records the answer on the span and writes its `traceparent`; says
/// whether the span stays open until the body's trailers (a recorded gRPC
/// call whose status is not in the headers).
fn answered<B: Body>(cx: &Context, grpc: bool, res: &mut Response<B>) -> bool {
    let span = cx.span();
    let recording = span.is_recording();
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
    // (baggage and trace state stay inside). Not when there is no server
    // span: a no-op tracer (tracing disabled, or no pipeline installed)
    // hands out the caller's own context, remote, which would only echo
    // the caller's `traceparent`.
    let sc = span.span_context();
    if sc.is_valid() && !sc.is_remote() {
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
        return false;
    }
    // A trailers-only answer (how a handler's error goes out) has the
    // status in the headers; otherwise it comes last.
    if res.headers().contains_key("grpc-status") {
        end_grpc(cx, grpc_status(res.headers()));
        return false;
    }
    recording
}
