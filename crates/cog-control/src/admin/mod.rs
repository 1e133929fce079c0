//! The admin HTTP API: the control plane over REST, for back offices,
//! billing systems and onboarding scripts (feature `admin`).
//!
//! [`Admin::router`] is an axum [`Router`](axum::Router) an app mounts (or
//! `cog serve` runs on its own). It serves plans, tenants (suspend and
//! resume included), API keys and the audit log, and describes itself in
//! OpenAPI 3.1 at `/openapi.json` ([`Admin::openapi`], committed as
//! `docs/openapi.json`).
//!
//! - **Authentication**: `Authorization: Bearer cogadm_…`, an admin token
//!   made with [`Control::create_token`] (or `cog token create`), stored
//!   hashed with a [`Scope`](crate::Scope): `read` or `write`. Missing or
//!   unknown: 401; a read token writing: 403. Tokens are never logged.
//! - **Revisions**: every answer carries the store's revision as `ETag`;
//!   a write with `If-Match: "<etag>"` fails with 412 if the store has
//!   moved on since (the change is not retried on the newer state).
//! - **Errors**: RFC 9457 `application/problem+json`, with the offending
//!   field for invalid input (422); malformed bodies 400, too large 413.
//!   The store unreachable: 503.
//! - **Lists** page with `?limit=` (1–1000) and `?cursor=` (the last page's
//!   `next_cursor`).
//! - **Audit**: every write is recorded with the token's id, the action,
//!   its target, the time and the resulting revision (`GET /v1/audit`).
//!
//! Reads answer from the last state read while the store's revision is
//! unchanged (one revision read per request, not the whole document).
//!
//! # Example
//!
//! ```no_run
//! use cog_control::Control;
//! use cog_control::admin::Admin;
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let control = Control::open("redis://127.0.0.1:6379").await?;
//! let app = axum::Router::new().nest("/admin", Admin::new(control).router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! # let _ = (app, listener);
//! // axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

mod access;
mod audit;
mod body;
mod keys;
mod page;
mod plans;
mod problem;
mod reply;
mod tenants;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use http::{HeaderValue, StatusCode, header};
use utoipa::OpenApi;

use crate::Control;

pub use audit::AuditQuery;
pub use body::{MAX_BLOB_BYTES, MAX_JSON_BYTES};
pub use keys::{IssuedKey, KeyInfo, KeyQuery, NewKeyRequest};
pub use page::{DEFAULT_LIMIT, MAX_LIMIT, Page, PageQuery};
pub use plans::NamedPlan;
pub use problem::Problem;
pub use tenants::{NamedTenant, TenantQuery};

/// The admin API over a [`Control`]: build it once, mount
/// [`router`](Self::router).
#[derive(Clone, Debug)]
pub struct Admin {
    control: Control,
    cached: Arc<access::Cached>,
}

impl Admin {
    /// The API over `control`.
    pub fn new(control: Control) -> Self {
        Admin {
            control,
            cached: Arc::default(),
        }
    }

    /// Every route, `/openapi.json` included; unknown paths answer 404 as
    /// a problem.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/openapi.json", get(openapi_json))
            .route("/v1/plans", get(plans::list).post(plans::create))
            .route(
                "/v1/plans/{name}",
                get(plans::get).put(plans::replace).delete(plans::delete),
            )
            .route("/v1/tenants", get(tenants::list).post(tenants::create))
            .route(
                "/v1/tenants/{id}",
                get(tenants::get)
                    .put(tenants::replace)
                    .delete(tenants::delete),
            )
            .route("/v1/tenants/{id}/suspend", post(tenants::suspend))
            .route("/v1/tenants/{id}/resume", post(tenants::resume))
            .route("/v1/tenants/{id}/keys", post(keys::create))
            .route("/v1/keys", get(keys::list))
            .route("/v1/keys/{id}", delete(keys::revoke))
            .route("/v1/audit", get(audit::list))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(self.clone())
    }

    /// The OpenAPI 3.1 description of [`router`](Self::router).
    pub fn openapi() -> utoipa::openapi::OpenApi {
        Doc::openapi()
    }

    /// [`openapi`](Self::openapi) as pretty JSON with a final newline: the
    /// text of `docs/openapi.json`.
    pub fn openapi_json() -> String {
        let mut text = Doc::openapi()
            .to_pretty_json()
            .expect("the description serializes");
        text.push('\n');
        text
    }
}

async fn openapi_json() -> Response {
    let mut res = Admin::openapi_json().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

async fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "No such endpoint",
        "see /openapi.json",
    )
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "see /openapi.json",
    )
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An admin token (`cogadm_…`), made with `cog token create`",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cog admin API",
        description = "The control plane of a cog deployment: plans, tenants, API keys and the audit log.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        plans::list, plans::get, plans::create, plans::replace, plans::delete,
        tenants::list, tenants::get, tenants::create, tenants::replace, tenants::suspend,
        tenants::resume, tenants::delete,
        keys::create, keys::list, keys::revoke,
        audit::list,
    ),
    components(schemas(Problem)),
    modifiers(&Security),
    tags(
        (name = "plans", description = "Subscription plans: the limits their tenants get"),
        (name = "tenants", description = "Tenants: the API's customers"),
        (name = "keys", description = "API keys, shown once and stored hashed"),
        (name = "audit", description = "Every write: who, what, when, the revision"),
    )
)]
struct Doc;
