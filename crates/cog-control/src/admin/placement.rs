//! `/v1/placement`: which Redis deployment holds each tenant partition.

use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::access::Caller;
use super::body::{Json, Path};
use super::problem::Problem;
use super::{Admin, reply};
use crate::PlacementTable;

/// A deployment to add to the placement table.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeployment {
    /// Its name (1–64 of `a-z A-Z 0-9 _ - .`), as the instances' store
    /// configuration names it.
    pub name: String,
}

/// Where a partition goes.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartitionMove {
    /// A deployment of the table.
    pub deployment: String,
}

/// The placement table.
#[utoipa::path(get, path = "/v1/placement", operation_id = "get_placement", tag = "placement",
    responses((status = 200, body = PlacementTable), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn get(caller: Caller) -> Result<Response, Problem> {
    let s = &caller.state;
    let table = s
        .placement
        .as_ref()
        .ok_or_else(|| Problem::not_found("placement", "table"))?;
    Ok(reply::json(StatusCode::OK, s.version(), table))
}

/// Adds a deployment: the first creates the table with every partition on
/// it; later ones hold none until a partition moves there.
#[utoipa::path(post, path = "/v1/placement/deployments", operation_id = "add_deployment", tag = "placement",
    request_body = NewDeployment,
    params(("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 200, body = PlacementTable), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn add_deployment(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Json(new): Json<NewDeployment>,
) -> Result<Response, Problem> {
    let c = caller.control(&admin, &headers)?;
    let table = c.add_deployment(&new.name).await?;
    Ok(reply::json(StatusCode::OK, c.last_version(), &table))
}

/// Moves a partition (0–255) to a deployment: the instances follow within
/// a round trip, their stores carrying the partition's data over.
#[utoipa::path(put, path = "/v1/placement/partitions/{partition}", operation_id = "move_partition",
    tag = "placement", request_body = PartitionMove,
    params(("partition" = u8, Path, description = "The partition, 0–255 (`cog placement show --tenant ID` names a tenant's)"),
        ("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 200, body = PlacementTable), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn move_partition(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Path(partition): Path<u8>,
    Json(to): Json<PartitionMove>,
) -> Result<Response, Problem> {
    let c = caller.control(&admin, &headers)?;
    let table = c.move_partition(partition, &to.deployment).await?;
    Ok(reply::json(StatusCode::OK, c.last_version(), &table))
}
