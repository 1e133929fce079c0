//! The host API: the only functions a plugin can import (module `cog`).
//! Every pointer and length from the guest is checked against its memory;
//! every size against the plugin's limits. See `docs/plugin-abi.md`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use wasmer::{
    AsStoreRef, Function, FunctionEnv, FunctionEnvMut, FunctionType, Imports, Memory, Store, Type,
};

use crate::exchange::{Exchange, Phase, Rejection};
use crate::kv::{KvError, KvScope, KvStore};
use crate::{Limits, PluginError};

/// The ABI version this host implements (`cog_abi_version` must return it).
pub const ABI_VERSION: i32 = 1;

/// Return codes of host functions (non-negative values are lengths).
pub(crate) mod code {
    /// Done.
    pub(crate) const OK: i32 = 0;
    /// Nothing there (header, KV key).
    pub(crate) const ABSENT: i32 = -1;
    /// Refused argument: bad header name or value (CR/LF…), bad status.
    pub(crate) const INVALID: i32 = -2;
    /// Not available in this phase, or a header plugins may not set.
    pub(crate) const NOT_ALLOWED: i32 = -3;
    /// The KV store could not answer.
    pub(crate) const UNAVAILABLE: i32 = -4;
}

/// Headers a plugin may read but never set or remove: they decide how a
/// message is framed or routed, and changing them invites smuggling.
const PROTECTED: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "host",
];

/// Per-call state behind the host functions.
pub(crate) struct HostState {
    pub(crate) memory: Option<Memory>,
    pub(crate) exchange: Exchange,
    pub(crate) phase: Phase,
    pub(crate) limits: Limits,
    pub(crate) deadline: Instant,
    pub(crate) config: Bytes,
    pub(crate) kv: Arc<dyn KvStore>,
    pub(crate) scope: KvScope,
    pub(crate) log_used: usize,
}

type Ctx<'a> = FunctionEnvMut<'a, HostState>;
type HostResult = Result<i32, PluginError>;

/// Checks the deadline: every host call is a chance to stop a plugin that
/// loops through the host.
fn enter(ctx: &Ctx<'_>) -> Result<(), PluginError> {
    if Instant::now() >= ctx.data().deadline {
        return Err(PluginError::DeadlineExceeded);
    }
    Ok(())
}

/// Guest bytes `[ptr, ptr + len)`, refused (`Ok(None)`) when longer than
/// `max`; a range outside memory ends the call.
fn read(
    ctx: &Ctx<'_>,
    function: &'static str,
    ptr: i32,
    len: i32,
    max: usize,
) -> Result<Option<Vec<u8>>, PluginError> {
    let len = len as u32 as usize;
    if len > max {
        return Ok(None);
    }
    let memory = ctx
        .data()
        .memory
        .as_ref()
        .ok_or(PluginError::OutOfBounds { function })?;
    let mut buf = vec![0; len];
    memory
        .view(ctx)
        .read(u64::from(ptr as u32), &mut buf)
        .map_err(|_| PluginError::OutOfBounds { function })?;
    Ok(Some(buf))
}

/// Copies `data` to `[out, out + cap)` when it fits; returns its length
/// either way (a guest with a small buffer learns the size to retry with).
fn write(ctx: &Ctx<'_>, function: &'static str, out: i32, cap: i32, data: &[u8]) -> HostResult {
    let len = i32::try_from(data.len()).map_err(|_| PluginError::OutputLimit)?;
    if data.len() > cap as u32 as usize {
        return Ok(len);
    }
    let memory = ctx
        .data()
        .memory
        .as_ref()
        .ok_or(PluginError::OutOfBounds { function })?;
    memory
        .view(ctx)
        .write(u64::from(out as u32), data)
        .map_err(|_| PluginError::OutOfBounds { function })?;
    Ok(len)
}

fn headers(state: &HostState, which: i32) -> Option<&HeaderMap> {
    match which {
        0 => Some(&state.exchange.request_headers),
        1 if state.phase == Phase::Response => Some(&state.exchange.response_headers),
        _ => None,
    }
}

fn headers_mut(state: &mut HostState, which: i32) -> Option<&mut HeaderMap> {
    match (which, state.phase) {
        (0, Phase::Request) => Some(&mut state.exchange.request_headers),
        (1, Phase::Response) => Some(&mut state.exchange.response_headers),
        _ => None,
    }
}

fn log(mut ctx: Ctx<'_>, level: i32, ptr: i32, len: i32) -> HostResult {
    enter(&ctx)?;
    let left = {
        let s = ctx.data();
        s.limits.max_log_bytes.saturating_sub(s.log_used)
    };
    let Some(bytes) = read(&ctx, "log", ptr, len, left)? else {
        return Err(PluginError::LogLimit);
    };
    let state = ctx.data_mut();
    state.log_used += bytes.len();
    let text = String::from_utf8_lossy(&bytes);
    let (plugin, tenant) = (&*state.scope.plugin, &*state.scope.tenant);
    match level {
        0 => tracing::error!(target: "cog_sandbox::plugin", plugin, tenant, "{text}"),
        1 => tracing::warn!(target: "cog_sandbox::plugin", plugin, tenant, "{text}"),
        2 => tracing::info!(target: "cog_sandbox::plugin", plugin, tenant, "{text}"),
        _ => tracing::debug!(target: "cog_sandbox::plugin", plugin, tenant, "{text}"),
    }
    Ok(code::OK)
}

fn header_name(
    ctx: &Ctx<'_>,
    f: &'static str,
    ptr: i32,
    len: i32,
) -> Result<Option<HeaderName>, PluginError> {
    let max = ctx.data().limits.max_header_bytes;
    Ok(read(ctx, f, ptr, len, max)?.and_then(|n| HeaderName::from_bytes(&n).ok()))
}

fn header_get(
    ctx: Ctx<'_>,
    which: i32,
    name_ptr: i32,
    name_len: i32,
    out: i32,
    cap: i32,
) -> HostResult {
    enter(&ctx)?;
    let Some(name) = header_name(&ctx, "header_get", name_ptr, name_len)? else {
        return Ok(code::INVALID);
    };
    let Some(map) = headers(ctx.data(), which) else {
        return Ok(code::NOT_ALLOWED);
    };
    let Some(value) = map.get(&name) else {
        return Ok(code::ABSENT);
    };
    let value = value.as_bytes().to_vec();
    write(&ctx, "header_get", out, cap, &value)
}

fn header_set(
    mut ctx: Ctx<'_>,
    which: i32,
    name_ptr: i32,
    name_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> HostResult {
    enter(&ctx)?;
    let Some(name) = header_name(&ctx, "header_set", name_ptr, name_len)? else {
        return Ok(code::INVALID);
    };
    let max = ctx.data().limits.max_header_bytes;
    // CR, LF, NUL and other control bytes are refused here: a plugin can
    // never split a header or inject one.
    let Some(value) = read(&ctx, "header_set", value_ptr, value_len, max)?
        .and_then(|v| HeaderValue::from_bytes(&v).ok())
    else {
        return Ok(code::INVALID);
    };
    if PROTECTED.contains(&name.as_str()) {
        return Ok(code::NOT_ALLOWED);
    }
    let Some(map) = headers_mut(ctx.data_mut(), which) else {
        return Ok(code::NOT_ALLOWED);
    };
    map.insert(name, value);
    Ok(code::OK)
}

fn header_remove(mut ctx: Ctx<'_>, which: i32, name_ptr: i32, name_len: i32) -> HostResult {
    enter(&ctx)?;
    let Some(name) = header_name(&ctx, "header_remove", name_ptr, name_len)? else {
        return Ok(code::INVALID);
    };
    if PROTECTED.contains(&name.as_str()) {
        return Ok(code::NOT_ALLOWED);
    }
    let Some(map) = headers_mut(ctx.data_mut(), which) else {
        return Ok(code::NOT_ALLOWED);
    };
    Ok(if map.remove(&name).is_some() {
        code::OK
    } else {
        code::ABSENT
    })
}

fn header_names(ctx: Ctx<'_>, which: i32, out: i32, cap: i32) -> HostResult {
    enter(&ctx)?;
    let Some(map) = headers(ctx.data(), which) else {
        return Ok(code::NOT_ALLOWED);
    };
    let mut names = Vec::new();
    for name in map.keys() {
        names.extend_from_slice(name.as_str().as_bytes());
        names.push(b'\n');
    }
    write(&ctx, "header_names", out, cap, &names)
}

fn request_method(ctx: Ctx<'_>, out: i32, cap: i32) -> HostResult {
    enter(&ctx)?;
    let m = ctx.data().exchange.method.as_str().as_bytes().to_vec();
    write(&ctx, "request_method", out, cap, &m)
}

fn request_uri(ctx: Ctx<'_>, out: i32, cap: i32) -> HostResult {
    enter(&ctx)?;
    let uri = &ctx.data().exchange.uri;
    let pq = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .as_bytes()
        .to_vec();
    write(&ctx, "request_uri", out, cap, &pq)
}

fn tenant(ctx: Ctx<'_>, out: i32, cap: i32) -> HostResult {
    enter(&ctx)?;
    let t = ctx.data().scope.tenant.as_bytes().to_vec();
    write(&ctx, "tenant", out, cap, &t)
}

fn response_status(ctx: Ctx<'_>) -> HostResult {
    enter(&ctx)?;
    let s = ctx.data();
    Ok(match (s.phase, s.exchange.status) {
        (Phase::Response, Some(st)) => i32::from(st.as_u16()),
        _ => code::NOT_ALLOWED,
    })
}

fn body_read(ctx: Ctx<'_>, out: i32, cap: i32) -> HostResult {
    enter(&ctx)?;
    let s = ctx.data();
    let body = match s.phase {
        Phase::Request => s.exchange.request_body.clone(),
        Phase::Response => s.exchange.response_body.clone(),
    };
    match body {
        Some(b) => write(&ctx, "body_read", out, cap, &b),
        None => Ok(code::NOT_ALLOWED),
    }
}

fn body_write(mut ctx: Ctx<'_>, ptr: i32, len: i32) -> HostResult {
    enter(&ctx)?;
    let max = ctx.data().limits.max_output_bytes;
    let Some(bytes) = read(&ctx, "body_write", ptr, len, max)? else {
        return Err(PluginError::OutputLimit);
    };
    let s = ctx.data_mut();
    let slot = match s.phase {
        Phase::Request => &mut s.exchange.request_body,
        Phase::Response => &mut s.exchange.response_body,
    };
    if slot.is_none() {
        // The body was not read for this plugin: it cannot be replaced.
        return Ok(code::NOT_ALLOWED);
    }
    *slot = Some(Bytes::from(bytes));
    Ok(code::OK)
}

fn reject(mut ctx: Ctx<'_>, status: i32, ptr: i32, len: i32) -> HostResult {
    enter(&ctx)?;
    let max = ctx.data().limits.max_output_bytes;
    let Some(body) = read(&ctx, "reject", ptr, len, max)? else {
        return Err(PluginError::OutputLimit);
    };
    let Some(status) = u16::try_from(status)
        .ok()
        .filter(|s| (400..=599).contains(s))
        .and_then(|s| http::StatusCode::from_u16(s).ok())
    else {
        return Ok(code::INVALID);
    };
    ctx.data_mut().exchange.rejected = Some(Rejection {
        status,
        body: Bytes::from(body),
    });
    Ok(code::OK)
}

fn config(ctx: Ctx<'_>, out: i32, cap: i32) -> HostResult {
    enter(&ctx)?;
    let c = ctx.data().config.clone();
    write(&ctx, "config", out, cap, &c)
}

fn kv_key(ctx: &Ctx<'_>, f: &'static str, ptr: i32, len: i32) -> Result<Vec<u8>, PluginError> {
    let max = ctx.data().limits.max_kv_key_bytes;
    read(ctx, f, ptr, len, max)?.ok_or(PluginError::KvLimit("key too long"))
}

fn kv_get(ctx: Ctx<'_>, key_ptr: i32, key_len: i32, out: i32, cap: i32) -> HostResult {
    enter(&ctx)?;
    let key = kv_key(&ctx, "kv_get", key_ptr, key_len)?;
    let s = ctx.data();
    match s.kv.get(&s.scope, &key) {
        Ok(Some(v)) => write(&ctx, "kv_get", out, cap, &v),
        Ok(None) => Ok(code::ABSENT),
        Err(_) => Ok(code::UNAVAILABLE),
    }
}

fn kv_set(ctx: Ctx<'_>, key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32) -> HostResult {
    enter(&ctx)?;
    let key = kv_key(&ctx, "kv_set", key_ptr, key_len)?;
    let max = ctx.data().limits.max_kv_value_bytes;
    let value = read(&ctx, "kv_set", value_ptr, value_len, max)?
        .ok_or(PluginError::KvLimit("value too large"))?;
    let s = ctx.data();
    match s.kv.set(&s.scope, &key, &value, s.limits.max_kv_entries) {
        Ok(()) => Ok(code::OK),
        Err(KvError::Full) => Err(PluginError::KvLimit("scope full")),
        Err(_) => Ok(code::UNAVAILABLE),
    }
}

fn kv_delete(ctx: Ctx<'_>, key_ptr: i32, key_len: i32) -> HostResult {
    enter(&ctx)?;
    let key = kv_key(&ctx, "kv_delete", key_ptr, key_len)?;
    let s = ctx.data();
    match s.kv.delete(&s.scope, &key) {
        Ok(true) => Ok(code::OK),
        Ok(false) => Ok(code::ABSENT),
        Err(_) => Ok(code::UNAVAILABLE),
    }
}

/// `(name, parameter count)` of every host function; all parameters and
/// results are `i32`.
pub(crate) const FUNCTIONS: [(&str, usize); 16] = [
    ("log", 3),
    ("header_get", 5),
    ("header_set", 5),
    ("header_remove", 3),
    ("header_names", 3),
    ("request_method", 2),
    ("request_uri", 2),
    ("tenant", 2),
    ("response_status", 0),
    ("body_read", 2),
    ("body_write", 2),
    ("reject", 3),
    ("config", 2),
    ("kv_get", 4),
    ("kv_set", 4),
    ("kv_delete", 2),
];

/// The expected type of host function `name`, if there is one.
pub(crate) fn signature(name: &str) -> Option<FunctionType> {
    let (_, params) = FUNCTIONS.iter().find(|(n, _)| *n == name)?;
    Some(FunctionType::new(vec![Type::I32; *params], vec![Type::I32]))
}

/// The import object for one call.
pub(crate) fn imports(store: &mut Store, env: &FunctionEnv<HostState>) -> Imports {
    let mut imports = Imports::new();
    let mut add = |name: &str, f: Function| imports.define("cog", name, f);
    add("log", Function::new_typed_with_env(store, env, log));
    add(
        "header_get",
        Function::new_typed_with_env(store, env, header_get),
    );
    add(
        "header_set",
        Function::new_typed_with_env(store, env, header_set),
    );
    add(
        "header_remove",
        Function::new_typed_with_env(store, env, header_remove),
    );
    add(
        "header_names",
        Function::new_typed_with_env(store, env, header_names),
    );
    add(
        "request_method",
        Function::new_typed_with_env(store, env, request_method),
    );
    add(
        "request_uri",
        Function::new_typed_with_env(store, env, request_uri),
    );
    add("tenant", Function::new_typed_with_env(store, env, tenant));
    add(
        "response_status",
        Function::new_typed_with_env(store, env, response_status),
    );
    add(
        "body_read",
        Function::new_typed_with_env(store, env, body_read),
    );
    add(
        "body_write",
        Function::new_typed_with_env(store, env, body_write),
    );
    add("reject", Function::new_typed_with_env(store, env, reject));
    add("config", Function::new_typed_with_env(store, env, config));
    add("kv_get", Function::new_typed_with_env(store, env, kv_get));
    add("kv_set", Function::new_typed_with_env(store, env, kv_set));
    add(
        "kv_delete",
        Function::new_typed_with_env(store, env, kv_delete),
    );
    imports
}

/// Whether `store`'s view of `memory` is at the cap (a trap there is most
/// likely the guest giving up after a failed `memory.grow`).
pub(crate) fn memory_at_cap(memory: &Memory, store: &impl AsStoreRef, limits: &Limits) -> bool {
    memory.view(store).data_size() + 65_536 > u64::from(limits.memory_pages()) * 65_536
}
