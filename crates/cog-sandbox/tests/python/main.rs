//! Python plugins against the real CPython for WASI (`scripts/setup`
//! fetches it into `target/python-wasi`).

mod first;
mod support;
