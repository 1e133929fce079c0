//! `/v1/tenants`: the API's customers, suspended and resumed.

use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::access::Caller;
use super::body::{Json, Path, Query};
use super::page::{Page, PageQuery, page};
use super::problem::Problem;
use super::{Admin, reply};
use crate::{Status, Tenant};

/// A tenant and its id.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NamedTenant {
    /// Its id (1–64 of `a-z A-Z 0-9 _ - .`).
    pub id: String,
    /// The tenant.
    pub tenant: Tenant,
}

/// `?plan=` besides the page.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// Only tenants on this plan.
    pub plan: Option<String>,
    /// Items per page, 1–1000 (default 100).
    pub limit: Option<u32>,
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
}

/// Lists tenants by id.
#[utoipa::path(get, path = "/v1/tenants", operation_id = "list_tenants", tag = "tenants", params(TenantQuery),
    responses((status = 200, body = Page<NamedTenant>), (status = 401, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn list(caller: Caller, Query(q): Query<TenantQuery>) -> Response {
    let s = &caller.state;
    let pq = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    };
    let p = page(&s.spec.tenants, &pq, |id, t| {
        q.plan
            .as_ref()
            .is_none_or(|p| *p == t.plan)
            .then(|| NamedTenant {
                id: id.to_owned(),
                tenant: t.clone(),
            })
    });
    reply::json(StatusCode::OK, s.version(), &p)
}

/// One tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}", operation_id = "get_tenant", tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, body = NamedTenant), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn get(caller: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    let s = &caller.state;
    let tenant = s
        .spec
        .tenants
        .get(&id)
        .ok_or_else(|| Problem::not_found("tenant", &id))?;
    Ok(reply::json(
        StatusCode::OK,
        s.version(),
        &NamedTenant {
            id,
            tenant: tenant.clone(),
        },
    ))
}

/// Creates a tenant on an existing plan.
#[utoipa::path(post, path = "/v1/tenants", operation_id = "create_tenant", tag = "tenants", request_body = NamedTenant,
    responses((status = 201, body = NamedTenant), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn create(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Json(new): Json<NamedTenant>,
) -> Result<Response, Problem> {
    let c = caller.control(&admin, &headers)?;
    c.create_tenant(&new.id, new.tenant.clone()).await?;
    Ok(reply::json(StatusCode::CREATED, c.last_version(), &new))
}

/// Replaces a tenant: its plan, status, metadata and per-tenant overrides.
#[utoipa::path(put, path = "/v1/tenants/{id}", operation_id = "replace_tenant", tag = "tenants", request_body = Tenant,
    params(("id" = String, Path, description = "The tenant's id"),
        ("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 200, body = NamedTenant), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn replace(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(tenant): Json<Tenant>,
) -> Result<Response, Problem> {
    let c = caller.control(&admin, &headers)?;
    // Plugins attached to it run under its new plan's limits: checked
    // first.
    super::plugins::recheck(&admin, &caller, |s| {
        if let Some(t) = s.tenants.get_mut(&id) {
            *t = tenant.clone();
        }
    })
    .await?;
    let tenant = c.update_tenant(&id, |t| *t = tenant.clone()).await?;
    Ok(reply::json(
        StatusCode::OK,
        c.last_version(),
        &NamedTenant { id, tenant },
    ))
}

async fn set_status(
    admin: Admin,
    caller: Caller,
    headers: HeaderMap,
    id: String,
    status: Status,
) -> Result<Response, Problem> {
    let c = caller.control(&admin, &headers)?;
    let tenant = c.set_status(&id, status).await?;
    Ok(reply::json(
        StatusCode::OK,
        c.last_version(),
        &NamedTenant { id, tenant },
    ))
}

/// Suspends a tenant: its requests are refused (403) until resumed; its
/// keys and data are kept.
#[utoipa::path(post, path = "/v1/tenants/{id}/suspend", operation_id = "suspend_tenant", tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id"),
        ("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 200, body = NamedTenant), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn suspend(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    set_status(admin, caller, headers, id, Status::Suspended).await
}

/// Resumes a suspended tenant.
#[utoipa::path(post, path = "/v1/tenants/{id}/resume", operation_id = "resume_tenant", tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id"),
        ("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 200, body = NamedTenant), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn resume(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    set_status(admin, caller, headers, id, Status::Active).await
}

/// Deletes a tenant, its keys and its plugin attachments.
#[utoipa::path(delete, path = "/v1/tenants/{id}", operation_id = "delete_tenant", tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id"),
        ("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem),
        (status = 503, body = Problem, description = "The control store or the plugin data store cannot serve now: nothing was changed")),
    security(("token" = [])))]
pub(crate) async fn delete(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let c = caller.control(&admin, &headers)?;
    c.delete_tenant(&id).await?;
    Ok(reply::no_content(c.last_version()))
}
