//! Loading (compiling, caching) plugins and calling their hooks.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use wasmer::sys::{CompilerConfig, Cranelift, NativeEngineExt};
use wasmer::wasmparser::Operator;
use wasmer::{Engine, ExternType, Module};

use crate::host;
use crate::kv::{KvStore, MemoryKv};
use crate::plugin::{
    Compiled, IDLE_TOTAL, Kind, Plugin, REQUEST_HOOK, RESPONSE_HOOK, VERSION_EXPORT,
};
use crate::python::{Interpreter, Python};
use crate::tunables::CapTunables;
use crate::{Limits, PluginError};

/// Compiles and caches plugins, and owns the KV store they share.
///
/// Each module gets its own engine (metering is per module, and the memory
/// cap lives in the engine's tunables). Compiled modules are cached in
/// memory by the wasm's SHA-256 and the limits that shape the compiled
/// code — at most [`max_compiled`](Self::max_compiled) of them — and, with
/// [`artifact_dir`](Self::artifact_dir), on disk — at most
/// [`max_artifacts`](Self::max_artifacts) files there, the least recently
/// used going first.
///
/// An artifact on disk is native code: loading one is running it. Each is
/// authenticated with an HMAC-SHA256 under the runtime's
/// [`artifact_key`](Self::artifact_key), over the file's name (the module,
/// the limits, this version) and its bytes: whoever can write the
/// directory but does not hold the key can neither forge an artifact nor
/// move a valid one under another module's name — such a file is refused
/// and the module compiled from its wasm.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    compiled: Mutex<HashMap<[u8; 32], Arc<Compiled>>>,
    max_compiled: usize,
    artifact_dir: Option<PathBuf>,
    max_artifacts: usize,
    artifact_key: [u8; 32],
    artifacts: Arc<ArtifactCounters>,
    kv: Arc<dyn KvStore>,
    python: Option<Arc<Interpreter>>,
}

#[derive(Debug, Default)]
struct ArtifactCounters {
    loaded: AtomicU64,
    refused: AtomicU64,
    written: AtomicU64,
}

/// What the artifact directory did for a [`Runtime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ArtifactStats {
    /// Artifacts that authenticated and were loaded instead of compiling.
    pub loaded: u64,
    /// Files that were there but failed authentication (tampered, forged,
    /// written under another key, truncated): compiled instead.
    pub refused: u64,
    /// Artifacts written after compiling.
    pub written: u64,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("compiled", &self.inner.compiled.lock().len())
            .field("artifact_dir", &self.inner.artifact_dir)
            .finish_non_exhaustive()
    }
}

/// What a runtime's Python interpreters hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PythonStats {
    /// Interpreters alive (idle or serving a call).
    pub live: usize,
    /// Idle interpreters kept for reuse.
    pub idle: usize,
    /// Linear memory of one interpreter right after start-up (before its
    /// plugin is loaded), from the snapshot.
    pub started_memory_bytes: u64,
}

/// Compiled modules kept by default.
const MAX_COMPILED: usize = 256;

/// Artifacts kept in the artifact directory by default.
const MAX_ARTIFACTS: usize = 1024;

/// How old a writer's temporary file must be before it is taken for one a
/// crashed process left (a write takes well under a second).
const STALE_WRITE: std::time::Duration = std::time::Duration::from_secs(3600);

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    /// A runtime with an in-memory KV store and no artifact directory.
    pub fn new() -> Self {
        Runtime {
            inner: Arc::new(RuntimeInner {
                compiled: Mutex::new(HashMap::new()),
                max_compiled: MAX_COMPILED,
                artifact_dir: None,
                max_artifacts: MAX_ARTIFACTS,
                // Per runtime: artifacts from another process are refused
                // unless a key is configured.
                artifact_key: rand::random(),
                artifacts: Arc::default(),
                kv: Arc::new(MemoryKv::new()),
                python: None,
            }),
        }
    }

    fn with(self, f: impl FnOnce(&mut RuntimeInner)) -> Self {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => RuntimeInner {
                compiled: Mutex::new(shared.compiled.lock().clone()),
                max_compiled: shared.max_compiled,
                artifact_dir: shared.artifact_dir.clone(),
                max_artifacts: shared.max_artifacts,
                artifact_key: shared.artifact_key,
                artifacts: shared.artifacts.clone(),
                kv: shared.kv.clone(),
                python: shared.python.clone(),
            },
        };
        f(&mut inner);
        Runtime {
            inner: Arc::new(inner),
        }
    }

    /// Plugins keep their KV data in `kv`.
    pub fn kv(self, kv: Arc<dyn KvStore>) -> Self {
        self.with(|i| i.kv = kv)
    }

    /// Keeps compiled artifacts in `dir` (created if missing). With the
    /// default key (random per runtime) only this runtime trusts them; set
    /// [`artifact_key`](Self::artifact_key) so a restart loads them
    /// instead of compiling.
    pub fn artifact_dir(self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        self.with(|i| i.artifact_dir = Some(dir))
    }

    /// Keeps at most `n` artifacts in the [artifact
    /// directory](Self::artifact_dir) (default 1024). Each plugin version
    /// and each set of limits it is loaded under is a file of native code
    /// (the Python interpreter's, tens of megabytes), and a refused upload
    /// is compiled too: past `n`, writing one removes those used least
    /// recently (a load from the directory counts as a use), so a
    /// directory shared by a fleet stays bounded however tenants churn
    /// their plugins. A writer's temporary file a crash left behind is
    /// removed after an hour. Other files there are never touched.
    pub fn max_artifacts(self, n: usize) -> Self {
        self.with(|i| i.max_artifacts = n.max(1))
    }

    /// Authenticates artifacts with `key` (any length; use 32 random bytes
    /// from a secret store, kept where writers of the artifact directory
    /// cannot read it). Every process given the same key trusts the
    /// artifacts the others wrote.
    pub fn artifact_key(self, key: &[u8]) -> Self {
        let key: [u8; 32] = Sha256::digest(key).into();
        self.with(|i| i.artifact_key = key)
    }

    /// Keeps at most `n` compiled modules in memory (default 256): beyond
    /// that, modules no loaded plugin uses are let go first, then the
    /// others (their plugins keep them; a new load compiles again).
    pub fn max_compiled(self, n: usize) -> Self {
        self.with(|i| i.max_compiled = n.max(1))
    }

    /// Runs Python plugins ([`load_python`](Self::load_python)) with
    /// `python`. Its module is compiled at the first load (or loaded from
    /// the [artifact directory](Self::artifact_dir): set one, the compile
    /// takes seconds).
    pub fn python(self, python: Python) -> Self {
        let interpreter = Arc::new(Interpreter::new(python));
        self.with(|i| i.python = Some(interpreter))
    }

    /// Loads a Python plugin: `source` is a file defining
    /// `on_request(req)` and/or `on_response(resp)` (see the `cog` module
    /// in `docs/plugin-abi.md`). It is run once in a fresh interpreter to
    /// check it (module-level code included, under the interpreter's
    /// start-up budget).
    ///
    /// # Errors
    /// [`PluginError::InvalidScript`] for a syntax error, an exception at
    /// import, or no hook; [`PluginError::Unavailable`] when the runtime
    /// has no [`Python`]; a limit error when the check hits one.
    pub fn load_python(
        &self,
        name: impl Into<Arc<str>>,
        source: &[u8],
        limits: Limits,
    ) -> Result<Plugin, PluginError> {
        let interpreter = self.inner.python.as_ref().ok_or_else(|| {
            PluginError::Unavailable("this runtime has no Python interpreter".into())
        })?;
        let prepared = interpreter.prepared(|key, wasm, engine| self.module(key, wasm, engine))?;
        let name = name.into();
        let code = crate::python::load(
            prepared,
            name.clone(),
            Bytes::copy_from_slice(source),
            &limits,
        )?;
        Ok(Plugin::new(
            name,
            Kind::Python(Arc::new(code)),
            limits,
            self.inner.kv.clone(),
        ))
    }

    /// Python interpreters alive now, idle ones (kept for reuse) among them,
    /// and the linear memory of one started interpreter; zeros before the
    /// first Python plugin.
    pub fn python_interpreters(&self) -> PythonStats {
        let prepared = self.inner.python.as_ref().and_then(|i| i.compiled());
        match prepared {
            Some(p) => PythonStats {
                live: p.pool.live(),
                idle: p.pool.idle(),
                started_memory_bytes: p.started_bytes().unwrap_or(0) as u64,
            },
            None => PythonStats::default(),
        }
    }

    /// Compiled modules held in memory now.
    pub fn compiled_modules(&self) -> usize {
        self.inner.compiled.lock().len()
    }

    /// What the artifact directory did so far.
    pub fn artifact_stats(&self) -> ArtifactStats {
        let a = &self.inner.artifacts;
        ArtifactStats {
            loaded: a.loaded.load(Ordering::Relaxed),
            refused: a.refused.load(Ordering::Relaxed),
            written: a.written.load(Ordering::Relaxed),
        }
    }

    /// Idle plugin instances kept for reuse, across all threads of the
    /// process (at most 256).
    pub fn idle_instances() -> usize {
        IDLE_TOTAL.load(Ordering::Relaxed)
    }

    /// Compiles (or finds in a cache) `wasm` and checks it: imports only
    /// from the host API, `memory` and `cog_abi_version` exported, at least
    /// one hook, memory within the cap, the right ABI version.
    ///
    /// # Errors
    /// A typed [`PluginError`] for each of those.
    pub fn load(
        &self,
        name: impl Into<Arc<str>>,
        wasm: &[u8],
        limits: Limits,
    ) -> Result<Plugin, PluginError> {
        let key = cache_key(wasm, &limits);
        let cached = self.inner.compiled.lock().get(&key).cloned();
        let compiled = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(self.compile(&key, wasm, &limits)?);
                let mut compiled = self.inner.compiled.lock();
                if compiled.len() >= self.inner.max_compiled {
                    // Unused first (only the cache holds them), then any.
                    compiled.retain(|_, c| Arc::strong_count(c) > 1);
                    while compiled.len() >= self.inner.max_compiled {
                        let Some(k) = compiled.keys().next().copied() else {
                            break;
                        };
                        compiled.remove(&k);
                    }
                }
                compiled.insert(key, c.clone());
                c
            }
        };
        Ok(Plugin::new(
            name.into(),
            Kind::Wasm(compiled),
            limits,
            self.inner.kv.clone(),
        ))
    }

    fn compile(
        &self,
        key: &[u8; 32],
        wasm: &[u8],
        limits: &Limits,
    ) -> Result<Compiled, PluginError> {
        let costs = crate::stack::frame_costs(wasm)?;
        let engine = engine(limits, costs);
        let module = self.module(key, wasm, &engine)?;
        let compiled = check(engine, module, limits)?;
        // One instantiation now: linking, the start function, the memory
        // cap and the ABI version are checked before any request.
        let probe = Plugin::new(
            "probe".into(),
            Kind::Wasm(Arc::new(compiled)),
            *limits,
            Arc::new(MemoryKv::new()),
        );
        probe.abi_version()?;
        let Kind::Wasm(compiled) = probe.code else {
            unreachable!("made above")
        };
        Ok(Arc::try_unwrap(compiled).unwrap_or_else(|_| unreachable!("one owner")))
    }

    /// `wasm` compiled for `engine`: from an authentic artifact, or
    /// compiled now (and stored as one).
    fn module(&self, key: &[u8; 32], wasm: &[u8], engine: &Engine) -> Result<Module, PluginError> {
        if let Some(m) = self.load_artifact(key, engine) {
            return Ok(m);
        }
        let m = Module::new(engine, wasm).map_err(|e| PluginError::InvalidModule(e.to_string()))?;
        self.store_artifact(key, &m);
        Ok(m)
    }

    fn artifact_path(&self, key: &[u8; 32]) -> Option<PathBuf> {
        let dir = self.inner.artifact_dir.as_ref()?;
        Some(dir.join(format!("{}.cogmod", hex(key))))
    }

    /// The MAC of an artifact: the runtime's key over the cache key (which
    /// names the module, limits and version) and the serialized module.
    fn artifact_mac(&self, key: &[u8; 32]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.inner.artifact_key)
            .expect("HMAC takes any key length");
        mac.update(key);
        mac
    }

    /// A module deserialized from an artifact that authenticated under
    /// this runtime's key for exactly this cache key; `None` (compile
    /// instead) on any doubt.
    fn load_artifact(&self, key: &[u8; 32], engine: &Engine) -> Option<Module> {
        let path = self.artifact_path(key)?;
        let bytes = std::fs::read(&path).ok()?;
        let counters = &self.inner.artifacts;
        let authentic = bytes
            .strip_prefix(ARTIFACT_MAGIC)
            .and_then(|rest| rest.split_at_checked(32))
            .filter(|(tag, payload)| {
                let mut mac = self.artifact_mac(key);
                mac.update(payload);
                mac.verify_slice(tag).is_ok()
            });
        let Some((_, payload)) = authentic else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "cog_sandbox", "artifact failed authentication; recompiling");
            return None;
        };
        // SAFETY: the bytes authenticated under this runtime's key for
        // this cache key: they are an artifact a runtime holding the key
        // serialized for this module, limits and version, so they are a
        // valid artifact for this engine configuration.
        #[allow(unsafe_code)]
        let module = unsafe { Module::deserialize(engine, payload) }.ok()?;
        counters.loaded.fetch_add(1, Ordering::Relaxed);
        // Used now: the last to go when the directory is pruned.
        if let Ok(file) = std::fs::File::open(&path) {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
        Some(module)
    }

    fn store_artifact(&self, key: &[u8; 32], module: &Module) {
        let Some(path) = self.artifact_path(key) else {
            return;
        };
        let Ok(payload) = module.serialize() else {
            return;
        };
        let mut mac = self.artifact_mac(key);
        mac.update(&payload);
        let mut out = Vec::with_capacity(ARTIFACT_MAGIC.len() + 32 + payload.len());
        out.extend_from_slice(ARTIFACT_MAGIC);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out.extend_from_slice(&payload);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, &out))
            .and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => {
                self.inner.artifacts.written.fetch_add(1, Ordering::Relaxed);
                if let Some(dir) = path.parent() {
                    self.prune_artifacts(dir, &path);
                }
            }
            Err(e) => {
                tracing::warn!(target: "cog_sandbox", error = %e, "could not store a compiled plugin");
                let _ = std::fs::remove_file(&tmp);
            }
        }
    }
}

impl Runtime {
    /// Keeps `dir` within [`max_artifacts`](Self::max_artifacts), `written`
    /// (the artifact just written) among them: the others used least
    /// recently go first. Removes writers' temporary files older than
    /// [`STALE_WRITE`]. Files of other names are left alone; a file another
    /// process removes first is no error.
    fn prune_artifacts(&self, dir: &Path, written: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let now = std::time::SystemTime::now();
        let mut others = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(modified) = entry.metadata().ok().and_then(|m| m.modified().ok()) else {
                continue;
            };
            match path.extension().and_then(|e| e.to_str()) {
                Some("cogmod") if path != written => others.push((modified, path)),
                Some(ext)
                    if ext.starts_with("tmp")
                        && now
                            .duration_since(modified)
                            .is_ok_and(|age| age > STALE_WRITE) =>
                {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {}
            }
        }
        let keep = self.inner.max_artifacts - 1;
        if others.len() > keep {
            // Oldest first (ties by name, so every process agrees).
            others.sort();
            for (_, path) in &others[..others.len() - keep] {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Version 2: authenticated (HMAC-SHA256); version 1 files (a plain
/// checksum) are refused and rewritten.
const ARTIFACT_MAGIC: &[u8] = b"COGMOD2\0";

/// The cache key: the wasm, this runtime's version, and the limits that
/// shape compiled code.
pub(crate) fn cache_key(wasm: &[u8], limits: &Limits) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cog-sandbox/");
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(b"/wasmer-7.4/stop-flag/stack-budget/");
    h.update(limits.fuel.to_le_bytes());
    h.update(limits.memory_pages().to_le_bytes());
    h.update(Sha256::digest(wasm));
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An engine for one tenant module: cranelift, metering, the watchdog's
/// stop flag, the stack budget (from the module's frame estimates,
/// [`frame_costs`](crate::stack::frame_costs)), the memory cap.
pub(crate) fn engine(limits: &Limits, frame_costs: Vec<u32>) -> Engine {
    engine_with(limits, Cranelift::default(), Some(frame_costs))
}

/// [`engine`] from `compiler` (configured by the caller); a stack budget
/// only with `frame_costs`.
pub(crate) fn engine_with(
    limits: &Limits,
    mut compiler: Cranelift,
    frame_costs: Option<Vec<u32>>,
) -> Engine {
    compiler.push_middleware(Arc::new(wasmer_middlewares::Metering::new(
        limits.fuel,
        |_: &Operator<'_>| 1,
    )));
    compiler.push_middleware(Arc::new(crate::watchdog::Interrupt::default()));
    // Last: what it adds is neither metered nor looked at by the others.
    if let Some(costs) = frame_costs {
        compiler.push_middleware(Arc::new(crate::stack::StackBudget::new(costs)));
    }
    let mut engine: Engine = compiler.into();
    engine.set_tunables(CapTunables::new(limits.memory_pages()));
    engine
}

/// Imports only from the host API, with their exact types; the exports the
/// ABI needs; memory within the cap.
fn check(engine: Engine, module: Module, limits: &Limits) -> Result<Compiled, PluginError> {
    for import in module.imports() {
        let wanted = (import.module() == "cog")
            .then(|| host::signature(import.name()))
            .flatten();
        match (wanted, import.ty()) {
            (Some(sig), ExternType::Function(ty)) if *ty == sig => {}
            _ => {
                return Err(PluginError::ForbiddenImport(format!(
                    "{}.{}: {:?}",
                    import.module(),
                    import.name(),
                    import.ty()
                )));
            }
        }
    }
    let mut memory = false;
    let (mut version, mut request_hook, mut response_hook) = (false, false, false);
    for export in module.exports() {
        match (export.name(), export.ty()) {
            ("memory", ExternType::Memory(ty)) => {
                if ty.minimum.0 > limits.memory_pages() {
                    return Err(PluginError::MemoryTooLarge {
                        declared_pages: u64::from(ty.minimum.0),
                        cap_pages: limits.memory_pages(),
                    });
                }
                memory = true;
            }
            (name, ExternType::Function(f))
                if [VERSION_EXPORT, REQUEST_HOOK, RESPONSE_HOOK].contains(&name) =>
            {
                if !f.params().is_empty() || f.results() != [wasmer::Type::I32] {
                    return Err(PluginError::BadExport(format!("{name} must be () -> i32")));
                }
                match name {
                    VERSION_EXPORT => version = true,
                    REQUEST_HOOK => request_hook = true,
                    _ => response_hook = true,
                }
            }
            _ => {}
        }
    }
    if !memory {
        return Err(PluginError::BadExport("no exported `memory`".into()));
    }
    if !version {
        return Err(PluginError::BadExport(format!("no `{VERSION_EXPORT}`")));
    }
    if !request_hook && !response_hook {
        return Err(PluginError::BadExport(format!(
            "neither `{REQUEST_HOOK}` nor `{RESPONSE_HOOK}`"
        )));
    }
    Ok(Compiled {
        engine,
        module,
        request_hook,
        response_hook,
    })
}
