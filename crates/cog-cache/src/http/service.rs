//! [`HttpCache`]: lookup, forwarding, storing and background
//! revalidation.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use super::CacheBody;
use super::answer::{answer, answer_or_not_modified, ttl};
use super::cache_control::Asked;
use super::freshness::unix_ms;
use super::key::{base_key, namespace, origin, same_origin_key, variant_key, with_base_key};
use super::shared::Shared;
use super::stored::{
    Entry, Sent, Stored, StoredResponse, add_validators, merge_not_modified, set_status,
    store_response,
};
use crate::cache::TieredCache;

/// Middleware built by [`HttpCacheLayer`](super::HttpCacheLayer).
#[derive(Clone)]
pub struct HttpCache<S> {
    pub(super) inner: S,
    pub(super) shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for HttpCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCache")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

cog_core::inner_service!(HttpCache<S>);

/// Response future of [`HttpCache`]: a fresh L1 hit is the answer itself
/// (nothing to box); anything else — lookups in L2, forwarding, storing —
/// is boxed with the inner call.
pub struct ResponseFuture<B, E> {
    state: Pending<B, E>,
}

enum Pending<B, E> {
    Hit(Option<Response<CacheBody<B>>>),
    Run(cog_core::ResponseFuture<CacheBody<B>, E>),
}

// Neither variant is structurally pinned: the answer is moved out, and
// the boxed future is pinned in its box.
impl<B, E> Unpin for ResponseFuture<B, E> {}

impl<B, E> std::future::Future for ResponseFuture<B, E> {
    type Output = Result<Response<CacheBody<B>>, E>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            Pending::Hit(answer) => {
                Poll::Ready(Ok(answer.take().expect("polled after completion")))
            }
            Pending::Run(fut) => std::pin::Pin::new(fut).poll(cx),
        }
    }
}

impl<B, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("hit", &matches!(self.state, Pending::Hit(_)))
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for HttpCache<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (parts, body) = req.into_parts();
        if let Some(hit) = fresh_hit(&self.shared, &parts) {
            // Answered from L1 without the lookup's async machinery: the
            // answer is the future.
            return ResponseFuture {
                state: Pending::Hit(Some(hit)),
            };
        }
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            state: Pending::Run(cog_core::ResponseFuture::new(run(
                self.shared.clone(),
                inner,
                Request::from_parts(parts, body),
            ))),
        }
    }
}

/// The answer to a `GET`/`HEAD` whose entry is fresh in L1 — the hit path,
/// synchronous. `None` sends the request through [`run`], which decides
/// everything else (and looks again, in L2 too).
fn fresh_hit<B>(shared: &Shared, parts: &Parts) -> Option<Response<CacheBody<B>>> {
    let head = parts.method == Method::HEAD;
    if parts.method != Method::GET && !head {
        return None;
    }
    let asked = Asked::of(&parts.headers);
    if asked.authorization && !shared.authorized.as_ref().is_some_and(|f| f(parts)) {
        return None;
    }
    let req_cc = &asked.cache_control;
    if req_cc.no_store {
        return None;
    }
    // No tenant view (it costs a shared count and an allocation): the
    // namespace is enough to look up.
    let (cache, tenant) = (&shared.cache, namespace(shared, parts));
    let stored = with_base_key(parts, asked.host, |base| {
        match cache.get_fresh_in(&tenant, base)? {
            StoredResponse(Entry::Response(stored)) => Some(stored),
            StoredResponse(Entry::Variants { names, id, .. }) => {
                match cache.get_fresh_in(&tenant, &variant_key(base, id, &names, &parts.headers))? {
                    StoredResponse(Entry::Response(stored)) => Some(stored),
                    StoredResponse(Entry::Variants { .. }) => None,
                }
            }
        }
    })?;
    let now = unix_ms();
    stored
        .fresh_for(req_cc, now)
        .then(|| answer_or_not_modified(&stored, &parts.headers, asked.conditional, head, now))
}

/// Whether the request carries conditionals of its own.
pub(super) fn is_conditional(headers: &HeaderMap) -> bool {
    [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ]
    .iter()
    .any(|h| headers.contains_key(h))
}

pub(super) async fn run<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return forward_other_method(&shared, inner, parts, body).await;
    }
    let asked = Asked::of(&parts.headers);
    let authorized_bypass =
        asked.authorization && !shared.authorized.as_ref().is_some_and(|f| f(&parts));
    let (req_cc, conditional) = (asked.cache_control, asked.conditional);
    if authorized_bypass || req_cc.no_store {
        let mut res = inner.call(Request::from_parts(parts, body)).await?;
        set_status(res.headers_mut(), "cog; fwd=request");
        return Ok(res.map(CacheBody::passed));
    }
    let cache = shared.cache.tenant(&namespace(&shared, &parts));
    let base = base_key(&parts);
    let head = parts.method == Method::HEAD;

    // Look up: the URI, then its variant.
    let mut fwd = "uri-miss";
    let mut lookup_key = base.clone();
    let mut entry = cache.get(&base).await;
    if let Some(StoredResponse(Entry::Variants { names, id, .. })) = &entry {
        lookup_key = variant_key(&base, *id, names, &parts.headers);
        entry = cache.get(&lookup_key).await;
        fwd = "vary-miss";
    }
    let mut stale = None;
    if let Some(StoredResponse(Entry::Response(stored))) = entry {
        let now = unix_ms();
        if stored.fresh_for(&req_cc, now) {
            return Ok(answer_or_not_modified(
                &stored,
                &parts.headers,
                conditional,
                head,
                now,
            ));
        }
        let staleness = now.saturating_sub(stored.fresh_until());
        if stored.may_serve_stale(&req_cc) {
            if staleness < stored.swr_ms {
                revalidate(&shared, &cache, inner, &parts, &stored, lookup_key);
                return Ok(answer(&stored, head, now, "hit"));
            }
            if req_cc.max_stale.is_some_and(|s| staleness <= s * 1000) {
                return Ok(answer(&stored, head, now, "hit"));
            }
        }
        fwd = if req_cc.no_cache { "request" } else { "stale" };
        stale = Some(stored);
    }
    if req_cc.only_if_cached {
        let mut res = Response::new(CacheBody::default());
        *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        set_status(res.headers_mut(), "cog; fwd=miss");
        return Ok(res);
    }

    // Forward, conditionally when there is a stale entry to revalidate.
    let req_headers = parts.headers.clone();
    let mut parts = parts;
    let validating = match &stale {
        Some(s) if !is_conditional(&parts.headers) => add_validators(&mut parts.headers, s),
        _ => false,
    };
    let sent_at = unix_ms();
    let result = inner.call(Request::from_parts(parts, body)).await;
    let stand_in = |s: &Stored| {
        s.may_serve_stale(&req_cc) && unix_ms() < s.fresh_until().saturating_add(s.sie_ms)
    };
    let res = match result {
        Ok(res) => res,
        Err(e) => {
            if let Some(s) = stale.as_ref().filter(|s| stand_in(s)) {
                return Ok(answer(s, head, unix_ms(), "hit"));
            }
            return Err(e);
        }
    };
    if res.status().is_server_error()
        && let Some(s) = stale.as_ref().filter(|s| stand_in(s))
    {
        return Ok(answer(s, head, unix_ms(), "hit"));
    }
    let sent = Sent {
        base: &base,
        key: &lookup_key,
        headers: &req_headers,
        at: sent_at,
    };
    if validating
        && res.status() == StatusCode::NOT_MODIFIED
        && let Some(stored) = stale
    {
        let updated = merge_not_modified(
            &shared,
            &cache,
            &sent,
            Arc::unwrap_or_clone(stored),
            res.headers(),
        )
        .await;
        let now = unix_ms();
        let mut answer = answer(&updated, head, now, "fwd=stale");
        set_status(
            answer.headers_mut(),
            &format!(
                "cog; fwd=stale; fwd-status=304; stored; ttl={}",
                ttl(&updated, now)
            ),
        );
        return Ok(answer);
    }
    let status_prefix = format!("cog; fwd={fwd}");
    if head || res.status() == StatusCode::NOT_MODIFIED {
        let mut res = res;
        set_status(res.headers_mut(), &status_prefix);
        return Ok(res.map(CacheBody::passed));
    }
    Ok(store_response(&shared, &cache, &sent, res, &status_prefix).await)
}

/// A method other than `GET` and `HEAD`: forwarded; an unsafe one that
/// succeeds invalidates what it names (RFC 9111 §4.4).
pub(super) async fn forward_other_method<S, ReqBody, ResBody>(
    shared: &Shared,
    mut inner: S,
    parts: Parts,
    body: ReqBody,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    let safe = matches!(parts.method, Method::OPTIONS | Method::TRACE);
    let namespaces = if safe {
        Vec::new()
    } else {
        let own = namespace(shared, &parts);
        if own.is_empty() {
            vec![own]
        } else {
            vec![own, String::new()]
        }
    };
    let (scheme, host) = origin(&parts);
    let (scheme, host) = (scheme.to_owned(), host.to_owned());
    let target = base_key(&parts);
    let mut res = inner.call(Request::from_parts(parts, body)).await?;
    let status = res.status();
    if !safe && (status.is_success() || status.is_redirection()) {
        let mut keys = vec![target];
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(key) = res
                .headers()
                .get(&name)
                .and_then(|v| same_origin_key(v, &scheme, &host))
            {
                keys.push(key);
            }
        }
        for ns in &namespaces {
            let cache = shared.cache.tenant(ns);
            for key in &keys {
                cache.invalidate(key).await;
            }
        }
    }
    set_status(res.headers_mut(), "cog; fwd=method");
    Ok(res.map(CacheBody::passed))
}

/// Revalidates a stale entry in the background, once.
pub(super) fn revalidate<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    cache: &TieredCache<String, StoredResponse>,
    mut inner: S,
    parts: &Parts,
    stored: &Stored,
    key: String,
) where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let base = base_key(parts);
    // Released however the revalidation ends, panics included.
    let Some(mark) = shared
        .revalidating
        .mark(format!("{}\u{0}{key}", cache.tenant_id()))
    else {
        return;
    };
    let mut req = Request::new(ReqBody::default());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = parts.uri.clone();
    *req.headers_mut() = parts.headers.clone();
    // What outer layers put on the request (a tenant, a route, a span):
    // the handler sees the same request it answered.
    *req.extensions_mut() = parts.extensions.clone();
    let validating = !is_conditional(&parts.headers) && add_validators(req.headers_mut(), stored);
    let req_headers = parts.headers.clone();
    let stored = stored.clone();
    let (shared, cache) = (shared.clone(), cache.clone());
    tokio::spawn(async move {
        let _mark = mark;
        let at = unix_ms();
        // Readiness: a clone of a ready service may need polling first.
        let Ok(()) = std::future::poll_fn(|cx| inner.poll_ready(cx)).await else {
            return;
        };
        let Ok(res) = inner.call(req).await else {
            return;
        };
        if res.status().is_server_error() {
            return;
        }
        let sent = Sent {
            base: &base,
            key: &key,
            headers: &req_headers,
            at,
        };
        if validating && res.status() == StatusCode::NOT_MODIFIED {
            merge_not_modified(&shared, &cache, &sent, stored, res.headers()).await;
        } else if res.status() != StatusCode::NOT_MODIFIED {
            let res = store_response(&shared, &cache, &sent, res, "cog").await;
            // Nobody reads this answer: a body of unknown length is read
            // here (as far as it may be stored), which stores it.
            let mut body = std::pin::pin!(res.into_body());
            let mut read = 0;
            while let Some(Ok(frame)) = http_body_util::BodyExt::frame(&mut body).await {
                read += frame.data_ref().map_or(0, Bytes::len);
                if read > shared.max_body {
                    break;
                }
            }
        }
    });
}
