//! Python plugins against the real CPython for WASI that `scripts/setup`
//! fetches into `target/python-wasi`: the `cog` module, every limit,
//! hostile plugins, reuse of interpreters, the sample plugins next to
//! their Rust twins, KV data in Redis.

mod api;
mod hostile;
mod redis_kv;
mod reuse;
mod samples;
mod support;
