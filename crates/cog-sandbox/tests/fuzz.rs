//! Generated modules (wasm-smith) in a process of their own: loading and
//! calling them ends in a value or a typed error — never a host crash or
//! hang.
//!
//! Its own binary: with the other suites' tests before it in one process,
//! a run sometimes stopped making progress late in this test (a worker
//! spinning inside plain Rust code, as if memory under it had changed);
//! alone it has not. See `fuzz.rs`'s stall report.

#[allow(dead_code)]
#[path = "sandbox/support.rs"]
mod support;

#[path = "sandbox/fuzz.rs"]
mod fuzz;
