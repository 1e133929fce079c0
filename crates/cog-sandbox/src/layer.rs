//! The tower layer: request hooks before the inner service, response hooks
//! after it.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tower_layer::Layer;
use tower_service::Service;

use crate::PluginError;
use crate::exchange::{Exchange, Phase};
use crate::plugin::{OnError, Plugin};

/// The plugins one request runs, in order, and the tenant they run for.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Scopes the plugins' KV data.
    pub tenant: Arc<str>,
    /// Run in this order (request hooks), and in reverse (response hooks).
    pub plugins: Arc<[Plugin]>,
}

impl Resolved {
    /// No plugins. Shared: asked for on every request of a tenant
    /// without plugins, it allocates nothing.
    pub fn none() -> Self {
        static NONE: std::sync::OnceLock<Resolved> = std::sync::OnceLock::new();
        NONE.get_or_init(|| Resolved {
            tenant: "".into(),
            plugins: Arc::new([]),
        })
        .clone()
    }
}

/// Finds the plugins for a request (per tenant, per route…). `cog-control`
/// implements it from its registry; a closure works too.
pub trait PluginResolver: Send + Sync + 'static {
    /// The plugins `parts` should go through.
    fn resolve(&self, parts: &Parts) -> Resolved;

    /// As [`resolve`](Self::resolve), `None` when there are no plugins to
    /// run — what the layer asks on every request. Override it when the
    /// answer "none" costs less than an empty [`Resolved`] (whose shared
    /// reference counts every request would touch).
    fn resolve_any(&self, parts: &Parts) -> Option<Resolved> {
        let resolved = self.resolve(parts);
        (!resolved.plugins.is_empty()).then_some(resolved)
    }
}

impl<F> PluginResolver for F
where
    F: Fn(&Parts) -> Resolved + Send + Sync + 'static,
{
    fn resolve(&self, parts: &Parts) -> Resolved {
        self(parts)
    }
}

/// Runs plugins around the inner service.
///
/// For each request: resolve its plugins; read the request body if one of
/// them asked for it ([`Plugin::bodies`]); run the request hooks on a
/// blocking thread; a rejection answers at once; otherwise call the inner
/// service with the (possibly changed) request, then run the response hooks
/// the same way. A plugin that fails is skipped (its changes dropped) or
/// fails the request with 500, as its [`OnError`] says. A body over the
/// plugins' `max_input_bytes` is answered 413.
///
/// The layer waits for a phase's hooks at most the sum of their plugins'
/// deadlines (for Python plugins, plus what starting an interpreter may
/// take) and [`STRANDED_GRACE`]: a hook whose thread never comes back
/// (stuck in a host call — a [`KvStore`](crate::KvStore) that does not
/// return) counts as a failed plugin, so the request is answered by the
/// policies (500 if one of them is [`OnError::Fail`], else the phase's
/// changes are dropped and the request goes on); that thread is left to
/// finish on its own. This uses tokio's timer: the runtime needs it enabled.
///
/// Plugins do not see the request's credentials: `Authorization` and
/// `Proxy-Authorization` (where a tenant's API key travels) are taken out
/// of the headers hooks read, so no plugin can log or keep them, and put
/// back on the request that goes on — unless a plugin set its own value.
/// [`show_credentials`](Self::show_credentials) lets plugins that check
/// credentials themselves read them.
#[derive(Clone)]
pub struct PluginLayer {
    resolver: Arc<dyn PluginResolver>,
    show_credentials: bool,
}

impl fmt::Debug for PluginLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginLayer").finish_non_exhaustive()
    }
}

impl PluginLayer {
    /// Plugins from `resolver`.
    pub fn new(resolver: impl PluginResolver) -> Self {
        PluginLayer {
            resolver: Arc::new(resolver),
            show_credentials: false,
        }
    }

    /// Whether plugins read `Authorization` and `Proxy-Authorization`
    /// (default: no, see above). Only for plugins that verify credentials
    /// themselves — whatever a plugin reads, it can log.
    pub fn show_credentials(mut self, show: bool) -> Self {
        self.show_credentials = show;
        self
    }
}

/// Request headers plugins do not read unless the layer shows them.
const CREDENTIALS: [http::HeaderName; 2] = [
    http::header::AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
];

/// Takes the credentials out of `headers`, to be [`restore`]d.
fn withhold(headers: &mut http::HeaderMap) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut held = Vec::new();
    for name in CREDENTIALS {
        if let http::header::Entry::Occupied(e) = headers.entry(&name) {
            let (name, values) = e.remove_entry_mult();
            held.extend(values.map(|v| (name.clone(), v)));
        }
    }
    held
}

/// Puts withheld credentials back on a request, except where a plugin set
/// that field itself.
fn restore(headers: &mut http::HeaderMap, held: Vec<(http::HeaderName, http::HeaderValue)>) {
    let set = CREDENTIALS.each_ref().map(|n| headers.contains_key(n));
    for (name, value) in held {
        if CREDENTIALS
            .iter()
            .zip(set)
            .any(|(n, set)| *n == name && !set)
        {
            headers.append(name, value);
        }
    }
}

impl<S> Layer<S> for PluginLayer {
    type Service = Plugins<S>;

    fn layer(&self, inner: S) -> Plugins<S> {
        Plugins {
            inner,
            resolver: self.resolver.clone(),
            show_credentials: self.show_credentials,
        }
    }
}

/// Middleware built by [`PluginLayer`].
#[derive(Clone)]
pub struct Plugins<S> {
    inner: S,
    resolver: Arc<dyn PluginResolver>,
    show_credentials: bool,
}

cog_core::inner_service!(Plugins<S>);

impl<S: fmt::Debug> fmt::Debug for Plugins<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugins")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// Response future of [`Plugins`]: the inner service's own future when
    /// the request runs no plugin (nothing to box), the hooks and the inner
    /// call boxed together otherwise.
    #[project = Proj]
    #[allow(missing_docs)]
    pub enum ResponseFuture<F, B, E> {
        /// No plugins: the inner future as it is.
        Direct { #[pin] fut: F },
        /// The plugins' hooks around the inner call.
        Hooked { #[pin] fut: cog_core::ResponseFuture<B, E> },
    }
}

impl<F, B, E> std::future::Future for ResponseFuture<F, B, E>
where
    F: std::future::Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Direct { fut } => fut.poll(cx),
            Proj::Hooked { fut } => fut.poll(cx),
        }
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plugins = matches!(self, ResponseFuture::Hooked { .. });
        f.debug_struct("ResponseFuture")
            .field("plugins", &plugins)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Plugins<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body + From<Bytes> + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let Some(resolved) = self.resolver.resolve_any(&parts) else {
            return ResponseFuture::Direct {
                fut: self.inner.call(Request::from_parts(parts, body)),
            };
        };
        // The service that was made ready goes with this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let show_credentials = self.show_credentials;
        let fut = cog_core::ResponseFuture::new(async move {
            let plugins = resolved.plugins.clone();
            // Request phase.
            let mut ex = Exchange::new(parts.method.clone(), parts.uri.clone(), resolved.tenant);
            ex.request_headers = parts.headers.clone();
            let withheld = if show_credentials {
                Vec::new()
            } else {
                withhold(&mut ex.request_headers)
            };
            let wants_body = plugins.iter().any(|p| p.reads_body(Phase::Request));
            let (body, read) = if wants_body {
                match read_body(body, input_cap(&plugins)).await {
                    Ok(b) => (None, Some(b)),
                    Err(status) => return Ok(plain(status, Bytes::new())),
                }
            } else {
                (Some(body), None)
            };
            ex.request_body = read;
            let ex = match run_hooks(plugins.clone(), Phase::Request, ex).await {
                Ok(ex) => ex,
                Err(status) => return Ok(plain(status, Bytes::new())),
            };
            if let Some(rejection) = ex.rejected {
                return Ok(plain(rejection.status, rejection.body));
            }
            let mut parts = parts;
            parts.headers = ex.request_headers.clone();
            restore(&mut parts.headers, withheld);
            let body = match (body, &ex.request_body) {
                (Some(original), _) => original,
                (None, read) => {
                    // Read, and maybe rewritten: the length is the new one.
                    let bytes = read.clone().unwrap_or_default();
                    set_length(&mut parts.headers, bytes.len());
                    ReqBody::from(bytes)
                }
            };
            let res = inner.call(Request::from_parts(parts, body)).await?;

            // Response phase.
            if !plugins.iter().any(|p| p.hooks(Phase::Response)) {
                return Ok(res);
            }
            let (mut res_parts, res_body) = res.into_parts();
            let mut ex = ex;
            ex.status = Some(res_parts.status);
            ex.response_headers = std::mem::take(&mut res_parts.headers);
            let wants_body = plugins.iter().any(|p| p.reads_body(Phase::Response));
            let (res_body, read) = if wants_body {
                match read_body(res_body, input_cap(&plugins)).await {
                    Ok(b) => (None, Some(b)),
                    Err(status) => {
                        // The service's answer is too large (or broken) for
                        // the plugins to read: a server-side failure, not
                        // the client's (never 413 for a request that was
                        // fine).
                        tracing::warn!(
                            target: "cog_sandbox",
                            tenant = %ex.tenant,
                            cap = input_cap(&plugins),
                            status = status.as_u16(),
                            "response body unreadable for the plugins; answering 502"
                        );
                        crate::metrics::refused_response(status);
                        return Ok(plain(StatusCode::BAD_GATEWAY, Bytes::new()));
                    }
                }
            } else {
                (Some(res_body), None)
            };
            ex.response_body = read;
            let reversed: Arc<[Plugin]> = plugins.iter().rev().cloned().collect();
            let ex = match run_hooks(reversed, Phase::Response, ex).await {
                Ok(ex) => ex,
                Err(status) => return Ok(plain(status, Bytes::new())),
            };
            if let Some(rejection) = ex.rejected {
                return Ok(plain(rejection.status, rejection.body));
            }
            res_parts.headers = ex.response_headers;
            let body = match (res_body, ex.response_body) {
                (Some(original), _) => original,
                (None, Some(bytes)) => {
                    // The length may have changed — where it is the
                    // body's: a `HEAD` answer's is its `GET`'s, and a
                    // 1xx, 204 or 304 has none to state.
                    if framed_by_its_body(&ex.method, res_parts.status) {
                        set_length(&mut res_parts.headers, bytes.len());
                    }
                    ResBody::from(bytes)
                }
                (None, None) => ResBody::from(Bytes::new()),
            };
            Ok(Response::from_parts(res_parts, body))
        });
        ResponseFuture::Hooked { fut }
    }
}

/// Whether an answer's `Content-Length` is the length of the body it
/// carries (RFC 9110 §8.6): not for `HEAD`, nor for 1xx, 204 and 304.
fn framed_by_its_body(method: &http::Method, status: StatusCode) -> bool {
    *method != http::Method::HEAD
        && !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// A body now sent whole: its exact length, and no chunked framing.
fn set_length(headers: &mut http::HeaderMap, len: usize) {
    headers.remove(http::header::TRANSFER_ENCODING);
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
}

/// The smallest input limit among the plugins.
fn input_cap(plugins: &[Plugin]) -> usize {
    plugins
        .iter()
        .map(|p| p.limits().max_input_bytes)
        .min()
        .unwrap_or(0)
}

/// The whole body, up to `cap` bytes; 413 beyond, 400 if it fails.
async fn read_body<B>(body: B, cap: usize) -> Result<Bytes, StatusCode>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, cap).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(StatusCode::PAYLOAD_TOO_LARGE),
        Err(_) => Err(StatusCode::BAD_REQUEST),
    }
}

/// How much longer than the sum of its plugins' deadlines the layer waits
/// for a phase's hooks before it stops waiting for their thread.
pub const STRANDED_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs every plugin's hook for `phase` on a blocking thread. A failing
/// plugin is skipped or ends the request (500), by its policy; a rejection
/// stops the chain. A thread that does not come back within the plugins'
/// deadlines plus [`STRANDED_GRACE`] is a failure of the chain.
async fn run_hooks(
    plugins: Arc<[Plugin]>,
    phase: Phase,
    ex: Exchange,
) -> Result<Exchange, StatusCode> {
    let running = plugins.iter().filter(|p| p.hooks(phase));
    let bound = running
        .clone()
        .map(Plugin::longest_call)
        .sum::<std::time::Duration>()
        + STRANDED_GRACE;
    // What the request goes on with if the thread is lost and every
    // plugin would be skipped.
    let fallback = running
        .clone()
        .all(|p| p.failure_policy() == OnError::Skip)
        .then(|| ex.clone());
    // Spans opened by the plugins join the request's trace.
    let cx = cog_core::telemetry::sampled_context();
    let run = move || {
        let _attached = cx.map(opentelemetry::Context::attach);
        let mut ex = ex;
        for plugin in plugins.iter() {
            if !plugin.hooks(phase) {
                continue;
            }
            if let Err(e) = plugin.call(phase, &mut ex) {
                log_failure(plugin, phase, &e);
                if plugin.failure_policy() == OnError::Fail {
                    return Err(StatusCode::INTERNAL_SERVER_ERROR);
                }
            }
            if ex.rejected.is_some() {
                break;
            }
        }
        Ok(ex)
    };
    match tokio::time::timeout(bound, tokio::task::spawn_blocking(run)).await {
        Ok(joined) => joined.unwrap_or(Err(StatusCode::INTERNAL_SERVER_ERROR)),
        Err(_) => {
            tracing::error!(
                target: "cog_sandbox",
                ?phase,
                waited_ms = bound.as_millis() as u64,
                "plugin thread did not return in time; answering by the plugins' policies"
            );
            fallback.ok_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

fn log_failure(plugin: &Plugin, phase: Phase, e: &PluginError) {
    if matches!(e, PluginError::Unavailable(_)) {
        // Logged as an error once, when loading failed; counted per call.
        tracing::debug!(target: "cog_sandbox", plugin = plugin.name(), error = %e, "plugin unavailable");
        return;
    }
    tracing::warn!(
        target: "cog_sandbox",
        plugin = plugin.name(),
        ?phase,
        kind = e.kind(),
        error = e as &dyn std::error::Error,
        "plugin failed"
    );
}

fn plain<B: From<Bytes>>(status: StatusCode, body: Bytes) -> Response<B> {
    let mut res = Response::new(B::from(body));
    *res.status_mut() = status;
    res
}

impl<S> Plugins<S> {
    /// `inner`, with the plugins `resolver` picks run around it.
    pub fn new(inner: S, resolver: impl PluginResolver) -> Self {
        PluginLayer::new(resolver).layer(inner)
    }

    /// The layer of this service: [`PluginLayer::new`].
    pub fn layer(resolver: impl PluginResolver) -> PluginLayer {
        PluginLayer::new(resolver)
    }
}
