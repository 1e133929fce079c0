//! Write cog plugins in Rust.
//!
//! A plugin is a type implementing [`Plugin`], exported with
//! [`export_plugin!`], built for `wasm32-unknown-unknown` as a `cdylib`.
//! Inside a hook, the functions of this crate read and change the request
//! or response through the host (see `docs/plugin-abi.md`); nothing else is
//! reachable — no files, no network, no clock.
//!
//! ```
//! use cog_pdk::{Plugin, Which};
//!
//! struct PoweredBy;
//!
//! impl Plugin for PoweredBy {
//!     fn on_response() -> Result<(), cog_pdk::Error> {
//!         cog_pdk::set_header(Which::Response, "x-powered-by", "cog")
//!     }
//! }
//!
//! cog_pdk::export_plugin!(PoweredBy, response);
//! ```
//!
//! Off wasm32 (tests, docs), the host functions are stubs that answer
//! [`Error::NotAllowed`].

mod ffi;

/// The ABI version this crate speaks.
pub const ABI_VERSION: i32 = 1;

/// Why a host call did not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Nothing there.
    Absent,
    /// The host refused an argument (invalid header name or value, status).
    Invalid,
    /// Not available in this hook, or a protected header.
    NotAllowed,
    /// The KV store could not answer.
    Unavailable,
    /// Another negative code.
    Code(i32),
}

impl Error {
    fn from_code(code: i32) -> Self {
        match code {
            -1 => Error::Absent,
            -2 => Error::Invalid,
            -3 => Error::NotAllowed,
            -4 => Error::Unavailable,
            c => Error::Code(c),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Absent => f.write_str("absent"),
            Error::Invalid => f.write_str("invalid argument"),
            Error::NotAllowed => f.write_str("not allowed here"),
            Error::Unavailable => f.write_str("unavailable"),
            Error::Code(c) => write!(f, "host code {c}"),
        }
    }
}

impl std::error::Error for Error {}

/// Which headers: the request's or the response's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Request headers (writable in `on_request`).
    Request,
    /// Response headers (in `on_response`).
    Response,
}

impl Which {
    fn code(self) -> i32 {
        match self {
            Which::Request => 0,
            Which::Response => 1,
        }
    }
}

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Worth knowing.
    Info,
    /// Detail.
    Debug,
}

/// A plugin: hooks run before (`on_request`) and after (`on_response`)
/// the service. Returning an error fails the call (the host then skips the
/// plugin or fails the request, by its policy).
pub trait Plugin {
    /// Runs before the service.
    fn on_request() -> Result<(), Error> {
        Ok(())
    }

    /// Runs after the service.
    fn on_response() -> Result<(), Error> {
        Ok(())
    }
}

/// Exports a [`Plugin`]'s hooks: `export_plugin!(MyPlugin, request)`,
/// `…, response)` or `…, request, response)`. Only exported hooks run.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty $(, $hook:ident)+ $(,)?) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn cog_abi_version() -> i32 {
            $crate::ABI_VERSION
        }
        $( $crate::export_plugin!(@hook $plugin, $hook); )+
    };
    (@hook $plugin:ty, request) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn cog_on_request() -> i32 {
            $crate::__finish(<$plugin as $crate::Plugin>::on_request())
        }
    };
    (@hook $plugin:ty, response) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn cog_on_response() -> i32 {
            $crate::__finish(<$plugin as $crate::Plugin>::on_response())
        }
    };
}

#[doc(hidden)]
pub fn __finish(result: Result<(), Error>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            log(Level::Error, &format!("plugin failed: {e}"));
            1
        }
    }
}

/// Calls a host function that fills an out buffer, growing the buffer
/// until the data fits.
fn fetch(call: impl Fn(i32, i32) -> i32) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; 256];
    loop {
        let len = buf.len() as i32;
        let n = call(ffi::ptr_mut(&mut buf), len);
        if n < 0 {
            return Err(Error::from_code(n));
        }
        let n = n as usize;
        if n <= buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        buf.resize(n, 0);
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn status(code: i32) -> Result<(), Error> {
    if code < 0 {
        Err(Error::from_code(code))
    } else {
        Ok(())
    }
}

/// Writes a line to the host's log.
pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Error => 0,
        Level::Warn => 1,
        Level::Info => 2,
        Level::Debug => 3,
    };
    ffi::log(level, ffi::ptr(message.as_bytes()), message.len() as i32);
}

/// The value of header `name`, if present.
pub fn header(which: Which, name: &str) -> Option<String> {
    fetch(|out, cap| {
        ffi::header_get(
            which.code(),
            ffi::ptr(name.as_bytes()),
            name.len() as i32,
            out,
            cap,
        )
    })
    .ok()
    .map(text)
}

/// Sets header `name` (replacing any value).
pub fn set_header(which: Which, name: &str, value: &str) -> Result<(), Error> {
    status(ffi::header_set(
        which.code(),
        ffi::ptr(name.as_bytes()),
        name.len() as i32,
        ffi::ptr(value.as_bytes()),
        value.len() as i32,
    ))
}

/// Removes header `name`; whether it was there.
pub fn remove_header(which: Which, name: &str) -> Result<bool, Error> {
    match ffi::header_remove(which.code(), ffi::ptr(name.as_bytes()), name.len() as i32) {
        -1 => Ok(false),
        c => status(c).map(|()| true),
    }
}

/// The header names present.
pub fn header_names(which: Which) -> Vec<String> {
    fetch(|out, cap| ffi::header_names(which.code(), out, cap))
        .map(|b| text(b).lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The request method.
pub fn method() -> String {
    fetch(ffi::request_method).map(text).unwrap_or_default()
}

/// The request path and query.
pub fn uri() -> String {
    fetch(ffi::request_uri).map(text).unwrap_or_default()
}

/// The tenant the request belongs to.
pub fn tenant() -> String {
    fetch(ffi::tenant).map(text).unwrap_or_default()
}

/// The response status (in `on_response`).
pub fn response_status() -> Option<u16> {
    u16::try_from(ffi::response_status()).ok()
}

/// The body of this phase, if the host read it for this plugin.
pub fn body() -> Option<Vec<u8>> {
    fetch(ffi::body_read).ok()
}

/// Replaces the body of this phase.
pub fn set_body(body: &[u8]) -> Result<(), Error> {
    status(ffi::body_write(ffi::ptr(body), body.len() as i32))
}

/// Answers the request with `status` (400–599) and `body` instead of the
/// service.
pub fn reject(status_code: u16, body: &[u8]) -> Result<(), Error> {
    status(ffi::reject(
        i32::from(status_code),
        ffi::ptr(body),
        body.len() as i32,
    ))
}

/// The plugin's configuration, as the host gave it.
pub fn config() -> Vec<u8> {
    fetch(ffi::config).unwrap_or_default()
}

/// The key-value store of this plugin, for this request's tenant.
pub mod kv {
    use super::{Error, ffi, status};

    /// The value under `key`.
    pub fn get(key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        match super::fetch(|out, cap| ffi::kv_get(ffi::ptr(key), key.len() as i32, out, cap)) {
            Ok(v) => Ok(Some(v)),
            Err(Error::Absent) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores `value` under `key`.
    pub fn set(key: &[u8], value: &[u8]) -> Result<(), Error> {
        status(ffi::kv_set(
            ffi::ptr(key),
            key.len() as i32,
            ffi::ptr(value),
            value.len() as i32,
        ))
    }

    /// Removes `key`; whether it was there.
    pub fn delete(key: &[u8]) -> Result<bool, Error> {
        match ffi::kv_delete(ffi::ptr(key), key.len() as i32) {
            -1 => Ok(false),
            c => status(c).map(|()| true),
        }
    }
}

/// The README's examples, compiled as doctests so that they keep up
/// with the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
