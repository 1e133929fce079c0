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

    /// Whether it still holds concurrency slots.
    pub fn holds(&self) -> bool {
        self.slots.0.is_some()
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
            .field("holds_slots", &self.holds())
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body::Frame;

    use super::*;
    use crate::store::StoreError;
    use crate::store::memory::MemoryStore;
    use crate::{Decision, Limit, Quota};

    /// A store that counts what it is given back (and decides nothing).
    #[derive(Clone, Default)]
    struct Counting(Arc<AtomicUsize>);

    impl Store for Counting {
        async fn check(&self, _: &str, _: &Quota, _: u64) -> Result<Decision, StoreError> {
            unreachable!()
        }
        async fn inspect(&self, _: &str, _: &Quota) -> Result<Decision, StoreError> {
            unreachable!()
        }
        async fn reset(&self, _: &str, _: &Quota) -> Result<(), StoreError> {
            unreachable!()
        }
        fn release(&self, _: Lease) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn slots(store: &Counting) -> Slots {
        let quota = Quota::single(Limit::concurrency(10)).unwrap();
        let lease = MemoryStore::new()
            .check_now("s", &quota, 1)
            .unwrap()
            .take_lease();
        assert!(lease.is_some());
        Slots::of(store, lease)
    }

    /// A body of `frames` data frames, then (if `fail`) an error.
    struct Frames {
        left: Vec<&'static str>,
        fail: bool,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            if self.left.is_empty() {
                let fail = std::mem::take(&mut self.fail);
                return Poll::Ready(fail.then_some(Err("broken")));
            }
            let next = self.left.remove(0);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(next.as_bytes())))))
        }

        fn is_end_stream(&self) -> bool {
            self.left.is_empty() && !self.fail
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.left.iter().map(|s| s.len() as u64).sum())
        }
    }

    fn poll(body: &mut RateLimitBody<impl Body + Unpin>) -> Option<bool> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        match Pin::new(body).poll_frame(&mut cx) {
            Poll::Ready(Some(r)) => Some(r.is_ok()),
            Poll::Ready(None) => None,
            Poll::Pending => unreachable!(),
        }
    }

    #[test]
    fn slots_go_back_at_the_last_frame_once() {
        let store = Counting::default();
        let mut body = RateLimitBody::holding(
            Frames {
                left: vec!["a", "b"],
                fail: false,
            },
            slots(&store),
        );
        assert_eq!(body.size_hint().exact(), Some(2));
        assert_eq!(poll(&mut body), Some(true));
        assert!(!body.is_end_stream());
        assert_eq!(store.0.load(Ordering::SeqCst), 0);
        // The last frame ends the stream: given back without waiting for
        // the `None` a client may never poll for.
        assert_eq!(poll(&mut body), Some(true));
        assert!(body.is_end_stream());
        assert_eq!(store.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut body), None);
        drop(body);
        assert_eq!(store.0.load(Ordering::SeqCst), 1, "given back twice");
    }

    #[test]
    fn slots_go_back_on_an_error_and_on_drop() {
        let store = Counting::default();
        let mut body = RateLimitBody::holding(
            Frames {
                left: vec![],
                fail: true,
            },
            slots(&store),
        );
        assert_eq!(poll(&mut body), Some(false));
        assert_eq!(store.0.load(Ordering::SeqCst), 1);

        let store = Counting::default();
        let body = RateLimitBody::holding(
            Frames {
                left: vec!["unread"],
                fail: false,
            },
            slots(&store),
        );
        assert_eq!(format!("{:?}", body.holds()), "true");
        drop(body);
        assert_eq!(store.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_body_without_slots_passes_through() {
        let body: RateLimitBody<http_body_util::Full<Bytes>> = RateLimitBody::default();
        assert!(body.is_end_stream());
        assert!(!body.holds());
        assert!(format!("{body:?}").contains("holds_slots: false"));
        let inner =
            RateLimitBody::new(http_body_util::Full::new(Bytes::from_static(b"x"))).into_inner();
        assert_eq!(inner.size_hint().exact(), Some(1));
    }
}
