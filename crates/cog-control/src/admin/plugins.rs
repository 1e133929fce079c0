//! `/v1/plugins`: WebAssembly and Python plugins, uploaded by bytes and
//! stored by digest, attached to tenants and plans.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::access::Caller;
use super::body::{self, Json, MAX_BLOB_BYTES, Path, Query};
use super::page::{Page, PageQuery, page};
use super::problem::Problem;
use super::{Admin, reply};
use crate::{Attach, ControlError, OnFailure, PluginLang, PluginLimits, PluginSpec, Spec};

/// Checks a plugin before it is stored: its name, what the bytes are, the
/// bytes, and every set of plugin limits it may run under — each plan's,
/// with the plugin's own over them ([`Spec::plugin_limits_for`]; `None`:
/// the defaults). `Err` is why it is refused (422 `plugin-refused`).
///
/// It runs on every upload, and on every write that makes a plugin run
/// under limits it was not checked under — a plugin's `PATCH` or
/// `attach`, a plan replaced, a tenant moved, a document applied
/// ([`Spec::plugins_to_recheck`]) — with the stored bytes, under those
/// limits only.
///
/// `cog serve` runs the plugin in the sandbox, as `cog plugin install`
/// does. It runs on a blocking thread.
///
/// [`Spec::plugin_limits_for`]: crate::Spec::plugin_limits_for
/// [`Spec::plugins_to_recheck`]: crate::Spec::plugins_to_recheck
pub type PluginCheck = Arc<
    dyn Fn(&str, PluginLang, &[u8], &[Option<PluginLimits>]) -> Result<(), String> + Send + Sync,
>;

/// The bytes of an upload, as the description has them.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub(crate) struct PluginBytes(Vec<u8>);

/// A plugin and its name.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NamedPlugin {
    /// Its name (1–64 of `a-z A-Z 0-9 _ - .`).
    pub name: String,
    /// The plugin: its digest, who it runs for, its configuration.
    pub plugin: PluginSpec,
}

/// What an upload says about the bytes besides the bytes.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// What the bytes are: `wasm` (default) or `python`.
    pub lang: Option<PluginLang>,
    /// A version label (kept from the installed plugin when left out).
    pub version: Option<String>,
    /// Installed but not run (`false`), or run (`true`); kept from the
    /// installed plugin when left out, else `true`.
    pub enabled: Option<bool>,
    /// `skip` the plugin when it fails, or `fail` the request; kept when
    /// left out, else `skip`.
    pub on_error: Option<OnFailure>,
}

/// Fields of a plugin to change; those left out stay as they are.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginPatch {
    /// A new version label.
    #[serde(default)]
    pub version: Option<String>,
    /// New bytes handed to the plugin (`cog_config`).
    #[serde(default)]
    pub config: Option<String>,
    /// Run it, or not.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// A new failure policy.
    #[serde(default)]
    pub on_error: Option<OnFailure>,
    /// New limits over the plan's plugin limits.
    #[serde(default)]
    pub limits: Option<PluginLimits>,
    /// Who it runs for, replacing the whole attachment (`attach` and
    /// `detach` add and remove).
    #[serde(default)]
    pub attach: Option<Attach>,
}

/// Lists plugins by name.
#[utoipa::path(get, path = "/v1/plugins", operation_id = "list_plugins", tag = "plugins", params(PageQuery),
    responses((status = 200, body = Page<NamedPlugin>), (status = 401, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn list(caller: Caller, Query(q): Query<PageQuery>) -> Response {
    let s = &caller.state;
    let p = page(&s.spec.plugins, &q, |name, p| {
        Some(NamedPlugin {
            name: name.to_owned(),
            plugin: p.clone(),
        })
    });
    reply::json(StatusCode::OK, s.version(), &p)
}

/// One plugin.
#[utoipa::path(get, path = "/v1/plugins/{name}", operation_id = "get_plugin", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name")),
    responses((status = 200, body = NamedPlugin), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn get(caller: Caller, Path(name): Path<String>) -> Result<Response, Problem> {
    let s = &caller.state;
    let plugin = s
        .spec
        .plugins
        .get(&name)
        .ok_or_else(|| Problem::not_found("plugin", &name))?;
    Ok(reply::json(
        StatusCode::OK,
        s.version(),
        &NamedPlugin {
            name,
            plugin: plugin.clone(),
        },
    ))
}

/// Uploads a plugin's bytes (the `.wasm` module or the `.py` source, at
/// most 16 MiB): a new plugin, or a new version of an installed one, whose
/// attachments, configuration and limits are kept. The server checks it
/// in the sandbox under every plan it runs for before storing it by digest.
#[utoipa::path(put, path = "/v1/plugins/{name}", operation_id = "upload_plugin", tag = "plugins",
    request_body(content = PluginBytes, content_type = "application/octet-stream",
        description = "The module or the Python source"),
    params(("name" = String, Path, description = "The plugin's name"), UploadQuery,
        ("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 200, body = NamedPlugin, description = "A new version of an installed plugin"),
        (status = 201, body = NamedPlugin, description = "A new plugin"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 412, body = Problem),
        (status = 413, body = Problem), (status = 422, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn upload(
    State(admin): State<Admin>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<UploadQuery>,
    req: Request,
) -> Result<Response, Problem> {
    let c = caller.control(&admin, req.headers())?;
    crate::model::check_name(&format!("plugins.{name}"), &name).map_err(ControlError::from)?;
    let bytes = body::read(req, MAX_BLOB_BYTES).await?;
    let lang = q.lang.unwrap_or_default();
    crate::control::check_plugin(lang, &bytes)?;
    if let Some(check) = admin.plugin_check.clone() {
        let spec = &caller.state.spec;
        let limits = match spec.plugins.get(&name) {
            Some(p) => spec.plugin_limits_for(&p.attach, p.limits.as_ref()),
            None => spec.plugin_limits_of(&Attach::default()),
        };
        run_check(check, &name, lang, bytes.clone(), limits).await?;
    }
    let (plugin, created) = c
        .install_plugin_with(&name, &bytes, lang, |p| {
            if let Some(v) = &q.version {
                p.version.clone_from(v);
            }
            if let Some(e) = q.enabled {
                p.enabled = e;
            }
            if let Some(o) = q.on_error {
                p.on_error = o;
            }
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(reply::json(
        status,
        c.last_version(),
        &NamedPlugin { name, plugin },
    ))
}

/// `check` on a blocking thread; its refusal is `ControlError::Plugin`.
async fn run_check(
    check: PluginCheck,
    name: &str,
    lang: PluginLang,
    bytes: bytes::Bytes,
    limits: Vec<Option<PluginLimits>>,
) -> Result<(), ControlError> {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || check(&name, lang, &bytes, &limits))
        .await
        .map_err(|e| ControlError::Plugin(format!("the check failed: {e}")))?
        .map_err(ControlError::Plugin)
}

/// The server's check of every plugin `after` (the caller's document once
/// a change is made) runs under limits it was not checked under: its
/// stored bytes, under those limits only. Nothing without a check. An
/// invalid document, or a digest with no bytes stored, is left to the
/// write to refuse.
pub(crate) async fn recheck(
    admin: &Admin,
    caller: &Caller,
    after: impl FnOnce(&mut Spec),
) -> Result<(), ControlError> {
    let Some(check) = admin.plugin_check.clone() else {
        return Ok(());
    };
    let before = &caller.state.spec;
    let mut next = before.clone();
    after(&mut next);
    // A document the write will refuse as invalid loads nothing.
    if next.validate().is_err() {
        return Ok(());
    }
    for due in before.plugins_to_recheck(&next) {
        let Some(bytes) = admin.control.store().get_blob(&due.digest).await? else {
            continue;
        };
        run_check(check.clone(), &due.name, due.lang, bytes, due.limits).await?;
    }
    Ok(())
}

async fn edit(
    admin: Admin,
    caller: Caller,
    headers: HeaderMap,
    name: String,
    change: impl Fn(&mut PluginSpec),
) -> Result<Response, Problem> {
    let c = caller.control(&admin, &headers)?;
    recheck(&admin, &caller, |s| {
        if let Some(p) = s.plugins.get_mut(&name) {
            change(p);
        }
    })
    .await?;
    let plugin = c.update_plugin(&name, change).await?;
    Ok(reply::json(
        StatusCode::OK,
        c.last_version(),
        &NamedPlugin { name, plugin },
    ))
}

/// Changes a plugin's version label, configuration, failure policy,
/// limits, who it runs for, or whether it runs.
#[utoipa::path(patch, path = "/v1/plugins/{name}", operation_id = "update_plugin", tag = "plugins", request_body = PluginPatch,
    params(("name" = String, Path, description = "The plugin's name"),
        ("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 200, body = NamedPlugin), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn patch(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(p): Json<PluginPatch>,
) -> Result<Response, Problem> {
    edit(admin, caller, headers, name, |s| {
        if let Some(v) = &p.version {
            s.version.clone_from(v);
        }
        if let Some(c) = &p.config {
            s.config.clone_from(c);
        }
        if let Some(e) = p.enabled {
            s.enabled = e;
        }
        if let Some(o) = p.on_error {
            s.on_error = o;
        }
        if let Some(l) = &p.limits {
            s.limits = Some(l.clone());
        }
        if let Some(a) = &p.attach {
            s.attach = a.clone();
        }
    })
    .await
}

/// Also runs the plugin for these tenants and every tenant on these plans.
#[utoipa::path(post, path = "/v1/plugins/{name}/attach", operation_id = "attach_plugin", tag = "plugins", request_body = Attach,
    params(("name" = String, Path, description = "The plugin's name"),
        ("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 200, body = NamedPlugin), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn attach(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(a): Json<Attach>,
) -> Result<Response, Problem> {
    edit(admin, caller, headers, name, |s| {
        for t in &a.tenants {
            if !s.attach.tenants.contains(t) {
                s.attach.tenants.push(t.clone());
            }
        }
        for p in &a.plans {
            if !s.attach.plans.contains(p) {
                s.attach.plans.push(p.clone());
            }
        }
    })
    .await
}

/// No longer runs the plugin for these tenants and plans.
#[utoipa::path(post, path = "/v1/plugins/{name}/detach", operation_id = "detach_plugin", tag = "plugins", request_body = Attach,
    params(("name" = String, Path, description = "The plugin's name"),
        ("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 200, body = NamedPlugin), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn detach(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(a): Json<Attach>,
) -> Result<Response, Problem> {
    edit(admin, caller, headers, name, |s| {
        s.attach.tenants.retain(|t| !a.tenants.contains(t));
        s.attach.plans.retain(|p| !a.plans.contains(p));
    })
    .await
}

/// Runs the plugin again.
#[utoipa::path(post, path = "/v1/plugins/{name}/enable", operation_id = "enable_plugin", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name"),
        ("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 200, body = NamedPlugin), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn enable(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    edit(admin, caller, headers, name, |s| s.enabled = true).await
}

/// Stops running the plugin; it stays installed.
#[utoipa::path(post, path = "/v1/plugins/{name}/disable", operation_id = "disable_plugin", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name"),
        ("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 200, body = NamedPlugin), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem)),
    security(("token" = [])))]
pub(crate) async fn disable(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    edit(admin, caller, headers, name, |s| s.enabled = false).await
}

/// Uninstalls a plugin (its bytes too, unless another plugin uses them).
#[utoipa::path(delete, path = "/v1/plugins/{name}", operation_id = "delete_plugin", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name"),
        ("If-Match" = Option<String>, Header, description = "Only if the store is still at this ETag")),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 412, body = Problem),
        (status = 503, body = Problem, description = "The control store or the plugin data store cannot serve now: nothing was changed")),
    security(("token" = [])))]
pub(crate) async fn delete(
    State(admin): State<Admin>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let c = caller.control(&admin, &headers)?;
    c.delete_plugin(&name).await?;
    Ok(reply::no_content(c.last_version()))
}
