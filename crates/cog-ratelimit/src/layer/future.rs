//! [`ResponseFuture`]: the response future of [`RateLimit`](super::RateLimit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;

use super::body::{RateLimitBody, Slots};
use crate::decision::Decision;
use crate::quota::Quota;

pin_project_lite::pin_project! {
    /// Response future of [`RateLimit`](super::RateLimit).
    ///
    /// A decision made without waiting (an in-memory store, a live lease,
    /// a cached denial) needs no box: the answer itself, or the inner
    /// service's future with the headers to add to its response. A decision
    /// that waits on the store is boxed with the inner call.
    #[project = Proj]
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, B, E> {
        Admitted {
            #[pin]
            fut: F,
            admitted: Option<Admitted>,
        },
        Answered {
            answer: Option<Response<RateLimitBody<B>>>,
        },
        Deciding {
            #[pin]
            fut: cog_core::ResponseFuture<RateLimitBody<B>, E>,
        },
    }
}

/// What an admitted request's response gets.
pub(super) struct Admitted {
    pub(super) quota: Quota,
    pub(super) decision: Decision,
    pub(super) slots: Slots,
    /// Shadow mode: no headers.
    pub(super) shadow: bool,
}

impl<F, B, E> ResponseFuture<F, B, E> {
    /// Admitted without waiting: `fut` is the inner service's.
    pub(super) fn admitted(fut: F, admitted: Admitted) -> Self {
        ResponseFuture {
            state: State::Admitted {
                fut,
                admitted: Some(admitted),
            },
        }
    }

    /// Answered without calling the inner service (refused).
    pub(super) fn answered(answer: Response<RateLimitBody<B>>) -> Self {
        ResponseFuture {
            state: State::Answered {
                answer: Some(answer),
            },
        }
    }

    /// Decided asynchronously.
    pub(super) fn deciding(fut: cog_core::ResponseFuture<RateLimitBody<B>, E>) -> Self {
        ResponseFuture {
            state: State::Deciding { fut },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<RateLimitBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Admitted { fut, admitted } => {
                let response = ready!(fut.poll(cx))?;
                let Admitted {
                    quota,
                    decision,
                    slots,
                    shadow,
                } = admitted.take().expect("polled after completion");
                let mut response = response.map(|b| RateLimitBody::holding(b, slots));
                if !shadow {
                    super::service::add_headers(response.headers_mut(), &quota, &decision);
                }
                Poll::Ready(Ok(response))
            }
            StateProj::Answered { answer } => {
                Poll::Ready(Ok(answer.take().expect("polled after completion")))
            }
            StateProj::Deciding { fut } => fut.poll(cx),
        }
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
