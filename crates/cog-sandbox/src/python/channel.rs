//! The channel between the `cog` Python module and the host: fd 4 of the
//! interpreter's WASI. The guest writes one message per host call and
//! reads the answer back:
//!
//! - message: `len: u32`, then `op: u8` and its fields — each field but
//!   the last prefixed with its `u32` length, the last running to the end;
//!   integers are 4-byte little-endian fields;
//! - answer: `code: i32` (a length, or a code of `docs/plugin-abi.md`),
//!   `len: u32`, then `len` bytes of data.
//!
//! Every host function runs through [`crate::ops`], with the same limit on
//! each argument as the wasm ABI, so both kinds of plugins meet the same
//! answers and errors.

use bytes::Bytes;

use super::wasi::PyState;
use crate::ops::{self, Answer, code};
use crate::{Limits, PluginError};

/// What the current call of the dispatcher is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Start-up: the `cog` module registers the dispatcher.
    Boot,
    /// Loading the plugin's source.
    Load,
    /// A request hook.
    Request,
    /// A response hook.
    Response,
}

// Operations: the host API (same numbering as nothing else; private to
// `cog.py` and this file).
const LOG: u8 = 1;
const HEADER_GET: u8 = 2;
const HEADER_SET: u8 = 3;
const HEADER_REMOVE: u8 = 4;
const HEADER_NAMES: u8 = 5;
const METHOD: u8 = 6;
const URI: u8 = 7;
const TENANT: u8 = 8;
const STATUS: u8 = 9;
const BODY_READ: u8 = 10;
const BODY_WRITE: u8 = 11;
const REJECT: u8 = 12;
const CONFIG: u8 = 13;
const KV_GET: u8 = 14;
const KV_SET: u8 = 15;
const KV_DELETE: u8 = 16;
// The dispatcher's own.
const BEGIN: u8 = 20;
const READY: u8 = 21;
const SOURCE: u8 = 22;
const HOOKS: u8 = 23;
const FAIL: u8 = 24;
const MODULE: u8 = 25;

/// How a call failed, as the guest reports it (`FAIL`): 0 (or anything
/// else) an exception, 1 a script that does not load, 2 out of memory.
const FAIL_SCRIPT: u8 = 1;
const FAIL_MEMORY: u8 = 2;

/// The guest side: the `cog` module.
const COG_PY: &str = include_str!("cog.py");

/// Longest failure message kept.
const MAX_FAILURE: usize = 2048;

/// One interpreter's channel.
pub(crate) struct Channel {
    inbox: Vec<u8>,
    outbox: Vec<u8>,
    read: usize,
    pub(crate) mode: Mode,
    /// The plugin's source, for `Load`.
    pub(crate) source: Bytes,
    /// The dispatcher (a `PyObject *`), once registered.
    pub(crate) dispatch: Option<u32>,
    /// The hooks the plugin defines (`Load`).
    pub(crate) hooks: Option<(bool, bool)>,
    /// Why the call failed, as the guest reported it.
    pub(crate) failure: Option<PluginError>,
}

impl Channel {
    pub(crate) fn new(source: Bytes) -> Self {
        Channel {
            inbox: Vec::new(),
            outbox: Vec::new(),
            read: 0,
            mode: Mode::Boot,
            source,
            dispatch: None,
            hooks: None,
            failure: None,
        }
    }

    /// Starts a call in `mode`.
    pub(crate) fn begin(&mut self, mode: Mode) {
        self.inbox.clear();
        self.outbox.clear();
        self.read = 0;
        self.mode = mode;
        self.failure = None;
    }

    /// The largest message the guest may write (a full body or KV value
    /// with its framing).
    pub(crate) fn room(&self, limits: &Limits) -> usize {
        let value = limits.max_kv_key_bytes + limits.max_kv_value_bytes;
        (limits
            .max_output_bytes
            .max(value)
            .max(2 * limits.max_header_bytes)
            .max(limits.max_log_bytes)
            .max(MAX_FAILURE)
            + 64)
            .saturating_sub(self.inbox.len())
    }

    /// What is left of the answer to read.
    pub(crate) fn reply(&self) -> &[u8] {
        &self.outbox[self.read..]
    }

    pub(crate) fn consumed(&mut self, n: usize) {
        self.read += n;
        if self.read >= self.outbox.len() {
            self.outbox.clear();
            self.read = 0;
        }
    }

    fn answer(&mut self, code: i32, data: &[u8]) {
        self.outbox.extend_from_slice(&code.to_le_bytes());
        self.outbox
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.outbox.extend_from_slice(data);
    }

    fn answer_with(&mut self, a: Answer) -> Result<(), PluginError> {
        match a {
            Answer::Code(c) => self.answer(c, &[]),
            Answer::Data(d) => {
                let len = i32::try_from(d.len()).map_err(|_| PluginError::OutputLimit)?;
                self.answer(len, &d);
            }
        }
        Ok(())
    }
}

/// `n` fields of a message body.
fn fields<const N: usize>(mut body: &[u8]) -> Option<[&[u8]; N]> {
    let mut out = [&[][..]; N];
    for (i, slot) in out.iter_mut().enumerate() {
        if i + 1 == N {
            *slot = body;
            break;
        }
        let len = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
        *slot = body.get(4..4 + len)?;
        body = &body[4 + len..];
    }
    Some(out)
}

fn int(field: &[u8]) -> Option<i32> {
    Some(i32::from_le_bytes(field.try_into().ok()?))
}

/// `field`, or `None` when longer than `max` (as the ABI reads it).
fn arg(field: &[u8], max: usize) -> Option<&[u8]> {
    (field.len() <= max).then_some(field)
}

/// Takes bytes the guest wrote to the channel; answers each complete
/// message.
pub(crate) fn receive(state: &mut PyState, bytes: &[u8]) -> Result<(), PluginError> {
    state.channel.inbox.extend_from_slice(bytes);
    loop {
        let inbox = &state.channel.inbox;
        let Some(len) = inbox
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
        else {
            return Ok(());
        };
        let len = len as usize;
        if inbox.len() < 4 + len {
            return Ok(());
        }
        if inbox.get(4) == Some(&FAIL) {
            // How the call failed, which ends it: whatever answer the
            // guest had not read (its `MemoryError` came mid-read) goes.
            state.channel.consumed(state.channel.reply().len());
        } else if !state.channel.reply().is_empty() {
            // One message, one answer, read before the next message: a
            // guest writing on without reading had the host pile answers
            // up (5-byte messages asking for `cog.py` each: 2 GB from one
            // 1 MiB write).
            return Err(PluginError::Exception(
                "cog: host call made before the last answer was read".into(),
            ));
        }
        let message: Vec<u8> = state.channel.inbox.drain(..4 + len).skip(4).collect();
        handle(state, &message)?;
    }
}

fn malformed() -> PluginError {
    PluginError::Exception("cog: malformed host call".into())
}

fn handle(state: &mut PyState, message: &[u8]) -> Result<(), PluginError> {
    let (&op, body) = message.split_first().ok_or_else(malformed)?;
    let PyState { host, channel, .. } = state;
    let limits = host.limits;
    // Outside hooks, the plugin sees no request (nor KV, nor config): only
    // the log. Module-level code cannot depend on a tenant.
    let in_hook = matches!(channel.mode, Mode::Request | Mode::Response);
    if (HEADER_GET..=KV_DELETE).contains(&op) && !in_hook {
        channel.answer(code::NOT_ALLOWED, &[]);
        return Ok(());
    }
    match op {
        LOG => {
            let [level, text] = fields::<2>(body).ok_or_else(malformed)?;
            let level = int(level).ok_or_else(malformed)?;
            let c = ops::log(host, level, arg(text, host.log_room()))?;
            channel.answer(c, &[]);
        }
        HEADER_GET => {
            let [which, name] = fields::<2>(body).ok_or_else(malformed)?;
            let which = int(which).ok_or_else(malformed)?;
            let a = ops::header_get(host, which, arg(name, limits.max_header_bytes));
            channel.answer_with(a)?;
        }
        HEADER_SET => {
            let [which, name, value] = fields::<3>(body).ok_or_else(malformed)?;
            let which = int(which).ok_or_else(malformed)?;
            let max = limits.max_header_bytes;
            let c = ops::header_set(host, which, arg(name, max), arg(value, max))?;
            channel.answer(c, &[]);
        }
        HEADER_REMOVE => {
            let [which, name] = fields::<2>(body).ok_or_else(malformed)?;
            let which = int(which).ok_or_else(malformed)?;
            let c = ops::header_remove(host, which, arg(name, limits.max_header_bytes))?;
            channel.answer(c, &[]);
        }
        HEADER_NAMES => {
            let which = int(body).ok_or_else(malformed)?;
            channel.answer_with(ops::header_names(host, which))?;
        }
        METHOD => channel.answer_with(Answer::Data(ops::request_method(host)))?,
        URI => channel.answer_with(Answer::Data(ops::request_uri(host)))?,
        TENANT => channel.answer_with(Answer::Data(ops::tenant(host)))?,
        STATUS => channel.answer(ops::response_status(host), &[]),
        BODY_READ => channel.answer_with(ops::body_read(host))?,
        BODY_WRITE => {
            let c = ops::body_write(host, arg(body, limits.max_output_bytes))?;
            channel.answer(c, &[]);
        }
        REJECT => {
            let [status, body] = fields::<2>(body).ok_or_else(malformed)?;
            let status = int(status).ok_or_else(malformed)?;
            let c = ops::reject(host, status, arg(body, limits.max_output_bytes))?;
            channel.answer(c, &[]);
        }
        CONFIG => channel.answer_with(Answer::Data(ops::config(host)))?,
        KV_GET => {
            let a = ops::kv_get(host, arg(body, limits.max_kv_key_bytes))?;
            channel.answer_with(a)?;
        }
        KV_SET => {
            let [key, value] = fields::<2>(body).ok_or_else(malformed)?;
            let c = ops::kv_set(
                host,
                arg(key, limits.max_kv_key_bytes),
                arg(value, limits.max_kv_value_bytes),
            )?;
            channel.answer(c, &[]);
        }
        KV_DELETE => {
            let c = ops::kv_delete(host, arg(body, limits.max_kv_key_bytes))?;
            channel.answer(c, &[]);
        }
        BEGIN => {
            let mode = match channel.mode {
                Mode::Boot => 0,
                Mode::Load => 1,
                Mode::Request => 2,
                Mode::Response => 3,
            };
            channel.answer(1, &[mode]);
        }
        MODULE => channel.answer_with(Answer::Data(Bytes::from_static(COG_PY.as_bytes())))?,
        READY if channel.mode == Mode::Boot => {
            let id = int(body).ok_or_else(malformed)?;
            channel.dispatch = Some(id as u32);
            channel.answer(code::OK, &[]);
        }
        SOURCE if channel.mode == Mode::Load => {
            let source = channel.source.clone();
            channel.answer_with(Answer::Data(source))?;
        }
        HOOKS if channel.mode == Mode::Load => {
            let hooks = int(body).ok_or_else(malformed)?;
            channel.hooks = Some((hooks & 1 != 0, hooks & 2 != 0));
            channel.answer(code::OK, &[]);
        }
        FAIL => {
            let [kind, text] = fields::<2>(body).ok_or_else(malformed)?;
            let text = String::from_utf8_lossy(&text[..text.len().min(MAX_FAILURE)]).into_owned();
            channel.failure = Some(match kind.first() {
                Some(&FAIL_SCRIPT) => PluginError::InvalidScript(text),
                Some(&FAIL_MEMORY) => PluginError::MemoryLimit,
                _ => PluginError::Exception(text),
            });
            channel.answer(code::OK, &[]);
        }
        _ => channel.answer(code::NOT_ALLOWED, &[]),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_split_length_prefixed_parts_and_refuse_short_ones() {
        let mut body = 3u32.to_le_bytes().to_vec();
        body.extend_from_slice(b"abc");
        body.extend_from_slice(b"rest");
        assert_eq!(fields::<2>(&body), Some([&b"abc"[..], &b"rest"[..]]));
        assert_eq!(fields::<1>(b"all"), Some([&b"all"[..]]));
        assert_eq!(fields::<2>(&[9, 0, 0, 0, 1]), None);
        assert_eq!(fields::<2>(&[1, 0]), None);
        assert_eq!(int(&[1, 0, 0, 0]), Some(1));
        assert_eq!(int(&[1, 0, 0]), None);
        assert_eq!(arg(b"abc", 3), Some(&b"abc"[..]));
        assert_eq!(arg(b"abcd", 3), None);
    }
}
