//! `/v1/audit`: every write, who made it, and the revision it produced.

use axum::response::Response;
use http::StatusCode;
use serde::Deserialize;

use super::access::Caller;
use super::body::Query;
use super::page::{DEFAULT_LIMIT, MAX_LIMIT, Page};
use super::reply;
use crate::AuditEntry;

/// `?after=&limit=` of the audit log.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only writes that produced a revision after this one (a page's
    /// `next_cursor`).
    pub cursor: Option<String>,
    /// Entries per page, 1–1000 (default 100).
    pub limit: Option<u32>,
}

/// The audit log, oldest first (the store keeps the last 1000 writes).
#[utoipa::path(get, path = "/v1/audit", operation_id = "list_audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 400, body = super::problem::Problem),
        (status = 401, body = super::problem::Problem)),
    security(("token" = [])))]
pub(crate) async fn list(
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Response, super::problem::Problem> {
    let s = &caller.state;
    let after = match q.cursor.as_deref() {
        None => 0,
        Some(c) => c.parse::<u64>().map_err(|_| {
            super::problem::Problem::bad_request("cursor: not one this endpoint gave")
        })?,
    };
    let limit = q
        .limit
        .map_or(DEFAULT_LIMIT, |l| (l as usize).clamp(1, MAX_LIMIT));
    let mut rest = s.audit.iter().filter(|e| e.revision > after);
    let items: Vec<AuditEntry> = rest.by_ref().take(limit).cloned().collect();
    let next_cursor = match (rest.next(), items.last()) {
        (Some(_), Some(last)) => Some(last.revision.to_string()),
        _ => None,
    };
    Ok(reply::json(
        StatusCode::OK,
        s.version(),
        &Page { items, next_cursor },
    ))
}
