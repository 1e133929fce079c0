//! The host API: the only functions a plugin can import (module `cog`).
//! Every pointer and length from the guest is checked against its memory;
//! every size against the plugin's limits. See `docs/plugin-abi.md`.

use http::HeaderName;
use wasmer::{
    AsStoreRef, Function, FunctionEnv, FunctionEnvMut, FunctionType, Imports, Memory, Store, Type,
};

use crate::ops::{self, Answer, HostResult};
use crate::{Limits, PluginError};

pub(crate) use crate::ops::HostState;

/// The ABI version this host implements (`cog_abi_version` must return it).
pub const ABI_VERSION: i32 = 1;

type Ctx<'a> = FunctionEnvMut<'a, HostState>;

/// Checks the deadline: every host call is a chance to stop a plugin that
/// loops through the host.
fn enter(ctx: &Ctx<'_>) -> Result<(), PluginError> {
    ops::enter(ctx.data())
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

/// Writes an [`Answer`]: its data to the out buffer, or its code.
fn answer(ctx: &Ctx<'_>, function: &'static str, out: i32, cap: i32, a: Answer) -> HostResult {
    match a {
        Answer::Code(c) => Ok(c),
        Answer::Data(d) => write(ctx, function, out, cap, &d),
    }
}

fn log(mut ctx: Ctx<'_>, level: i32, ptr: i32, len: i32) -> HostResult {
    enter(&ctx)?;
    let room = ctx.data().log_room();
    let bytes = read(&ctx, "log", ptr, len, room)?;
    ops::log(ctx.data_mut(), level, bytes.as_deref())
}

fn header_name(
    ctx: &Ctx<'_>,
    f: &'static str,
    ptr: i32,
    len: i32,
) -> Result<Option<Vec<u8>>, PluginError> {
    read(ctx, f, ptr, len, ctx.data().limits.max_header_bytes)
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
    let name = header_name(&ctx, "header_get", name_ptr, name_len)?;
    let a = ops::header_get(ctx.data(), which, name.as_deref());
    answer(&ctx, "header_get", out, cap, a)
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
    let name = header_name(&ctx, "header_set", name_ptr, name_len)?;
    if name
        .as_deref()
        .is_none_or(|n| HeaderName::from_bytes(n).is_err())
    {
        return ops::header_set(ctx.data_mut(), which, None, None);
    }
    let max = ctx.data().limits.max_header_bytes;
    let value = read(&ctx, "header_set", value_ptr, value_len, max)?;
    ops::header_set(ctx.data_mut(), which, name.as_deref(), value.as_deref())
}

fn header_remove(mut ctx: Ctx<'_>, which: i32, name_ptr: i32, name_len: i32) -> HostResult {
    enter(&ctx)?;
    let name = header_name(&ctx, "header_remove", name_ptr, name_len)?;
    ops::header_remove(ctx.data_mut(), which, name.as_deref())
}

fn header_names(ctx: Ctx<'_>, which: i32, out: i32, cap: i32) -> HostResult {
    enter(&ctx)?;
    let a = ops::header_names(ctx.data(), which);
    answer(&ctx, "header_names", out, cap, a)
}

fn request_method(ctx: Ctx<'_>, out: i32, cap: i32) -> HostResult {
    enter(&ctx)?;
    let m = ops::request_method(ctx.data());
    write(&ctx, "request_method", out, cap, &m)
}

fn request_uri(ctx: Ctx<'_>, out: i32, cap: i32) -> HostResult {
    enter(&ctx)?;
    let pq = ops::request_uri(ctx.data());
    write(&ctx, "request_uri", out, cap, &pq)
}

fn tenant(ctx: Ctx<'_>, out: i32, cap: i32) -> HostResult {
    enter(&ctx)?;
    let t = ops::tenant(ctx.data());
    write(&ctx, "tenant", out, cap, &t)
}

fn response_status(ctx: Ctx<'_>) -> HostResult {
    enter(&ctx)?;
    Ok(ops::response_status(ctx.data()))
}

fn body_read(ctx: Ctx<'_>, out: i32, cap: i32) -> HostResult {
    enter(&ctx)?;
    let a = ops::body_read(ctx.data());
    answer(&ctx, "body_read", out, cap, a)
}

fn body_write(mut ctx: Ctx<'_>, ptr: i32, len: i32) -> HostResult {
    enter(&ctx)?;
    let max = ctx.data().limits.max_output_bytes;
    let bytes = read(&ctx, "body_write", ptr, len, max)?;
    ops::body_write(ctx.data_mut(), bytes.as_deref())
}

fn reject(mut ctx: Ctx<'_>, status: i32, ptr: i32, len: i32) -> HostResult {
    enter(&ctx)?;
    let max = ctx.data().limits.max_output_bytes;
    let body = read(&ctx, "reject", ptr, len, max)?;
    ops::reject(ctx.data_mut(), status, body.as_deref())
}

fn config(ctx: Ctx<'_>, out: i32, cap: i32) -> HostResult {
    enter(&ctx)?;
    let c = ops::config(ctx.data());
    write(&ctx, "config", out, cap, &c)
}

fn kv_key(
    ctx: &Ctx<'_>,
    f: &'static str,
    ptr: i32,
    len: i32,
) -> Result<Option<Vec<u8>>, PluginError> {
    read(ctx, f, ptr, len, ctx.data().limits.max_kv_key_bytes)
}

fn kv_get(ctx: Ctx<'_>, key_ptr: i32, key_len: i32, out: i32, cap: i32) -> HostResult {
    enter(&ctx)?;
    let key = kv_key(&ctx, "kv_get", key_ptr, key_len)?;
    let a = ops::kv_get(ctx.data(), key.as_deref())?;
    answer(&ctx, "kv_get", out, cap, a)
}

fn kv_set(ctx: Ctx<'_>, key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32) -> HostResult {
    enter(&ctx)?;
    let Some(key) = kv_key(&ctx, "kv_set", key_ptr, key_len)? else {
        return ops::kv_set(ctx.data(), None, None);
    };
    let max = ctx.data().limits.max_kv_value_bytes;
    let value = read(&ctx, "kv_set", value_ptr, value_len, max)?;
    ops::kv_set(ctx.data(), Some(&key), value.as_deref())
}

fn kv_delete(ctx: Ctx<'_>, key_ptr: i32, key_len: i32) -> HostResult {
    enter(&ctx)?;
    let key = kv_key(&ctx, "kv_delete", key_ptr, key_len)?;
    ops::kv_delete(ctx.data(), key.as_deref())
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
