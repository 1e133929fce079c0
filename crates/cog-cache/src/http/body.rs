//! [`CacheBody`]: what [`HttpCache`](super::HttpCache) answers with.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};

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
        inner: Either<Full<Bytes>, B>,
    }
}

impl<B> CacheBody<B> {
    /// A body of these bytes.
    pub fn stored(bytes: Bytes) -> Self {
        CacheBody {
            inner: Either::Left(Full::new(bytes)),
        }
    }

    /// The inner service's body, passed through.
    pub fn passed(body: B) -> Self {
        CacheBody {
            inner: Either::Right(body),
        }
    }

    /// Whether this is the inner service's body passed through (not bytes
    /// the cache holds).
    pub fn is_passed(&self) -> bool {
        matches!(self.inner, Either::Right(_))
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
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
