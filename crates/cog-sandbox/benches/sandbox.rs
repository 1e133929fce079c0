//! The cost of running a plugin hook.
//!
//! - `plugin_call/wasmer_raw`: the same work (a hook that sets one request
//!   header through a host function) as a raw wasmer typed call on an
//!   instance created beforehand, metering included — the floor.
//! - `plugin_call/cog`: one request hook end to end through cog-sandbox
//!   (fresh instance, limits armed, the exchange in and out).
//! - `plugin_cold/cog`: a new runtime loading the plugin from its compiled
//!   artifact on disk (checksum, deserialize, ABI check) up to the end of
//!   its first call.
//! - `plugin_call/python`: the same hook in Python
//!   (`req.headers['x-plugin'] = 'ok'`), warm: the tenant's interpreter is
//!   kept, the call goes to its thread and back.
//! - `plugin_cold/python`: a new tenant's first call of a loaded Python
//!   plugin (the interpreter compiled, the snapshot taken): a thread, an
//!   instance from the snapshot, the plugin's source run, the call.
//! - `plugin_cold/python_no_snapshot`: the same with CPython started from
//!   scratch every time.
//!
//! The Python benches need `target/python-wasi` (`scripts/setup`); they
//! also report the memory one idle interpreter holds.

use std::hint::black_box;
use std::sync::Arc;

use cog_sandbox::{Exchange, Limits, Phase, Runtime};
use criterion::{Criterion, criterion_group, criterion_main};
use wasmer::sys::{CompilerConfig, Cranelift};
use wasmer::{Function, FunctionEnv, FunctionEnvMut, Instance, Memory, Module, Store, imports};

const PLUGIN: &str = r#"(module
  (import "cog" "header_set" (func $header_set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-plugin")
  (data (i32.const 16) "ok")
  (func (export "cog_abi_version") (result i32) i32.const 1)
  (func (export "cog_on_request") (result i32)
    (drop (call $header_set (i32.const 0) (i32.const 0) (i32.const 8) (i32.const 16) (i32.const 2)))
    i32.const 0))"#;

fn exchange() -> Exchange {
    let mut ex = Exchange::new(http::Method::GET, "/items/1".parse().unwrap(), "acme");
    ex.request_headers
        .insert("user-agent", "bench/1".parse().unwrap());
    ex
}

struct Raw {
    memory: Option<Memory>,
    headers: http::HeaderMap,
}

fn raw_header_set(
    mut env: FunctionEnvMut<'_, Raw>,
    _which: i32,
    np: i32,
    nl: i32,
    vp: i32,
    vl: i32,
) -> i32 {
    let (state, store) = env.data_and_store_mut();
    let view = state.memory.as_ref().unwrap().view(&store);
    let mut name = vec![0; nl as usize];
    let mut value = vec![0; vl as usize];
    if view.read(np as u64, &mut name).is_err() || view.read(vp as u64, &mut value).is_err() {
        return -2;
    }
    match (
        http::HeaderName::from_bytes(&name),
        http::HeaderValue::from_bytes(&value),
    ) {
        (Ok(n), Ok(v)) => {
            state.headers.insert(n, v);
            0
        }
        _ => -2,
    }
}

fn bench(c: &mut Criterion) {
    let wasm = wat::parse_str(PLUGIN).unwrap();
    let mut g = c.benchmark_group("plugin_call");

    // Raw wasmer: one instance, reused; metering like cog's.
    let mut compiler = Cranelift::default();
    compiler.push_middleware(Arc::new(wasmer_middlewares::Metering::new(
        10_000_000,
        |_: &wasmer::wasmparser::Operator<'_>| 1,
    )));
    let mut store = Store::new(compiler);
    let module = Module::new(&store, &wasm).unwrap();
    let env = FunctionEnv::new(
        &mut store,
        Raw {
            memory: None,
            headers: http::HeaderMap::new(),
        },
    );
    let imports = imports! {
        "cog" => { "header_set" => Function::new_typed_with_env(&mut store, &env, raw_header_set) }
    };
    let instance = Instance::new(&mut store, &module, &imports).unwrap();
    env.as_mut(&mut store).memory = Some(instance.exports.get_memory("memory").unwrap().clone());
    let hook = instance
        .exports
        .get_typed_function::<(), i32>(&store, "cog_on_request")
        .unwrap();
    g.bench_function("wasmer_raw", |b| {
        b.iter(|| {
            wasmer_middlewares::metering::set_remaining_points(&mut store, &instance, 10_000_000);
            let r = hook.call(&mut store).unwrap();
            black_box((r, env.as_mut(&mut store).headers.len()))
        })
    });

    let runtime = Runtime::new();
    let plugin = runtime.load("bench", &wasm, Limits::default()).unwrap();
    g.bench_function("cog", |b| {
        b.iter(|| {
            let mut ex = exchange();
            plugin.call(Phase::Request, &mut ex).unwrap();
            black_box(ex)
        })
    });
    g.finish();

    let dir = tempfile::tempdir().unwrap();
    // Compile once, leaving the artifact on disk (under a key every
    // runtime below shares: with the default, random one, each would
    // refuse the file and compile).
    Runtime::new()
        .artifact_dir(dir.path())
        .artifact_key(b"bench")
        .load("bench", &wasm, Limits::default())
        .unwrap();
    let mut g = c.benchmark_group("plugin_cold");
    g.bench_function("cog", |b| {
        b.iter(|| {
            let plugin = Runtime::new()
                .artifact_dir(dir.path())
                .artifact_key(b"bench")
                .load("bench", &wasm, Limits::default())
                .unwrap();
            let mut ex = exchange();
            plugin.call(Phase::Request, &mut ex).unwrap();
            black_box(ex)
        })
    });
    g.finish();
}

fn python_dist() -> Option<cog_sandbox::Python> {
    let dir = std::env::var_os("COG_PYTHON_WASI")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/python-wasi")
        });
    match cog_sandbox::Python::open(&dir) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("skipping the Python benches: {e} (run scripts/setup)");
            None
        }
    }
}

const PY_PLUGIN: &[u8] = b"def on_request(req):\n    req.headers['x-plugin'] = 'ok'\n";

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn bench_python(c: &mut Criterion) {
    let Some(python) = python_dist() else { return };
    let artifacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/cog-artifacts");
    let runtime = |python: cog_sandbox::Python| {
        Runtime::new()
            .artifact_dir(&artifacts)
            .artifact_key(b"cog-sandbox benches")
            .python(python)
    };
    let rt = runtime(python.clone().max_idle(64));
    let plugin = rt
        .load_python("bench", PY_PLUGIN, Limits::python())
        .unwrap();
    let mut g = c.benchmark_group("plugin_call");
    g.bench_function("python", |b| {
        b.iter(|| {
            let mut ex = exchange();
            plugin.call(Phase::Request, &mut ex).unwrap();
            black_box(ex)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("plugin_cold");
    g.sample_size(20);
    let tenant = std::sync::atomic::AtomicU64::new(0);
    let first_call = |plugin: &cog_sandbox::Plugin| {
        let n = tenant.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut ex = Exchange::new(
            http::Method::GET,
            "/items/1".parse().unwrap(),
            format!("t{n}"),
        );
        plugin.call(Phase::Request, &mut ex).unwrap();
        black_box(ex)
    };
    g.bench_function("python", |b| b.iter(|| first_call(&plugin)));
    let scratch = runtime(python.clone().snapshots(false).max_idle(0));
    let from_scratch = scratch
        .load_python("bench", PY_PLUGIN, Limits::python())
        .unwrap();
    g.sample_size(10);
    g.bench_function("python_no_snapshot", |b| {
        b.iter(|| first_call(&from_scratch))
    });
    g.finish();

    // The memory of idle interpreters: 16 more tenants, kept warm.
    let idle = runtime(python.max_idle(64));
    let p = idle
        .load_python("bench", PY_PLUGIN, Limits::python())
        .unwrap();
    first_call(&p);
    let before = rss();
    for _ in 0..16 {
        first_call(&p);
    }
    let after = rss();
    let stats = idle.python_interpreters();
    eprintln!(
        "python: one idle interpreter holds {:.1} MiB resident ({:.1} MiB of linear memory at start-up); {} idle",
        (after.saturating_sub(before)) as f64 / 16.0 / (1 << 20) as f64,
        stats.started_memory_bytes as f64 / (1 << 20) as f64,
        stats.idle,
    );
}

criterion_group!(benches, bench, bench_python);
criterion_main!(benches);
