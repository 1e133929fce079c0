//! Successful answers: JSON with the store revision as `ETag`.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// `value` as JSON with `status`, tagged with `revision`.
pub(crate) fn json<T: Serialize>(status: StatusCode, revision: u64, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    tag(h, revision);
    res
}

/// 204, tagged with `revision`.
pub(crate) fn no_content(revision: u64) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    tag(res.headers_mut(), revision);
    res
}

fn tag(h: &mut http::HeaderMap, revision: u64) {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{revision}\"")) {
        h.insert(header::ETAG, v);
    }
}
