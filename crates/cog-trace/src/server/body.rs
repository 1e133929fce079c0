//! [`ResponseBody`]: the inner body; for a gRPC call, the span ends with
//! its trailers.

use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http_body::Body;
use opentelemetry::Context;

use super::grpc::{GrpcEnd, end_grpc, grpc_status};

pin_project_lite::pin_project! {
    /// Response body of [`Trace`]: the inner body, unchanged. For a gRPC
    /// call whose status comes in the trailers, the span ends when they
    /// arrive (or when the body ends or is dropped without them).
    pub struct ResponseBody<B> {
        #[pin]
        pub(super) inner: B,
        pub(super) grpc: Option<Context>,
    }
}

impl<B> ResponseBody<B> {
    pub(super) fn plain(inner: B) -> Self {
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
