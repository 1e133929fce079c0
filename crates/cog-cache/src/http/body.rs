//! [`CacheBody`]: what [`HttpCache`](super::HttpCache) answers with.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// The response body of [`HttpCache`](super::HttpCache): a stored (or
    /// buffered) answer's bytes, or the inner service's body passed
    /// through.
    ///
    /// It can be built from [`Bytes`] (and is empty by default), so a layer
    /// outside the cache that rewrites bodies — one that needs
    /// `ResBody: From<Bytes>`, like cog-sandbox's plugins — takes it as it
    /// is, without boxing it into another body type on every response.
    pub struct CacheBody<B> {
        #[pin]
        inner: Inner<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        Stored { #[pin] full: Full<Bytes> },
        Passed { #[pin] tee: Tee<B> },
    }
}

pin_project_lite::pin_project! {
    /// The inner service's body, passed through — and, for a response the
    /// cache stores once its body has ended, copied on the way.
    pub(super) struct Tee<B> {
        #[pin]
        body: B,
        copy: Option<Box<Copying>>,
    }
}

/// The copy a [`Tee`] makes of a body of unknown length, handed to `done`
/// once the body has ended — unless it grew past `max` or failed first.
pub(super) struct Copying {
    bytes: BytesMut,
    max: usize,
    done: Box<dyn FnOnce(Bytes) + Send>,
}

impl Copying {
    pub(super) fn new(max: usize, done: impl FnOnce(Bytes) + Send + 'static) -> Self {
        Copying {
            bytes: BytesMut::new(),
            max,
            done: Box::new(done),
        }
    }
}

impl<B: Body<Data = Bytes>> Tee<B> {
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = std::task::ready!(this.body.as_mut().poll_frame(cx));
        if this.copy.is_none() {
            return Poll::Ready(polled);
        }
        match &polled {
            Some(Ok(frame)) => {
                if let (Some(data), Some(copy)) = (frame.data_ref(), this.copy.as_mut()) {
                    if copy.bytes.len() + data.len() > copy.max {
                        *this.copy = None;
                    } else {
                        copy.bytes.extend_from_slice(data);
                    }
                }
                // A server may stop polling once the body says it has
                // ended, without waiting for the `None`.
                if this.body.is_end_stream() {
                    finish(this.copy);
                }
            }
            Some(Err(_)) => *this.copy = None,
            None => finish(this.copy),
        }
        Poll::Ready(polled)
    }
}

fn finish(copy: &mut Option<Box<Copying>>) {
    if let Some(copy) = copy.take() {
        (copy.done)(copy.bytes.freeze());
    }
}

impl<B> CacheBody<B> {
    /// A body of these bytes.
    pub fn stored(bytes: Bytes) -> Self {
        CacheBody {
            inner: Inner::Stored {
                full: Full::new(bytes),
            },
        }
    }

    /// The inner service's body, passed through.
    pub fn passed(body: B) -> Self {
        CacheBody {
            inner: Inner::Passed {
                tee: Tee { body, copy: None },
            },
        }
    }

    /// The inner service's body, passed through and copied: `copy` gets
    /// the whole body once it has ended.
    pub(super) fn copied(body: B, copy: Copying) -> Self {
        CacheBody {
            inner: Inner::Passed {
                tee: Tee {
                    body,
                    copy: Some(Box::new(copy)),
                },
            },
        }
    }

    /// Whether this is the inner service's body passed through (not bytes
    /// the cache holds).
    pub fn is_passed(&self) -> bool {
        matches!(self.inner, Inner::Passed { .. })
    }
}

impl<B> From<Bytes> for CacheBody<B> {
    fn from(bytes: Bytes) -> Self {
        CacheBody::stored(bytes)
    }
}

impl<B> Default for CacheBody<B> {
    /// No bytes.
    fn default() -> Self {
        CacheBody::stored(Bytes::new())
    }
}

impl<B> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBody")
            .field("passed", &self.is_passed())
            .finish_non_exhaustive()
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().inner.project() {
            InnerProj::Stored { full } => full.poll_frame(cx).map_err(|never| match never {}),
            InnerProj::Passed { tee } => tee.poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Stored { full } => full.is_end_stream(),
            Inner::Passed { tee } => tee.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Stored { full } => full.size_hint(),
            Inner::Passed { tee } => tee.body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn either_side_reads_as_its_bytes() {
        let stored: CacheBody<Full<Bytes>> = CacheBody::from(Bytes::from_static(b"kept"));
        assert!(!stored.is_passed());
        assert_eq!(format!("{stored:?}"), "CacheBody { passed: false, .. }");
        assert_eq!(stored.size_hint().exact(), Some(4));
        assert!(!stored.is_end_stream());
        assert_eq!(stored.collect().await.unwrap().to_bytes(), "kept");

        let passed = CacheBody::passed(Full::new(Bytes::from_static(b"inner body")));
        assert!(passed.is_passed());
        assert_eq!(format!("{passed:?}"), "CacheBody { passed: true, .. }");
        assert_eq!(passed.size_hint().exact(), Some(10));
        assert_eq!(passed.collect().await.unwrap().to_bytes(), "inner body");

        let empty = CacheBody::<Full<Bytes>>::default();
        assert!(!empty.is_passed());
        assert!(empty.is_end_stream());
        assert_eq!(empty.collect().await.unwrap().to_bytes(), "");
    }
}
