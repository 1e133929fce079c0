//! The response future shared by cog's tower layers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

/// The response future of a cog middleware: the middleware's own async
/// work (a store round trip, a cache lookup, span bookkeeping) and the
/// inner service's future, boxed once per request.
pub struct ResponseFuture<B, E> {
    inner: Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>,
}

impl<B, E> ResponseFuture<B, E> {
    /// Boxes `fut`.
    pub fn new(fut: impl Future<Output = Result<Response<B>, E>> + Send + 'static) -> Self {
        ResponseFuture {
            inner: Box::pin(fut),
        }
    }
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<B>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
