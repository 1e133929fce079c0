use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use cog_core::telemetry::Child;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use opentelemetry::KeyValue;
use tower_service::Service;

use super::body::{RateLimitBody, Slots};
use super::future::{Admitted, ResponseFuture};
use crate::decision::{Decision, DecisionSource};
use crate::extract::{KeyExtractor, Subject};
use crate::headers;
use crate::quota::Quota;
use crate::source::QuotaSource;
use crate::store::{Store, StoreError};

pub(crate) type CostFn = Arc<dyn Fn(&Parts) -> u64 + Send + Sync>;

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

pub(crate) struct Config<St, K, Q> {
    pub(crate) store: St,
    pub(crate) key: Arc<K>,
    pub(crate) quotas: Arc<Q>,
    pub(crate) cost: Option<CostFn>,
    pub(crate) shadow: bool,
    pub(crate) metrics: Metrics,
}

/// Decision counter: `cog.ratelimit.decisions{outcome, source}`.
///
/// Counted in process-wide atomics (one relaxed add per decision, to the
/// calling thread's stripe) and
/// reported through an observable counter, registered once per meter
/// provider: an SDK counter's `add` hashes its attribute set on every
/// call, which a profile of the whole stack at full load showed.
pub(crate) struct Metrics;

const OUTCOMES: [&str; 5] = ["allowed", "denied", "shadow_denied", "rejected", "error"];
const SOURCES: [&str; 7] = [
    "store",
    "local_deny",
    "lease",
    "fallback",
    "fail_open",
    "key",
    "quota_source",
];
/// The counts, by outcome and source; one row per thread's stripe (each
/// request thread adds to its own cache line).
static DECISIONS: std::sync::LazyLock<cog_core::striped::Striped<Row>> =
    std::sync::LazyLock::new(Default::default);

/// One stripe's counts, by outcome and source.
struct Row([std::sync::atomic::AtomicU64; OUTCOMES.len() * SOURCES.len()]);

impl Default for Row {
    fn default() -> Self {
        Row(std::array::from_fn(|_| {
            std::sync::atomic::AtomicU64::new(0)
        }))
    }
}
/// Meter providers the counter is registered with (by address).
static PROVIDERS: parking_lot::Mutex<Vec<usize>> = parking_lot::Mutex::new(Vec::new());

impl Metrics {
    pub(crate) fn new() -> Self {
        let provider = opentelemetry::global::meter_provider();
        let id = Arc::as_ptr(&provider).cast::<()>() as usize;
        let mut providers = PROVIDERS.lock();
        if !providers.contains(&id) {
            providers.push(id);
            let _decisions = provider
                .meter("cog-ratelimit")
                .u64_observable_counter("cog.ratelimit.decisions")
                .with_description("Rate-limit decisions by outcome and by who decided")
                .with_unit("{decision}")
                .with_callback(|obs| {
                    for i in 0..OUTCOMES.len() * SOURCES.len() {
                        let n: u64 = DECISIONS
                            .iter()
                            .map(|row| row.0[i].load(std::sync::atomic::Ordering::Relaxed))
                            .sum();
                        if n > 0 {
                            obs.observe(
                                n,
                                &[
                                    KeyValue::new("outcome", OUTCOMES[i / SOURCES.len()]),
                                    KeyValue::new("source", SOURCES[i % SOURCES.len()]),
                                ],
                            );
                        }
                    }
                })
                .build();
        }
        Metrics
    }

    fn record(&self, outcome: &'static str, source: &'static str) {
        debug_assert!(OUTCOMES.contains(&outcome) && SOURCES.contains(&source));
        let o = OUTCOMES.iter().position(|x| *x == outcome).unwrap_or(0);
        let s = SOURCES.iter().position(|x| *x == source).unwrap_or(0);
        DECISIONS.local().0[o * SOURCES.len() + s]
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Middleware that rate-limits requests; built by
/// [`RateLimitLayer`](super::RateLimitLayer).
pub struct RateLimit<S, St, K, Q> {
    inner: S,
    config: Arc<Config<St, K, Q>>,
}

impl<S, St, K, Q> RateLimit<S, St, K, Q> {
    pub(crate) fn from_config(inner: S, config: Arc<Config<St, K, Q>>) -> Self {
        RateLimit { inner, config }
    }
}

cog_core::inner_service!(RateLimit<S, St, K, Q>);

impl<S: Clone, St, K, Q> Clone for RateLimit<S, St, K, Q> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug, St: fmt::Debug, K, Q> fmt::Debug for RateLimit<S, St, K, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("store", &self.config.store)
            .field("shadow", &self.config.shadow)
            .finish_non_exhaustive()
    }
}

impl<S, St, K, Q, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, St, K, Q>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: Store + Clone,
    K: KeyExtractor,
    Q: QuotaSource,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<RateLimitBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (parts, body) = req.into_parts();
        // Decided without waiting (an in-memory source and store, a live
        // lease, a cached denial): the inner service — the one made ready
        // — is called at once, with no clone of it and no asynchronous
        // decision to carry.
        match decide_now(&self.config, &parts) {
            Some(Now::Refused(res)) => return ResponseFuture::answered(res),
            Some(Now::Allowed {
                quota,
                mut decision,
            }) => {
                let slots = Slots::of(&self.config.store, decision.take_lease());
                let admitted = Admitted {
                    quota,
                    decision,
                    slots,
                    shadow: self.config.shadow,
                };
                let fut = self.inner.call(Request::from_parts(parts, body));
                return ResponseFuture::admitted(fut, admitted);
            }
            None => {}
        }
        // The clone is the one that is ready; keep it for this call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::deciding(cog_core::ResponseFuture::new(run(
            self.config.clone(),
            inner,
            Request::from_parts(parts, body),
        )))
    }
}

/// What [`decide_now`] settled.
enum Now<B> {
    /// Refused: the answer.
    Refused(Response<RateLimitBody<B>>),
    /// Admitted (or refused in shadow mode): call the inner service.
    Allowed { quota: Quota, decision: Decision },
}

/// The decision, when the key, the quota and the store all answer without
/// waiting; `None` leaves everything to [`run`] (nothing was counted).
fn decide_now<St, K, Q, B>(config: &Config<St, K, Q>, parts: &Parts) -> Option<Now<B>>
where
    St: Store,
    K: KeyExtractor,
    Q: QuotaSource,
    B: Default,
{
    let Subject::Key(subject) = config.key.subject(parts) else {
        return None;
    };
    let Ok(Some(quota)) = config.quotas.quota_now(&subject, parts)? else {
        return None;
    };
    let cost = config.cost.as_ref().map_or(1, |f| f(parts));
    let Ok(decision) = config.store.try_check_now(&subject, &quota, cost)? else {
        return None;
    };
    Some(match refusal(config, &subject, &quota, &decision) {
        Some(res) => Now::Refused(res),
        None => Now::Allowed { quota, decision },
    })
}

/// Records a decision's outcome; the answer when it refuses the request.
fn refusal<St, K, Q, B: Default>(
    config: &Config<St, K, Q>,
    subject: &str,
    quota: &Quota,
    decision: &Decision,
) -> Option<Response<RateLimitBody<B>>> {
    config.metrics.record(
        outcome(decision, config.shadow),
        source_name(decision.source()),
    );
    if decision.is_allowed() {
        return None;
    }
    tracing::debug!(
        target: "cog_ratelimit",
        subject = %subject,
        shadow = config.shadow,
        retry_after_ms = decision.retry_after().map(|d| d.as_millis() as u64),
        "rate limit exceeded"
    );
    (!config.shadow).then(|| too_many(quota, decision))
}

/// The inner service's answer, with no slots to hold.
async fn pass<S, ReqBody, ResBody>(
    mut inner: S,
    req: Request<ReqBody>,
) -> Result<Response<RateLimitBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    Ok(inner.call(req).await?.map(RateLimitBody::new))
}

async fn run<S, St, K, Q, ReqBody, ResBody>(
    config: Arc<Config<St, K, Q>>,
    mut inner: S,
    req: Request<ReqBody>,
) -> Result<Response<RateLimitBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    St: Store + Clone,
    K: KeyExtractor,
    Q: QuotaSource,
    ResBody: Default,
{
    let (parts, body) = req.into_parts();
    let subject = match config.key.subject(&parts) {
        Subject::Key(subject) => subject,
        Subject::Unlimited => return pass(inner, Request::from_parts(parts, body)).await,
        Subject::Reject => {
            config.metrics.record("rejected", "key");
            if config.shadow {
                return pass(inner, Request::from_parts(parts, body)).await;
            }
            return Ok(status_only(StatusCode::BAD_REQUEST));
        }
    };
    let quota = match config.quotas.quota(&subject, &parts).await {
        Ok(Some(q)) => q,
        Ok(None) => return pass(inner, Request::from_parts(parts, body)).await,
        Err(e) => {
            tracing::warn!(target: "cog_ratelimit", error = %e, "quota lookup failed");
            config.metrics.record("error", "quota_source");
            if config.shadow {
                return pass(inner, Request::from_parts(parts, body)).await;
            }
            return Ok(unavailable());
        }
    };
    let cost = config.cost.as_ref().map_or(1, |f| f(&parts));
    let span = if config.store.is_remote() {
        Child::internal("cog-ratelimit", "ratelimit.decide")
    } else {
        Child::default()
    };
    span.set(|| KeyValue::new("cog.ratelimit.cost", cost as i64));
    let checked = span.wrap(config.store.check(&subject, &quota, cost)).await;
    match &checked {
        Ok(d) => {
            span.set(|| KeyValue::new("cog.ratelimit.allowed", d.is_allowed()));
            span.set(|| KeyValue::new("cog.ratelimit.source", source_name(d.source())));
        }
        Err(e) => span.fail("store", || e.to_string()),
    }
    span.end();
    let mut decision = match checked {
        Ok(d) => d,
        Err(e) => {
            config.metrics.record("error", "store");
            if config.shadow {
                return pass(inner, Request::from_parts(parts, body)).await;
            }
            return Ok(match e {
                StoreError::Unavailable { .. } | StoreError::Timeout(_) => {
                    tracing::debug!(target: "cog_ratelimit", error = &e as &dyn std::error::Error, "rate-limit store unavailable, refusing");
                    unavailable()
                }
                other => {
                    tracing::error!(target: "cog_ratelimit", error = &other as &dyn std::error::Error, "rate-limit decision failed");
                    status_only(StatusCode::INTERNAL_SERVER_ERROR)
                }
            });
        }
    };
    if let Some(refused) = refusal(&config, &subject, &quota, &decision) {
        return Ok(refused);
    }
    // Given back when the response body ends — or now, if the request is
    // abandoned or the inner service fails.
    let slots = Slots::of(&config.store, decision.take_lease());
    let response = inner.call(Request::from_parts(parts, body)).await?;
    let mut response = response.map(|b| RateLimitBody::holding(b, slots));
    if !config.shadow {
        add_headers(response.headers_mut(), &quota, &decision);
    }
    Ok(response)
}

fn outcome(d: &Decision, shadow: bool) -> &'static str {
    match (d.is_allowed(), shadow) {
        (true, _) => "allowed",
        (false, false) => "denied",
        (false, true) => "shadow_denied",
    }
}

fn source_name(s: DecisionSource) -> &'static str {
    match s {
        DecisionSource::Store => "store",
        DecisionSource::LocalDeny => "local_deny",
        DecisionSource::Lease => "lease",
        DecisionSource::Fallback => "fallback",
        DecisionSource::FailOpen => "fail_open",
    }
}

pub(super) fn add_headers(h: &mut http::HeaderMap, quota: &Quota, d: &Decision) {
    // A fail-open decision knows nothing about the limits' state.
    if d.statuses().is_empty() {
        return;
    }
    // Both describe the quota the decision applied (the fallback's share
    // while Redis is away), so they agree.
    let quota = d.applied_quota().unwrap_or(quota);
    h.insert(RATELIMIT_POLICY, headers::policy(quota));
    h.insert(RATELIMIT, headers::current(quota, d));
}

fn status_only<B: Default>(status: StatusCode) -> Response<RateLimitBody<B>> {
    let mut r = Response::new(RateLimitBody::default());
    *r.status_mut() = status;
    r
}

fn too_many<B: Default>(quota: &Quota, d: &Decision) -> Response<RateLimitBody<B>> {
    let mut r = status_only(StatusCode::TOO_MANY_REQUESTS);
    add_headers(r.headers_mut(), quota, d);
    if let Some(retry) = d.retry_after() {
        r.headers_mut()
            .insert(header::RETRY_AFTER, headers::retry_after(retry));
    }
    r
}

fn unavailable<B: Default>() -> Response<RateLimitBody<B>> {
    let mut r = status_only(StatusCode::SERVICE_UNAVAILABLE);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}
