//! cog-sandbox against real wasm: the host API, every limit, hostile
//! modules, generated modules.

mod api;
mod fuzz;
mod hostile;
mod layer;
mod redis_kv;
mod samples;
mod support;
