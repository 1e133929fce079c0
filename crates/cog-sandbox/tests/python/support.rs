use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use cog_sandbox::{Entropy, Exchange, Limits, Phase, Plugin, PluginError, Python, Runtime};

pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The interpreter `scripts/setup` laid out (`COG_PYTHON_WASI` points
/// elsewhere).
pub(crate) fn python() -> Python {
    static PYTHON: OnceLock<Python> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let dir = std::env::var_os("COG_PYTHON_WASI")
                .map(PathBuf::from)
                .unwrap_or_else(|| root().join("target/python-wasi"));
            Python::open(&dir)
                .unwrap_or_else(|e| panic!("{e} (scripts/setup fetches it)"))
                // A busy test machine: start-up gets room.
                .startup(20_000_000_000, Duration::from_secs(60))
        })
        .clone()
}

/// The runtime every test shares (one compiled interpreter, one
/// snapshot), its artifact cached under target/ across test runs.
pub(crate) fn runtime() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| runtime_with(python())).clone()
}

pub(crate) fn runtime_with(python: Python) -> Runtime {
    Runtime::new()
        .artifact_dir(root().join("target/cog-artifacts"))
        .artifact_key(b"cog-sandbox tests")
        .python(python)
}

/// A runtime whose interpreters draw their randomness from `seed`.
pub(crate) fn seeded(seed: u64) -> Runtime {
    runtime_with(python().entropy(Entropy::Seeded(seed)))
}

pub(crate) fn exchange(tenant: &str) -> Exchange {
    let mut ex = Exchange::new(http::Method::POST, "/v1/items?q=1".parse().unwrap(), tenant);
    ex.request_headers
        .insert("user-agent", "test/1".parse().unwrap());
    ex.request_body = Some(Bytes::from_static(b"{\"a\":1}"));
    ex
}

pub(crate) fn load(source: &str) -> Plugin {
    load_with(source, Limits::python())
}

pub(crate) fn load_with(source: &str, limits: Limits) -> Plugin {
    runtime()
        .load_python("test", source.as_bytes(), limits)
        .unwrap_or_else(|e| panic!("{e}\n{source}"))
}

/// Runs the request hook for tenant `acme` on a fresh exchange.
pub(crate) fn run(plugin: &Plugin) -> (Result<(), PluginError>, Exchange) {
    run_for(plugin, "acme")
}

pub(crate) fn run_for(plugin: &Plugin, tenant: &str) -> (Result<(), PluginError>, Exchange) {
    let mut ex = exchange(tenant);
    let r = plugin.call(Phase::Request, &mut ex);
    (r, ex)
}

/// `x-r` of a request hook that sets it.
pub(crate) fn reported(source: &str) -> String {
    let p = load(source);
    let (r, ex) = run(&p);
    r.unwrap_or_else(|e| panic!("{e}\n{source}"));
    ex.request_headers["x-r"].to_str().unwrap().to_owned()
}

/// The host still serves: a good plugin works on the shared runtime.
pub(crate) fn still_serving() {
    let p = load("def on_request(req):\n    req.headers['x-plugin'] = 'ok'\n");
    let (r, ex) = run(&p);
    r.unwrap();
    assert_eq!(ex.request_headers["x-plugin"], "ok");
}
