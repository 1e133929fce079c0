//! Successful answers: JSON with the store's version as `ETag`.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::store::Version;

/// `value` as JSON with `status`, tagged with `version`.
pub(crate) fn json<T: Serialize>(status: StatusCode, version: Version, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    tag(h, version);
    res
}

/// 204, tagged with `version`.
pub(crate) fn no_content(version: Version) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    tag(res.headers_mut(), version);
    res
}

fn tag(h: &mut http::HeaderMap, version: Version) {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        h.insert(header::ETAG, v);
    }
}
