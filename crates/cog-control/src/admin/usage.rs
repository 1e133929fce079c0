//! `/v1/tenants/{id}/usage`: where a tenant stands against its limits,
//! read from the limiter's state without counting anything.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use cog_ratelimit::store::StoreError;
use cog_ratelimit::{Decision, LimitKind, Quota};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::access::Caller;
use super::body::Path;
use super::problem::Problem;
use super::{Admin, reply};
use crate::Window;

type Inspected = Pin<Box<dyn Future<Output = Result<Decision, StoreError>> + Send>>;

/// Reads a subject's standing from a limiter store.
pub(crate) type Inspect = Arc<dyn Fn(Arc<str>, Quota) -> Inspected + Send + Sync>;

/// Inspection through `store`.
pub(crate) fn inspect_with<S>(store: S) -> Inspect
where
    S: cog_ratelimit::store::Store + Clone,
{
    Arc::new(move |subject: Arc<str>, quota: Quota| {
        let store = store.clone();
        Box::pin(async move { store.inspect(&subject, &quota).await })
    })
}

/// A tenant's standing against each of its limits and quotas.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// The tenant's id.
    pub tenant: String,
    /// Its plan.
    pub plan: String,
    /// One entry per limit and quota (the plan's, with the tenant's
    /// overrides), in the plan's order; empty when it has none
    /// (unlimited).
    pub limits: Vec<LimitUsage>,
}

/// Where a tenant stands against one limit.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LimitUsage {
    /// The limit's name.
    pub name: String,
    /// The policy, for people: `10/1s burst 20`, `100/1d sliding`,
    /// `5 in flight`.
    pub policy: String,
    /// The most it admits in its window (its burst, for a rate limit).
    pub limit: u64,
    /// Units still available now.
    pub remaining: u64,
    /// Milliseconds until it is fully available again.
    pub reset_after_ms: u64,
}

/// A limit's policy as people read it: `10/1s burst 20` (GCRA),
/// `100/1d sliding` (sliding window), `5 in flight` (concurrency).
pub fn policy_text(kind: &LimitKind) -> String {
    match *kind {
        LimitKind::Gcra {
            count,
            period,
            burst,
        } => format!("{count}/{} burst {burst}", Window(period)),
        LimitKind::SlidingWindow { max, window } => format!("{max}/{} sliding", Window(window)),
        LimitKind::Concurrency { max, .. } => format!("{max} in flight"),
        _ => "other".into(),
    }
}

/// Where a subject stands against each limit of `quota`, from the
/// limiter's answer (an [`inspect`](cog_ratelimit::store::Store::inspect)).
pub fn standing(quota: &Quota, decision: &Decision) -> Vec<LimitUsage> {
    quota
        .limits()
        .iter()
        .zip(decision.statuses())
        .map(|(limit, status)| LimitUsage {
            name: limit.name().into_owned(),
            policy: policy_text(limit.kind()),
            limit: ceiling(limit.kind()),
            remaining: status.remaining,
            reset_after_ms: u64::try_from(status.reset_after.as_millis()).unwrap_or(u64::MAX),
        })
        .collect()
}

fn ceiling(kind: &LimitKind) -> u64 {
    match *kind {
        LimitKind::Gcra { burst, .. } => burst,
        LimitKind::SlidingWindow { max, .. } => max,
        LimitKind::Concurrency { max, .. } => max,
        _ => 0,
    }
}

/// A tenant's remaining budget: for each limit and quota, what is left and
/// when it is whole again. Reads the limiter's state (Redis for a fleet)
/// without counting a request.
#[utoipa::path(get, path = "/v1/tenants/{id}/usage", operation_id = "get_usage", tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, body = Usage), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 501, body = Problem, description = "This server reads no limiter"),
        (status = 503, body = Problem, description = "The limiter cannot answer")),
    security(("token" = [])))]
pub(crate) async fn get(
    State(admin): State<Admin>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let s = &caller.state;
    let tenant = s
        .spec
        .tenants
        .get(&id)
        .ok_or_else(|| Problem::not_found("tenant", &id))?;
    let inspect = admin.limiter.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_IMPLEMENTED,
            "no-limiter",
            "This server reads no limiter",
            "mount the API with Admin::with_limiter (cog serve --limiter redis://…)",
        )
    })?;
    let ctx = s
        .spec
        .plans
        .get(&tenant.plan)
        .and_then(|plan| crate::directory::context_of(&id, tenant, plan));
    let mut limits = Vec::new();
    if let Some(quota) = ctx.and_then(|c| c.quota) {
        let decision = inspect(id.as_str().into(), quota.clone())
            .await
            .map_err(|e| {
                tracing::warn!(target: "cog_control", error = %e, "admin API: the limiter failed");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "limiter-unavailable",
                    "The limiter cannot answer now",
                    e.to_string(),
                )
            })?;
        limits = standing(&quota, &decision);
    }
    Ok(reply::json(
        StatusCode::OK,
        s.version(),
        &Usage {
            tenant: id,
            plan: tenant.plan.clone(),
            limits,
        },
    ))
}
