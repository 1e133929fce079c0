//! Request bodies: JSON read within a size cap, every failure a problem.

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use http::header;
use serde::de::DeserializeOwned;

use super::Admin;
use super::problem::Problem;

/// Largest JSON body the API reads (documents for `apply` included).
pub const MAX_JSON_BYTES: usize = 4 << 20;

/// Largest plugin upload: the store's own limit.
pub const MAX_BLOB_BYTES: usize = crate::MAX_PLUGIN_BYTES;

/// A body read whole, at most `limit` bytes: 413 past it.
pub(crate) async fn read(req: Request, limit: usize) -> Result<Bytes, Problem> {
    let body = req.into_body();
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            // axum wraps http-body-util's `LengthLimitError`.
            let mut too_large = false;
            let mut next: Option<&dyn std::error::Error> = Some(&e);
            while let Some(cause) = next {
                too_large |= cause.to_string().contains("length limit exceeded");
                next = cause.source();
            }
            if too_large {
                Err(Problem::new(
                    http::StatusCode::PAYLOAD_TOO_LARGE,
                    "too-large",
                    "The body is too large",
                    format!("at most {limit} bytes"),
                ))
            } else {
                Err(Problem::bad_request(format!("reading the body: {e}")))
            }
        }
    }
}

/// A JSON body: 400 when it is not JSON, 422 (naming the field) when it
/// does not fit the schema, 413 past [`MAX_JSON_BYTES`], 415 for another
/// content type.
#[derive(Debug)]
pub(crate) struct Json<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<Admin> for Json<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, _: &Admin) -> Result<Self, Problem> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let v = v.split(';').next().unwrap_or("").trim();
                v.eq_ignore_ascii_case("application/json") || v.ends_with("+json")
            });
        if !json {
            return Err(Problem::new(
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "The body must be JSON",
                "send Content-Type: application/json",
            ));
        }
        let bytes = read(req, MAX_JSON_BYTES).await?;
        parse(&bytes).map(Json)
    }
}

/// Parses JSON: 400 for bad syntax, 422 with the path for a bad shape.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() || inner.is_io() {
                Err(Problem::bad_request(format!("not JSON: {inner}")))
            } else {
                let field = (path != ".").then_some(path);
                Err(Problem::invalid(inner.to_string(), field))
            }
        }
    }
}

/// A query string: 400 as a problem when it does not parse.
#[derive(Debug)]
pub(crate) struct Query<T>(pub(crate) T);

impl<T: DeserializeOwned + Send> axum::extract::FromRequestParts<Admin> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        admin: &Admin,
    ) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, admin)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| Problem::bad_request(e.body_text()))
    }
}

/// A path parameter: 400 as a problem when it does not decode.
#[derive(Debug)]
pub(crate) struct Path<T>(pub(crate) T);

impl<T: DeserializeOwned + Send> axum::extract::FromRequestParts<Admin> for Path<T> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        admin: &Admin,
    ) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, admin)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| Problem::bad_request(e.body_text()))
    }
}
