//! [`Authenticate`], the service of
//! [`AuthenticateLayer`](super::AuthenticateLayer), and its future.

use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode, header};
use tower_service::Service;

use crate::{Directory, Refusal};

/// The service of [`AuthenticateLayer`](super::AuthenticateLayer).
#[derive(Clone, Debug)]
pub struct Authenticate<S> {
    inner: S,
    directory: Directory,
}

impl<S> Authenticate<S> {
    /// Authenticates requests to `inner` against `directory`.
    pub fn new(inner: S, directory: Directory) -> Self {
        Authenticate { inner, directory }
    }

    /// The layer of this service: [`AuthenticateLayer::new`](super::AuthenticateLayer::new).
    pub fn layer(directory: Directory) -> super::AuthenticateLayer {
        super::AuthenticateLayer::new(directory)
    }
}

cog_core::inner_service!(Authenticate<S>);

/// The token of `Bearer <token>` (scheme in any case), spaces around it
/// trimmed; `None` for another scheme, or a value that is not visible
/// ASCII (tabs allowed). Byte by byte: this runs on every request — one
/// pass checks the whole value (`to_str`), the rest are byte positions.
fn bearer(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let (scheme, rest) = text.split_at_checked(6)?;
    let token = rest.strip_prefix(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let bytes = token.as_bytes();
    let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |i| i + 1);
    // Visible ASCII: every position is a character boundary.
    token.get(start..end)
}

impl<S, B, ResB> Service<Request<B>> for Authenticate<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, Response<ResB>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let found = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(bearer)
            .ok_or(Refusal::Unauthenticated)
            .and_then(|key| self.directory.authenticate(key));
        match found {
            Ok(tenant) => {
                req.extensions_mut().insert(tenant);
                ResponseFuture::Inner {
                    fut: self.inner.call(req),
                }
            }
            Err(refusal) => {
                let mut res = Response::new(ResB::default());
                match refusal {
                    Refusal::Unauthenticated => {
                        *res.status_mut() = StatusCode::UNAUTHORIZED;
                        res.headers_mut()
                            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    }
                    Refusal::Suspended => *res.status_mut() = StatusCode::FORBIDDEN,
                }
                ResponseFuture::Refused {
                    fut: ready(Ok(res)),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Authenticate`].
    #[project = AuthProj]
    #[allow(missing_docs)]
    pub enum ResponseFuture<F, R, E> {
        /// Authenticated: the inner service's future.
        Inner { #[pin] fut: F },
        /// Refused at once.
        Refused { #[pin] fut: Ready<Result<R, E>> },
    }
}

impl<F, R, E> Future for ResponseFuture<F, R, E>
where
    F: Future<Output = Result<R, E>>,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthProj::Inner { fut } => fut.poll(cx),
            AuthProj::Refused { fut } => fut.poll(cx),
        }
    }
}

impl<F, R, E> fmt::Debug for ResponseFuture<F, R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious parse, on the header's text.
    fn by_text(value: &HeaderValue) -> Option<&str> {
        let v = value.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }

    #[test]
    fn bearer_reads_what_the_text_parse_reads() {
        let mut cases: Vec<Vec<u8>> = [
            "Bearer abc",
            "bearer abc",
            "BEARER  abc  ",
            "Bearer\tabc",
            "Bearer abc\t",
            "Bearer \tabc def",
            "Bearer",
            "Bearer ",
            "Bearerx abc",
            "Basic abc",
            "Bear abc",
            "",
            " Bearer abc",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        // Every byte a header value may hold, in the scheme and the token.
        for b in (0x20..=0xffu8).chain([b'\t']) {
            if b == 0x7f {
                continue;
            }
            cases.push([&b"Bearer k"[..], &[b], b"y"].concat());
            cases.push([&b"Beare"[..], &[b], b" key"].concat());
            cases.push([&b"Bearer "[..], &[b]].concat());
        }
        for bytes in cases {
            let Ok(v) = HeaderValue::from_bytes(&bytes) else {
                continue;
            };
            assert_eq!(bearer(&v), by_text(&v), "{bytes:?}");
        }
    }
}
