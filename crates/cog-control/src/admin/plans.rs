//! `/v1/plans`: subscription plans.

use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::access::Caller;
use super::body::{Json, Path, Query};
use super::page::{Page, PageQuery, page};
use super::problem::Problem;
use super::{Admin, reply};
use crate::Plan;

/// A plan and its name.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NamedPlan {
    /// Its name (1–64 of `a-z A-Z 0-9 _ - .`).
    pub name: String,
    /// The plan.
    pub plan: Plan,
}

/// Lists plans by name.
#[utoipa::path(get, path = "/v1/plans", operation_id = "list_plans", tag = "plans", params(PageQuery),
    responses((status = 200, body = Page<NamedPlan>), (status = 401, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn list(caller: Caller, Query(q): Query<PageQuery>) -> Response {
    let s = &caller.state;
    let p = page(&s.spec.plans, &q, |name, plan| {
        Some(NamedPlan {
            name: name.to_owned(),
            plan: plan.clone(),
        })
    });
    reply::json(StatusCode::OK, s.version(), &p)
}

/// One plan.
#[utoipa::path(get, path = "/v1/plans/{name}", operation_id = "get_plan", tag = "plans",
    params(("name" = String, Path, description = "The plan's name")),
    responses((status = 200, body = NamedPlan), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn get(caller: Caller, Path(name): Path<String>) -> Result<Response, Problem> {
    let s = &caller.state;
    let plan = s
        .spec
        .plans
        .get(&name)
        .ok_or_else(|| Problem::not_found("plan", &name))?;
    Ok(reply::json(
        StatusCode::OK,
        s.version(),
        &NamedPlan {
            name,
            plan: plan.clone(),
        },
    ))
}

/// Creates a plan.
#[utoipa::path(post, path = "/v1/plans", operation_id = "create_plan", tag = "plans", request_body = NamedPlan,
    responses((status = 201, body = NamedPlan), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn create(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Json(new): Json<NamedPlan>,
) -> Result<Response, Problem> {
    let c = caller.control(&admin, &headers)?;
    c.create_plan(&new.name, new.plan.clone()).await?;
    Ok(reply::json(StatusCode::CREATED, c.last_version(), &new))
}

/// Replaces a plan (its tenants follow at once).
#[utoipa::path(put, path = "/v1/plans/{name}", operation_id = "replace_plan", tag = "plans", request_body = Plan,
    params(("name" = String, Path, description = "The plan's name"),
        ("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 200, body = NamedPlan), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn replace(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(plan): Json<Plan>,
) -> Result<Response, Problem> {
    let c = caller.control(&admin, &headers)?;
    // Its plugins run under its new plugin limits: checked first.
    super::plugins::recheck(&admin, &caller, |s| {
        if let Some(p) = s.plans.get_mut(&name) {
            *p = plan.clone();
        }
    })
    .await?;
    let plan = c.update_plan(&name, |p| *p = plan.clone()).await?;
    Ok(reply::json(
        StatusCode::OK,
        c.last_version(),
        &NamedPlan { name, plan },
    ))
}

/// Deletes a plan no tenant is on.
#[utoipa::path(delete, path = "/v1/plans/{name}", operation_id = "delete_plan", tag = "plans",
    params(("name" = String, Path, description = "The plan's name"),
        ("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 412, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn delete(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let c = caller.control(&admin, &headers)?;
    c.delete_plan(&name).await?;
    Ok(reply::no_content(c.last_version()))
}
