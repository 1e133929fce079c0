//! Inner services for testing middleware.

use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use tower_service::Service;

/// A service that is not ready until [`open`](Self::open)ed (as a
/// concurrency limit or a full buffer is not), then answers `200` with a
/// default body `B`. Clones share the gate.
pub struct Gate<B> {
    open: Arc<AtomicBool>,
    _body: PhantomData<fn() -> B>,
}

impl<B> Gate<B> {
    /// A closed gate.
    pub fn new() -> Self {
        Gate {
            open: Arc::default(),
            _body: PhantomData,
        }
    }

    /// Ready from now on.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl<B> Default for Gate<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B> Clone for Gate<B> {
    fn clone(&self) -> Self {
        Gate {
            open: self.open.clone(),
            _body: PhantomData,
        }
    }
}

impl<B> fmt::Debug for Gate<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("open", &self.open.load(Ordering::SeqCst))
            .finish()
    }
}

impl<R, B: Default> Service<Request<R>> for Gate<B> {
    type Response = Response<B>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<B>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.open.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, _: Request<R>) -> Self::Future {
        std::future::ready(Ok(Response::new(B::default())))
    }
}

/// Asserts that `svc`, a middleware over `gate`, is ready exactly when its
/// inner service is: pending while `gate` is closed, ready once it is
/// opened (this opens it). A layer that answered ready on its own would
/// call its inner service unready, defeating its backpressure.
pub fn assert_ready_with_inner<S, R, B>(svc: &mut S, gate: &Gate<B>)
where
    S: Service<R>,
    S::Error: fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        svc.poll_ready(&mut cx).is_pending(),
        "ready while the inner service is not"
    );
    gate.open();
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => panic!("not ready once the inner service is: {e:?}"),
        Poll::Pending => panic!("still pending once the inner service is ready"),
    }
}
