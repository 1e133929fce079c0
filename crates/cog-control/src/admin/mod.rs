//! The admin HTTP API: the control plane over REST, for back offices,
//! billing systems and onboarding scripts (feature `admin`).
//!
//! [`Admin::router`] is an axum [`Router`] an app mounts (or
//! `cog serve` runs on its own). It serves plans, tenants (suspend and
//! resume included), API keys, plugins (uploaded by bytes, stored by
//! digest), each tenant's usage, the declarative `diff` / `apply`, the
//! audit log and the tenant placement table, and describes itself in
//! OpenAPI 3.1 at `/openapi.json` ([`Admin::openapi`], committed as
//! `docs/openapi.json`).
//!
//! - **Authentication**: `Authorization: Bearer cogadm_…`, an admin token
//!   made with [`Control::create_token`] (or `cog token create`), stored
//!   hashed with a [`Scope`](crate::Scope): `read` or `write`. Missing or
//!   unknown: 401; a read token writing: 403. Tokens are never logged.
//! - **Revisions**: every answer carries the store's version as `ETag`
//!   (its revision and the random stamp of the commit that made it:
//!   `"17-00f3a9c2d4e5b617"`; see [`Version`](crate::store::Version));
//!   a write with `If-Match: "<etag>"` fails with 412 if the store has
//!   moved on since (the change is not retried on the newer state) — or
//!   went back and was written up to that revision again by other writes
//!   (a failover to a replica behind it, a restored backup). `If-Match:
//!   "17"` names the
//!   revision from whichever commit.
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
mod apply;
mod audit;
mod body;
mod keys;
mod page;
mod placement;
mod plans;
mod plugins;
mod problem;
mod reply;
mod tenants;
mod usage;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};
use utoipa::OpenApi;

use crate::Control;

pub use apply::{ApplyQuery, Changes};
pub use audit::AuditQuery;
pub use body::{MAX_BLOB_BYTES, MAX_JSON_BYTES};
pub use keys::{IssuedKey, KeyInfo, KeyQuery, NewKeyRequest};
pub use page::{DEFAULT_LIMIT, MAX_LIMIT, Page, PageQuery};
pub use placement::{NewDeployment, PartitionMove};
pub use plans::NamedPlan;
pub use plugins::{NamedPlugin, PluginCheck, PluginPatch, UploadQuery};
pub use problem::Problem;
pub use tenants::{NamedTenant, TenantQuery};
pub use usage::{LimitUsage, Usage, policy_text, standing};

/// The admin API over a [`Control`]: build it once, mount
/// [`router`](Self::router).
#[derive(Clone)]
pub struct Admin {
    control: Control,
    cached: Arc<access::Cached>,
    plugin_check: Option<PluginCheck>,
    limiter: Option<usage::Inspect>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("control", &self.control)
            .field("plugin_check", &self.plugin_check.is_some())
            .field("limiter", &self.limiter.is_some())
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// The API over `control`: plugin uploads checked only for what the
    /// bytes are, and no usage (501) until
    /// [`with_limiter`](Self::with_limiter).
    pub fn new(control: Control) -> Self {
        Admin {
            control,
            cached: Arc::default(),
            plugin_check: None,
            limiter: None,
        }
    }

    /// Checks every uploaded plugin with `check` before storing it — e.g.
    /// by loading it in the sandbox under each plan's limits, as
    /// `cog serve` does. Refusals answer 422 `plugin-refused`.
    pub fn check_plugins(mut self, check: PluginCheck) -> Self {
        self.plugin_check = Some(check);
        self
    }

    /// Answers `GET /v1/tenants/{id}/usage` from `store`, the limiter the
    /// services count requests in (cog-ratelimit's `RedisStore` for a
    /// fleet, a feature cog-control does not turn on itself; the
    /// [`MemoryStore`] of this same process otherwise).
    ///
    /// [`MemoryStore`]: cog_ratelimit::store::MemoryStore
    pub fn with_limiter<S>(mut self, store: S) -> Self
    where
        S: cog_ratelimit::store::Store + Clone,
    {
        self.limiter = Some(usage::inspect_with(store));
        self
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
            .route("/v1/tenants/{id}/usage", get(usage::get))
            .route("/v1/keys", get(keys::list))
            .route("/v1/keys/{id}", axum::routing::delete(keys::revoke))
            .route("/v1/plugins", get(plugins::list))
            .route(
                "/v1/plugins/{name}",
                get(plugins::get)
                    .put(plugins::upload)
                    .patch(plugins::patch)
                    .delete(plugins::delete),
            )
            .route("/v1/plugins/{name}/attach", post(plugins::attach))
            .route("/v1/plugins/{name}/detach", post(plugins::detach))
            .route("/v1/plugins/{name}/enable", post(plugins::enable))
            .route("/v1/plugins/{name}/disable", post(plugins::disable))
            .route("/v1/diff", post(apply::diff_doc))
            .route("/v1/apply", post(apply::apply))
            .route("/v1/audit", get(audit::list))
            .route("/v1/placement", get(placement::get))
            .route("/v1/placement/deployments", post(placement::add_deployment))
            .route(
                "/v1/placement/partitions/{partition}",
                axum::routing::put(placement::move_partition),
            )
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

/// What generators need beyond what the handlers say: errors as
/// `application/problem+json`, a description on every response, and each
/// page's items by reference to their schema (utoipa inlines a generic's
/// argument, so every SDK would get a second, anonymous copy of it).
struct Answers;

/// The failures any operation can meet besides those its handler names:
/// a request that cannot be read (400), a store that cannot serve (503),
/// and for a body, one too large (413) or of the wrong type (415).
fn add_common_failures(op: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let json_body = matches!(&op.request_body,
        Some(RefOr::T(b)) if b.content.contains_key("application/json"));
    let mut add = |status: StatusCode, why: &str| {
        op.responses
            .responses
            .entry(status.as_str().to_owned())
            .or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description(why)
                        .content(
                            "application/problem+json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("Problem")))
                                .build(),
                        )
                        .build(),
                )
            });
    };
    add(StatusCode::BAD_REQUEST, "The request cannot be read");
    add(
        StatusCode::SERVICE_UNAVAILABLE,
        "The control store cannot serve now",
    );
    if op.request_body.is_some() {
        add(StatusCode::PAYLOAD_TOO_LARGE, "The body is too large");
    }
    if json_body {
        add(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "The body is not `application/json`",
        );
    }
}

/// `Page_<Name>`'s `items` as an array of `$ref: <Name>`.
fn page_items_by_ref(components: &mut utoipa::openapi::Components) {
    use utoipa::openapi::schema::{ArrayItems, Schema};
    use utoipa::openapi::{Ref, RefOr};
    let names: Vec<String> = components.schemas.keys().cloned().collect();
    for (name, schema) in &mut components.schemas {
        let Some(item) = name.strip_prefix("Page_") else {
            continue;
        };
        if !names.iter().any(|n| n == item) {
            continue;
        }
        let RefOr::T(Schema::Object(page)) = schema else {
            continue;
        };
        if let Some(RefOr::T(Schema::Array(items))) = page.properties.get_mut("items") {
            items.items =
                ArrayItems::RefOrSchema(Box::new(RefOr::Ref(Ref::from_schema_name(item))));
        }
    }
}

impl utoipa::Modify for Answers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        if let Some(components) = &mut openapi.components {
            page_items_by_ref(components);
        }
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                add_common_failures(op);
                for (code, answer) in &mut op.responses.responses {
                    let RefOr::T(answer) = answer else { continue };
                    if answer.description.is_empty() {
                        answer.description = code
                            .parse::<u16>()
                            .ok()
                            .and_then(|c| StatusCode::from_u16(c).ok())
                            .and_then(|c| c.canonical_reason())
                            .unwrap_or("Answer")
                            .to_owned();
                    }
                    let problem = answer.content.get("application/json").is_some_and(|c| {
                        matches!(c, RefOr::T(c) if matches!(&c.schema,
                            Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem")))
                    });
                    if problem && let Some(c) = answer.content.shift_remove("application/json") {
                        answer
                            .content
                            .insert("application/problem+json".to_owned(), c);
                    }
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cog admin API",
        description = "The control plane of a cog deployment: plans, tenants, API keys, plugins, usage, declarative documents, the audit log and tenant placement.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        plans::list, plans::get, plans::create, plans::replace, plans::delete,
        tenants::list, tenants::get, tenants::create, tenants::replace, tenants::suspend,
        tenants::resume, tenants::delete,
        usage::get,
        keys::create, keys::list, keys::revoke,
        plugins::list, plugins::get, plugins::upload, plugins::patch, plugins::attach,
        plugins::detach, plugins::enable, plugins::disable, plugins::delete,
        apply::diff_doc, apply::apply,
        audit::list,
        placement::get, placement::add_deployment, placement::move_partition,
    ),
    components(schemas(Problem)),
    modifiers(&Security, &Answers),
    tags(
        (name = "plans", description = "Subscription plans: the limits their tenants get"),
        (name = "tenants", description = "Tenants: the API's customers"),
        (name = "keys", description = "API keys, shown once and stored hashed"),
        (name = "plugins", description = "WebAssembly and Python plugins, stored by digest"),
        (name = "apply", description = "Declarative documents: diff and apply"),
        (name = "audit", description = "Every write: who, what, when, the revision"),
        (name = "placement", description = "Which Redis deployment holds each of the 256 tenant partitions"),
    )
)]
struct Doc;
