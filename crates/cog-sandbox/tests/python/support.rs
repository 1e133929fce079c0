use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use cog_sandbox::{Exchange, Limits, Phase, Plugin, PluginError, Python, Runtime};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The interpreter `scripts/setup` laid out.
pub(crate) fn python() -> Python {
    static PYTHON: OnceLock<Python> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let dir = std::env::var_os("COG_PYTHON_WASI")
                .map(PathBuf::from)
                .unwrap_or_else(|| root().join("target/python-wasi"));
            Python::open(&dir).unwrap_or_else(|e| panic!("{e} (run scripts/setup)"))
        })
        .clone()
}

/// A runtime with Python, its compiled interpreter cached under target/.
pub(crate) fn runtime() -> Runtime {
    Runtime::new()
        .artifact_dir(root().join("target/cog-artifacts"))
        .artifact_key(b"cog-sandbox tests")
        .python(python())
}

pub(crate) fn exchange(tenant: &str) -> Exchange {
    let mut ex = Exchange::new(http::Method::POST, "/v1/items?q=1".parse().unwrap(), tenant);
    ex.request_headers
        .insert("user-agent", "test/1".parse().unwrap());
    ex.request_body = Some(Bytes::from_static(b"{\"a\":1}"));
    ex
}

pub(crate) fn load(rt: &Runtime, source: &str) -> Result<Plugin, PluginError> {
    rt.load_python("test", source.as_bytes(), Limits::python())
}

pub(crate) fn run(plugin: &Plugin, tenant: &str) -> (Result<(), PluginError>, Exchange) {
    let mut ex = exchange(tenant);
    let r = plugin.call(Phase::Request, &mut ex);
    (r, ex)
}
