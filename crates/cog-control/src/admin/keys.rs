//! API keys: issued with their secret shown once, listed without it,
//! revoked.

use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::access::Caller;
use super::body::{Json, Path, Query};
use super::page::{Page, page};
use super::problem::Problem;
use super::{Admin, reply};
use crate::Window;

/// How to issue a key.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    /// Lifetime, e.g. `30d`; forever if absent.
    #[serde(default)]
    pub expires_in: Option<Window>,
}

/// A key just issued: `key` is the only copy of the secret.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuedKey {
    /// The key's id (its visible prefix).
    pub id: String,
    /// The tenant it authenticates.
    pub tenant: String,
    /// The whole key; shown this once, stored only as a hash.
    pub key: String,
}

/// A key as listed: never the key itself.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyInfo {
    /// The key's id.
    pub id: String,
    /// The tenant it authenticates.
    pub tenant: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds after which it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
}

/// `?tenant=` besides the page.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyQuery {
    /// Only this tenant's keys.
    pub tenant: Option<String>,
    /// Items per page, 1–1000 (default 100).
    pub limit: Option<u32>,
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
}

/// Issues a key for a tenant; the secret is in this answer only.
#[utoipa::path(post, path = "/v1/tenants/{id}/keys", operation_id = "create_key", tag = "keys", request_body = NewKeyRequest,
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 201, body = IssuedKey), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn create(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Json(req): Json<NewKeyRequest>,
) -> Result<Response, Problem> {
    let c = caller.control(&admin, &headers)?;
    let key = c.create_key(&tenant, req.expires_in.map(|w| w.0)).await?;
    let issued = IssuedKey {
        id: key.id.clone(),
        tenant,
        key: key.secret.clone(),
    };
    Ok(reply::json(StatusCode::CREATED, c.last_version(), &issued))
}

/// Lists keys by id (never the keys themselves).
#[utoipa::path(get, path = "/v1/keys", operation_id = "list_keys", tag = "keys", params(KeyQuery),
    responses((status = 200, body = Page<KeyInfo>), (status = 401, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn list(caller: Caller, Query(q): Query<KeyQuery>) -> Response {
    let s = &caller.state;
    let now = super::now();
    let pq = super::page::PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    };
    let p: Page<KeyInfo> = page(&s.keys, &pq, |id, k| {
        q.tenant
            .as_ref()
            .is_none_or(|t| *t == k.tenant)
            .then(|| KeyInfo {
                id: id.to_owned(),
                tenant: k.tenant.clone(),
                created: k.created,
                expires: k.expires,
                status: k.status(now).as_str().to_owned(),
            })
    });
    reply::json(StatusCode::OK, s.version(), &p)
}

/// Revokes a key: it is refused from now on (and stays listed).
#[utoipa::path(delete, path = "/v1/keys/{id}", operation_id = "revoke_key", tag = "keys",
    params(("id" = String, Path, description = "The key's id"),
        ("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn revoke(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let c = caller.control(&admin, &headers)?;
    c.revoke_key(&id).await?;
    Ok(reply::no_content(c.last_version()))
}
