//! The response body of [`RateLimit`](super::RateLimit): the inner body,
//! holding the request's concurrency slots until it ends.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::store::{Lease, Store};

pin_project! {
    /// The inner service's response body. For a quota with a concurrency
    /// limit it holds the request's slots and gives them back when the
    /// body ends — its last frame, an error, or the body dropped unread —
    /// so a streaming response counts as in flight until it is done.
    pub struct RateLimitBody<B> {
        #[pin]
        inner: B,
        slots: Slots,
    }
}

impl<B> RateLimitBody<B> {
    pub(crate) fn new(inner: B) -> Self {
        RateLimitBody {
            inner,
            slots: Slots(None),
        }
    }

    pub(crate) fn holding(inner: B, slots: Slots) -> Self {
        RateLimitBody { inner, slots }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Consumes the wrapper, returning the inner body (and giving the
    /// slots back now).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Default> Default for RateLimitBody<B> {
    fn default() -> Self {
        RateLimitBody::new(B::default())
    }
}

impl<B: fmt::Debug> fmt::Debug for RateLimitBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitBody")
            .field("inner", &self.inner)
            .field("holds_slots", &self.slots.0.is_some())
            .finish()
    }
}

impl<B: Body> Body for RateLimitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(None | Some(Err(_))) => this.slots.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.slots.release(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Concurrency slots to give back once; on drop at the latest.
pub(crate) struct Slots(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Slots {
    /// Gives `lease` back to `store` when released (or dropped).
    pub(crate) fn of<St: Store + Clone>(store: &St, lease: Option<Lease>) -> Self {
        Slots(lease.map(|lease| {
            let store = store.clone();
            Box::new(move || store.release(lease)) as Box<dyn FnOnce() + Send + Sync>
        }))
    }

    fn release(&mut self) {
        if let Some(give_back) = self.0.take() {
            give_back();
        }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        self.release();
    }
}
