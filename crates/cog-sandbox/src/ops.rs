//! What each host function does, whatever carries its arguments: the wasm
//! ABI of `docs/plugin-abi.md` (`host.rs`, arguments in guest memory) and
//! the Python `cog` module (`python/channel.rs`, arguments in messages).
//! Both front ends read each argument against the same limit and hand it
//! over as `None` when it is longer, so a plugin meets the same answers,
//! codes and errors in either language.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::exchange::{Exchange, Phase, Rejection};
use crate::kv::{KvError, KvQuota, KvScope, KvStore};
use crate::{Limits, PluginError};

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
    pub(crate) memory: Option<wasmer::Memory>,
    pub(crate) exchange: Exchange,
    pub(crate) phase: Phase,
    pub(crate) limits: Limits,
    pub(crate) deadline: Instant,
    pub(crate) config: Bytes,
    pub(crate) kv: Arc<dyn KvStore>,
    pub(crate) scope: KvScope,
    pub(crate) log_used: usize,
    /// The header list this call may write (request headers in the
    /// request hook, response headers in the response hook): its size
    /// now and the most it may reach, counted from its first change.
    pub(crate) header_list: Option<HeaderList>,
}

/// Size of a header list as HTTP/2 counts it (RFC 9113,
/// `SETTINGS_MAX_HEADER_LIST_SIZE`): names and values, and 32 bytes per
/// field, so a flood of empty fields counts too.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeaderList {
    size: usize,
    most: usize,
}

fn field_size(name: &HeaderName, value: &HeaderValue) -> usize {
    name.as_str().len() + value.len() + 32
}

fn fields_size<'a>(name: &HeaderName, values: impl Iterator<Item = &'a HeaderValue>) -> usize {
    values.map(|v| field_size(name, v)).sum()
}

impl HostState {
    /// The state of one call of `plugin` (KV scope) on `exchange`.
    pub(crate) fn new(
        plugin: Arc<str>,
        exchange: Exchange,
        phase: Phase,
        limits: Limits,
        config: Bytes,
        kv: Arc<dyn KvStore>,
    ) -> Self {
        let tenant = exchange.tenant.clone();
        HostState {
            memory: None,
            exchange,
            phase,
            limits,
            deadline: Instant::now() + limits.deadline,
            config,
            kv,
            scope: KvScope { tenant, plugin },
            log_used: 0,
            header_list: None,
        }
    }

    /// Takes the exchange out (the call is over), leaving nothing of this
    /// call's data reachable from the state of an idle instance.
    pub(crate) fn finish(&mut self) -> Exchange {
        self.config = Bytes::new();
        std::mem::replace(
            &mut self.exchange,
            Exchange::new(http::Method::GET, http::Uri::default(), ""),
        )
    }

    /// Log bytes this call may still write.
    pub(crate) fn log_room(&self) -> usize {
        self.limits.max_log_bytes.saturating_sub(self.log_used)
    }
}

pub(crate) type HostResult = Result<i32, PluginError>;

/// What a host function that returns data answers.
pub(crate) enum Answer {
    /// A code (no data).
    Code(i32),
    /// Data, whose length is the function's result.
    Data(Bytes),
}

/// Checks the deadline: every host call is a chance to stop a plugin that
/// loops through the host.
pub(crate) fn enter(s: &HostState) -> Result<(), PluginError> {
    if Instant::now() >= s.deadline {
        return Err(PluginError::DeadlineExceeded);
    }
    Ok(())
}

fn headers(state: &HostState, which: i32) -> Option<&HeaderMap> {
    match which {
        0 => Some(&state.exchange.request_headers),
        1 if state.phase == Phase::Response => Some(&state.exchange.response_headers),
        _ => None,
    }
}

/// The headers a plugin may change in this phase, and their list size
/// (measured at the first change: most calls change nothing).
fn headers_mut(state: &mut HostState, which: i32) -> Option<(&mut HeaderMap, &mut HeaderList)> {
    let map = match (which, state.phase) {
        (0, Phase::Request) => &mut state.exchange.request_headers,
        (1, Phase::Response) => &mut state.exchange.response_headers,
        _ => return None,
    };
    let max = state.limits.max_header_list_bytes;
    let list = state.header_list.get_or_insert_with(|| {
        let size = map.iter().map(|(n, v)| field_size(n, v)).sum();
        // A list larger from the start may not grow.
        HeaderList {
            size,
            most: max.max(size),
        }
    });
    Some((map, list))
}

/// `message` at `level` (0 error, 1 warn, 2 info, else debug); `None`:
/// longer than what is left of `max_log_bytes`.
pub(crate) fn log(s: &mut HostState, level: i32, message: Option<&[u8]>) -> HostResult {
    let Some(bytes) = message else {
        return Err(PluginError::LogLimit);
    };
    s.log_used += bytes.len();
    let text = String::from_utf8_lossy(bytes);
    let (plugin, tenant) = (&*s.scope.plugin, &*s.scope.tenant);
    match level {
        0 => tracing::error!(target: "cog_sandbox::plugin", plugin, tenant, "{text}"),
        1 => tracing::warn!(target: "cog_sandbox::plugin", plugin, tenant, "{text}"),
        2 => tracing::info!(target: "cog_sandbox::plugin", plugin, tenant, "{text}"),
        _ => tracing::debug!(target: "cog_sandbox::plugin", plugin, tenant, "{text}"),
    }
    Ok(code::OK)
}

fn header_name(name: Option<&[u8]>) -> Option<HeaderName> {
    name.and_then(|n| HeaderName::from_bytes(n).ok())
}

pub(crate) fn header_get(s: &HostState, which: i32, name: Option<&[u8]>) -> Answer {
    let Some(name) = header_name(name) else {
        return Answer::Code(code::INVALID);
    };
    let Some(map) = headers(s, which) else {
        return Answer::Code(code::NOT_ALLOWED);
    };
    match map.get(&name) {
        Some(value) => Answer::Data(Bytes::copy_from_slice(value.as_bytes())),
        None => Answer::Code(code::ABSENT),
    }
}

pub(crate) fn header_set(
    s: &mut HostState,
    which: i32,
    name: Option<&[u8]>,
    value: Option<&[u8]>,
) -> HostResult {
    let Some(name) = header_name(name) else {
        return Ok(code::INVALID);
    };
    // CR, LF, NUL and other control bytes are refused here: a plugin can
    // never split a header or inject one.
    let Some(value) = value.and_then(|v| HeaderValue::from_bytes(v).ok()) else {
        return Ok(code::INVALID);
    };
    if PROTECTED.contains(&name.as_str()) {
        return Ok(code::NOT_ALLOWED);
    }
    let Some((map, list)) = headers_mut(s, which) else {
        return Ok(code::NOT_ALLOWED);
    };
    let size = list
        .size
        .saturating_sub(fields_size(&name, map.get_all(&name).iter()))
        + field_size(&name, &value);
    if size > list.most {
        // Unchecked, a loop of new names grows the map until `HeaderMap`
        // panics at 32 768 fields, with a tenth of the default fuel used.
        return Err(PluginError::HeaderLimit);
    }
    list.size = size;
    map.insert(name, value);
    Ok(code::OK)
}

pub(crate) fn header_remove(s: &mut HostState, which: i32, name: Option<&[u8]>) -> HostResult {
    let Some(name) = header_name(name) else {
        return Ok(code::INVALID);
    };
    if PROTECTED.contains(&name.as_str()) {
        return Ok(code::NOT_ALLOWED);
    }
    let Some((map, list)) = headers_mut(s, which) else {
        return Ok(code::NOT_ALLOWED);
    };
    list.size = list
        .size
        .saturating_sub(fields_size(&name, map.get_all(&name).iter()));
    Ok(if map.remove(&name).is_some() {
        code::OK
    } else {
        code::ABSENT
    })
}

/// The header names, each followed by `\n`.
pub(crate) fn header_names(s: &HostState, which: i32) -> Answer {
    let Some(map) = headers(s, which) else {
        return Answer::Code(code::NOT_ALLOWED);
    };
    let mut names = Vec::new();
    for name in map.keys() {
        names.extend_from_slice(name.as_str().as_bytes());
        names.push(b'\n');
    }
    Answer::Data(names.into())
}

pub(crate) fn request_method(s: &HostState) -> Bytes {
    Bytes::copy_from_slice(s.exchange.method.as_str().as_bytes())
}

/// Path and query.
pub(crate) fn request_uri(s: &HostState) -> Bytes {
    let pq = s
        .exchange
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str());
    Bytes::copy_from_slice(pq.as_bytes())
}

pub(crate) fn tenant(s: &HostState) -> Bytes {
    Bytes::copy_from_slice(s.scope.tenant.as_bytes())
}

pub(crate) fn response_status(s: &HostState) -> i32 {
    match (s.phase, s.exchange.status) {
        (Phase::Response, Some(st)) => i32::from(st.as_u16()),
        _ => code::NOT_ALLOWED,
    }
}

/// The body of this phase, if the host read it for the plugin.
pub(crate) fn body_read(s: &HostState) -> Answer {
    let body = match s.phase {
        Phase::Request => &s.exchange.request_body,
        Phase::Response => &s.exchange.response_body,
    };
    match body {
        Some(b) => Answer::Data(b.clone()),
        None => Answer::Code(code::NOT_ALLOWED),
    }
}

/// `None`: over `max_output_bytes`.
pub(crate) fn body_write(s: &mut HostState, body: Option<&[u8]>) -> HostResult {
    let Some(bytes) = body else {
        return Err(PluginError::OutputLimit);
    };
    let slot = match s.phase {
        Phase::Request => &mut s.exchange.request_body,
        Phase::Response => &mut s.exchange.response_body,
    };
    if slot.is_none() {
        // The body was not read for this plugin: it cannot be replaced.
        return Ok(code::NOT_ALLOWED);
    }
    *slot = Some(Bytes::copy_from_slice(bytes));
    Ok(code::OK)
}

/// `None`: over `max_output_bytes`.
pub(crate) fn reject(s: &mut HostState, status: i32, body: Option<&[u8]>) -> HostResult {
    let Some(body) = body else {
        return Err(PluginError::OutputLimit);
    };
    let Some(status) = u16::try_from(status)
        .ok()
        .filter(|s| (400..=599).contains(s))
        .and_then(|s| http::StatusCode::from_u16(s).ok())
    else {
        return Ok(code::INVALID);
    };
    s.exchange.rejected = Some(Rejection {
        status,
        body: Bytes::copy_from_slice(body),
    });
    Ok(code::OK)
}

pub(crate) fn config(s: &HostState) -> Bytes {
    s.config.clone()
}

fn kv_key(key: Option<&[u8]>) -> Result<&[u8], PluginError> {
    key.ok_or(PluginError::KvLimit("key too long"))
}

pub(crate) fn kv_get(s: &HostState, key: Option<&[u8]>) -> Result<Answer, PluginError> {
    let key = kv_key(key)?;
    Ok(match s.kv.get(&s.scope, key) {
        Ok(Some(v)) => Answer::Data(v.into()),
        Ok(None) => Answer::Code(code::ABSENT),
        Err(_) => Answer::Code(code::UNAVAILABLE),
    })
}

pub(crate) fn kv_set(s: &HostState, key: Option<&[u8]>, value: Option<&[u8]>) -> HostResult {
    let key = kv_key(key)?;
    let value = value.ok_or(PluginError::KvLimit("value too large"))?;
    match s.kv.set(&s.scope, key, value, KvQuota::of(&s.limits)) {
        Ok(()) => Ok(code::OK),
        Err(KvError::Full) => Err(PluginError::KvLimit("scope full")),
        Err(KvError::BytesFull) => Err(PluginError::KvLimit("scope at its byte limit")),
        Err(_) => Ok(code::UNAVAILABLE),
    }
}

pub(crate) fn kv_delete(s: &HostState, key: Option<&[u8]>) -> HostResult {
    let key = kv_key(key)?;
    match s.kv.delete(&s.scope, key) {
        Ok(true) => Ok(code::OK),
        Ok(false) => Ok(code::ABSENT),
        Err(_) => Ok(code::UNAVAILABLE),
    }
}
