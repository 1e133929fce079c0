//! Generated modules (wasm-smith): whatever they are, loading and calling
//! them ends in a value or a typed error — never a host crash or hang.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cog_sandbox::{Limits, Phase, PluginError, Runtime};

use crate::support::{IMPORTS, exchange};

/// How far past its deadline a call may end: the watchdog's reaction on a
/// loaded two-core machine, with room to spare.
const CALL_MARGIN: Duration = Duration::from_millis(250);

/// Modules to try; `COG_FUZZ_MODULES` overrides.
const DEFAULT_MODULES: usize = 10_000;

/// Longest one module may take — compiling, loading, both calls — before
/// the test stops the process, saying which module and where each thread
/// waits: a hang must fail here, naming its module, rather than run into
/// CI's time limit. `COG_FUZZ_STALL_SECS` overrides.
const DEFAULT_STALL: Duration = Duration::from_secs(120);

/// What one worker is doing: the module (+1; 0 between modules), the step
/// (0 load, 1 request hook, 2 response hook) and since when (ms from the
/// test's start).
#[derive(Default)]
struct Progress {
    module: AtomicU64,
    step: AtomicU64,
    since_ms: AtomicU64,
}

impl Progress {
    fn at(&self, start: Instant, module: usize, step: u64) {
        self.since_ms
            .store(start.elapsed().as_millis() as u64, Ordering::SeqCst);
        self.step.store(step, Ordering::SeqCst);
        self.module.store(module as u64 + 1, Ordering::SeqCst);
    }
}

/// Watches the workers until `done`; a worker on one module for longer
/// than `stall` aborts the process after writing what it knows to stderr
/// (straight to the stream: the test harness's capture would drop it).
fn watch(workers: &[Progress], start: Instant, stall: Duration, done: &AtomicBool) {
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        let now = start.elapsed().as_millis() as u64;
        for (w, p) in workers.iter().enumerate() {
            let module = p.module.load(Ordering::SeqCst);
            let since = p.since_ms.load(Ordering::SeqCst);
            if module == 0 || now.saturating_sub(since) <= stall.as_millis() as u64 {
                continue;
            }
            let step = [
                "loading",
                "calling the request hook",
                "calling the response hook",
            ][p.step.load(Ordering::SeqCst).min(2) as usize];
            let mut report = format!(
                "fuzz: worker {w} stuck for {stall:?} on module {} ({step}); threads:\n",
                module - 1
            );
            if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
                for task in tasks.flatten() {
                    let read =
                        |f: &str| std::fs::read_to_string(task.path().join(f)).unwrap_or_default();
                    report.push_str(&format!(
                        "  {} {} wchan={} {}\n",
                        task.file_name().to_string_lossy(),
                        read("comm").trim(),
                        read("wchan").trim(),
                        read("stat").split(' ').nth(2).unwrap_or("?"),
                    ));
                }
            }
            let _ = std::io::stderr().write_all(report.as_bytes());
            // Every thread's stack, where gdb is installed (bounded: it
            // must not become the hang).
            let _ = std::process::Command::new("timeout")
                .args(["60", "gdb", "-p", &std::process::id().to_string(), "-batch"])
                .args(["-ex", "thread apply all bt 40"])
                .stdin(std::process::Stdio::null())
                .status();
            std::process::abort();
        }
    }
}

/// Odd modules are free-form; even ones are shaped like plugins: they may
/// import any host function and export the ABI (with random bodies), so
/// they link, instantiate and run — their `cog_abi_version` is random code
/// calling the host with random pointers.
fn config(shaped: bool) -> wasm_smith::Config {
    let mut c = wasm_smith::Config {
        max_memories: 1,
        max_memory32_bytes: 1 << 24,
        max_funcs: 12,
        max_instructions: 200,
        // Wasm 2.0 plus what wasmer enables by default; proposals it does
        // not take only produce validation errors. Bulk memory and
        // reference types included: a trap inside their libcalls
        // (`memory.fill`, `table.copy`, …) at the wasm stack's edge once
        // hung the host, and generated modules found it; the stack budget
        // keeps calls away from that edge
        // (`hostile::a_trap_in_a_libcall_at_the_stack_edge_leaves_the_host_working`).
        bulk_memory_enabled: true,
        reference_types_enabled: true,
        gc_enabled: false,
        compact_imports_enabled: false,
        exceptions_enabled: false,
        relaxed_simd_enabled: false,
        tail_call_enabled: false,
        threads_enabled: false,
        wide_arithmetic_enabled: false,
        memory64_enabled: false,
        ..wasm_smith::Config::default()
    };
    if shaped {
        c.available_imports = Some(wat::parse_str(format!("(module {IMPORTS})")).unwrap());
        c.exports = Some(
            wat::parse_str(
                r#"(module
                     (memory (export "memory") 1)
                     (func (export "cog_abi_version") (result i32) unreachable)
                     (func (export "cog_on_request") (result i32) unreachable)
                     (func (export "cog_on_response") (result i32) unreachable))"#,
            )
            .unwrap(),
        );
    }
    c
}

#[test]
fn generated_modules_never_crash_the_host() {
    let n: usize = std::env::var("COG_FUZZ_MODULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MODULES);
    let stall = std::env::var("COG_FUZZ_STALL_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(DEFAULT_STALL, Duration::from_secs);
    let rt = Runtime::new();
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get().min(4));
    let progress: Vec<Progress> = (0..threads).map(|_| Progress::default()).collect();
    let (start, done) = (Instant::now(), AtomicBool::new(false));
    let totals = std::thread::scope(|s| {
        let (progress, done) = (&progress, &done);
        s.spawn(move || watch(progress, start, stall, done));
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let rt = rt.clone();
                s.spawn(move || run_range(&rt, (t..n).step_by(threads), &progress[t], start))
            })
            .collect();
        let totals = workers
            .into_iter()
            .map(|w| w.join().expect("a fuzz worker panicked"))
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
        done.store(true, Ordering::SeqCst);
        totals
    });
    let (ran, loaded, called) = totals;
    eprintln!(
        "{n} generated modules: {ran} ran and were refused, {loaded} loaded, {called} hook calls"
    );
    // The generator must actually reach the runtime, or this test proves
    // nothing.
    assert!(ran > n / 10, "only {ran} of {n} modules ran");
    assert!(called > 0, "no module loaded, so no hook was called");
}

/// Errors that only running guest code produces: a trap, or a limit.
fn ran_under_limits(e: &PluginError) -> bool {
    matches!(
        e,
        PluginError::Trap(_)
            | PluginError::FuelExhausted
            | PluginError::DeadlineExceeded
            | PluginError::MemoryLimit
            | PluginError::OutOfBounds { .. }
            | PluginError::OutputLimit
            | PluginError::HeaderLimit
            | PluginError::LogLimit
            | PluginError::KvLimit(_)
    )
}

/// Loads and calls the modules numbered `range`; (ran, loaded, calls).
fn run_range(
    rt: &Runtime,
    range: impl Iterator<Item = usize>,
    progress: &Progress,
    start: Instant,
) -> (usize, usize, usize) {
    // Fuel bounds most calls; a short deadline stops the rest, wherever
    // the guest is then (deadlines are stopped through the fuel counter,
    // so one landing in a trap is harmless).
    let limits = Limits::default()
        .fuel(1_000_000)
        .memory_bytes(1 << 22)
        .deadline(Duration::from_millis(2));
    let (mut loaded, mut ran, mut called) = (0, 0, 0);
    for i in range {
        progress.at(start, i, 0);
        // A deterministic byte stream per module number.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let mut u = arbitrary::Unstructured::new(&bytes);
        let Ok(module) = wasm_smith::Module::new(config(i % 2 == 0), &mut u) else {
            continue;
        };
        let wasm = module.to_bytes();
        match rt.load(format!("fuzz-{i}"), &wasm, limits) {
            Ok(plugin) => {
                loaded += 1;
                for (step, phase) in [(1, Phase::Request), (2, Phase::Response)] {
                    progress.at(start, i, step);
                    let started = Instant::now();
                    let result = plugin.call(phase, &mut exchange("fuzz"));
                    let took = started.elapsed();
                    // Within the deadline, with a margin for a loaded
                    // machine: never a hang.
                    assert!(
                        took <= limits.deadline + CALL_MARGIN,
                        "module {i}: {phase:?} took {took:?}"
                    );
                    // A value, or an error a guest can cause at call time
                    // (never one that loading should have caught).
                    if let Err(e) = result {
                        assert!(
                            ran_under_limits(&e)
                                || matches!(
                                    e,
                                    PluginError::InputTooLarge
                                        | PluginError::BadReturn(_)
                                        | PluginError::Instantiate(_)
                                ),
                            "module {i}: {phase:?}: unexpected {e:?}"
                        );
                    }
                    called += 1;
                }
            }
            Err(e) => {
                // Typed, with a message.
                assert!(!e.to_string().is_empty());
                // These come from running the version export: the module
                // linked, instantiated and ran under the limits.
                if matches!(e, PluginError::AbiVersion { .. }) || ran_under_limits(&e) {
                    ran += 1;
                }
            }
        }
    }
    // Done: nothing for the watcher to time.
    progress.module.store(0, Ordering::SeqCst);
    (ran, loaded, called)
}
