//! Errors as RFC 9457 problem details (`application/problem+json`).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::ControlError;

/// An RFC 9457 problem: what went wrong, as JSON.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` when the status says
    /// it all), e.g. `https://cog.dev/problems/not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of that kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The offending field of the request, for invalid input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

const BASE: &str = "https://cog.dev/problems/";

impl Problem {
    /// A problem of `kind` (appended to the cog problem base URI).
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("{BASE}{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: Some(detail.into()),
            field: None,
        }
    }

    pub(crate) fn unauthorized(detail: &str) -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "No valid admin token",
            detail,
        )
    }

    pub(crate) fn forbidden(detail: &str) -> Self {
        Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "The token's scope does not allow this",
            detail,
        )
    }

    pub(crate) fn not_found(kind: &str, id: &str) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such object",
            format!("{kind} `{id}` not found"),
        )
    }

    pub(crate) fn invalid(detail: impl Into<String>, field: Option<String>) -> Self {
        Problem {
            field,
            ..Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "The request breaks a rule",
                detail,
            )
        }
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            "The request cannot be read",
            detail,
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<ControlError> for Problem {
    fn from(e: ControlError) -> Self {
        let detail = chain(&e);
        match &e {
            ControlError::Invalid(i) => Problem::invalid(i.message.clone(), Some(i.path.clone())),
            ControlError::Parse { .. } => Problem::invalid(detail, None),
            ControlError::Plugin(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "plugin-refused",
                "The plugin was refused",
                detail,
            ),
            ControlError::NotFound { .. } => {
                Problem::new(StatusCode::NOT_FOUND, "not-found", "No such object", detail)
            }
            ControlError::Exists { .. } => Problem::new(
                StatusCode::CONFLICT,
                "exists",
                "The object already exists",
                detail,
            ),
            ControlError::InUse { .. } => Problem::new(
                StatusCode::CONFLICT,
                "in-use",
                "Something else still refers to the object",
                detail,
            ),
            ControlError::Stale { .. } => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "stale",
                "The store changed since the revision in If-Match",
                detail,
            ),
            ControlError::PluginData { .. } => {
                tracing::error!(target: "cog_control", error = %detail, "admin API: the plugin data store failed");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "plugin-data-unavailable",
                    "The plugin data store cannot serve now",
                    detail,
                )
            }
            _ => {
                tracing::error!(target: "cog_control", error = %detail, "admin API: the store failed");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "The control store cannot serve now",
                    detail,
                )
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        res
    }
}

/// `e` and its sources, as `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let t = cause.to_string();
        if !text.ends_with(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        next = cause.source();
    }
    text
}
