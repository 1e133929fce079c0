//! `/v1/diff` and `/v1/apply`: the declarative documents `cog apply`
//! takes, as JSON.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::access::Caller;
use super::body::{Json, Query};
use super::problem::Problem;
use super::{Admin, reply};
use crate::Invalid;
use crate::{Change, diff};
use crate::{ControlError, Spec};

/// `?prune=` and, for `apply`, `?dry_run=`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApplyQuery {
    /// Also delete the plans, tenants (with their keys) and plugins the
    /// document does not list.
    #[serde(default)]
    pub prune: bool,
    /// Only say what would change (`apply` only; `diff` never writes).
    #[serde(default)]
    pub dry_run: bool,
}

/// What a document changes (or would change).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Changes {
    /// Whether the store was left as it was.
    pub dry_run: bool,
    /// One entry per plan, tenant and plugin created, updated or deleted.
    pub changes: Vec<Change>,
}

/// Over HTTP a plugin is named by the digest of bytes already uploaded:
/// there is no file to read.
fn no_files(spec: &Spec) -> Result<(), Problem> {
    for (name, p) in &spec.plugins {
        if p.digest.is_empty() && p.file.is_some() {
            return Err(ControlError::from(Invalid::new(
                format!("plugins.{name}.file"),
                "over HTTP, upload the bytes (PUT /v1/plugins/{name}) and name them by `digest`",
            ))
            .into());
        }
    }
    Ok(())
}

/// What applying the document would change. Never writes.
#[utoipa::path(post, path = "/v1/diff", operation_id = "diff", tag = "apply", request_body = Spec, params(ApplyQuery),
    responses((status = 200, body = Changes), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 422, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn diff_doc(
    State(admin): State<Admin>,
    caller: Caller,
    Query(q): Query<ApplyQuery>,
    Json(desired): Json<Spec>,
) -> Result<Response, Problem> {
    preview(&admin, &caller, &desired, q.prune).await
}

/// The changes `desired` would make to the caller's state, refused as
/// [`Control::apply`](crate::Control::apply) would refuse it.
async fn preview(
    admin: &Admin,
    caller: &Caller,
    desired: &Spec,
    prune: bool,
) -> Result<Response, Problem> {
    no_files(desired)?;
    desired.validate().map_err(ControlError::from)?;
    for (name, p) in &desired.plugins {
        if admin.control.store().get_blob(&p.digest).await?.is_none() {
            return Err(ControlError::from(Invalid::new(
                format!("plugins.{name}.digest"),
                format!("no plugin bytes stored for {}", p.digest),
            ))
            .into());
        }
    }
    let s = &caller.state;
    let changes = diff(&s.spec, desired, prune);
    Ok(reply::json(
        StatusCode::OK,
        s.version(),
        &Changes {
            dry_run: true,
            changes,
        },
    ))
}

/// Makes the store match the document: creates and updates what it lists;
/// with `prune`, deletes what it does not. All or nothing, in one commit.
#[utoipa::path(post, path = "/v1/apply", operation_id = "apply", tag = "apply", request_body = Spec,
    params(ApplyQuery,
        ("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 200, body = Changes), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem),
        (status = 503, body = Problem, description = "The control store or the plugin data store cannot serve now: nothing was changed")),
    security(("token" = [])))]
pub(crate) async fn apply(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<ApplyQuery>,
    Json(desired): Json<Spec>,
) -> Result<Response, Problem> {
    let c = caller.control(&admin, &headers)?;
    if q.dry_run {
        return preview(&admin, &caller, &desired, q.prune).await;
    }
    no_files(&desired)?;
    desired.validate().map_err(ControlError::from)?;
    // Plugins it makes run under limits they were not checked under (new
    // plans, new plugin limits, tenants moved): checked first.
    super::plugins::recheck(&admin, &caller, |s| {
        *s = s.applied(&desired, q.prune);
    })
    .await?;
    let changes = c.apply(&desired, &BTreeMap::new(), q.prune).await?;
    Ok(reply::json(
        StatusCode::OK,
        c.last_version(),
        &Changes {
            dry_run: false,
            changes,
        },
    ))
}
