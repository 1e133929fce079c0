//! cog-sandbox against real wasm: the host API, every limit, hostile
//! modules (generated ones: `tests/fuzz.rs`).

mod api;
mod hostile;
mod layer;
mod redis_kv;
mod samples;
mod support;
