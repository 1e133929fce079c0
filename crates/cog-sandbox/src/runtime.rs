//! Loading (compiling, caching) plugins and calling their hooks.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use wasmer::sys::{CompilerConfig, Cranelift, NativeEngineExt};
use wasmer::wasmparser::Operator;
use wasmer::{
    Engine, ExternType, FunctionEnv, Instance, Module, RuntimeError, Store, TypedFunction,
};
use wasmer_middlewares::metering::{MeteringPoints, get_remaining_points, set_remaining_points};

use crate::exchange::{Exchange, Phase};
use crate::host::{self, ABI_VERSION, HostState};
use crate::kv::{KvScope, KvStore, MemoryKv};
use crate::tunables::CapTunables;
use crate::{Limits, PluginError};

const REQUEST_HOOK: &str = "cog_on_request";
const RESPONSE_HOOK: &str = "cog_on_response";
const VERSION_EXPORT: &str = "cog_abi_version";

/// What to do with a request when one of its plugins fails (traps or hits
/// a limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnError {
    /// Carry on as if the plugin were not there (its changes are dropped).
    #[default]
    Skip,
    /// Answer 500.
    Fail,
}

/// Compiles and caches plugins, and owns the KV store they share.
///
/// Each module gets its own engine (metering is per module, and the memory
/// cap lives in the engine's tunables). Compiled modules are cached in
/// memory by the wasm's SHA-256 and the limits that shape the compiled
/// code — at most [`max_compiled`](Self::max_compiled) of them — and, with
/// [`artifact_dir`](Self::artifact_dir), on disk.
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
    artifact_key: [u8; 32],
    artifacts: Arc<ArtifactCounters>,
    kv: Arc<dyn KvStore>,
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

/// Compiled modules kept by default.
const MAX_COMPILED: usize = 256;

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

/// A compiled module with its engine.
pub(crate) struct Compiled {
    engine: Engine,
    module: Module,
    request_hook: bool,
    response_hook: bool,
}

impl Runtime {
    /// A runtime with an in-memory KV store and no artifact directory.
    pub fn new() -> Self {
        Runtime {
            inner: Arc::new(RuntimeInner {
                compiled: Mutex::new(HashMap::new()),
                max_compiled: MAX_COMPILED,
                artifact_dir: None,
                // Per runtime: artifacts from another process are refused
                // unless a key is configured.
                artifact_key: rand::random(),
                artifacts: Arc::default(),
                kv: Arc::new(MemoryKv::new()),
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
                artifact_key: shared.artifact_key,
                artifacts: shared.artifacts.clone(),
                kv: shared.kv.clone(),
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
        Ok(Plugin {
            name: name.into(),
            compiled: Ok(compiled),
            limits,
            config: Bytes::new(),
            kv: self.inner.kv.clone(),
            on_error: OnError::default(),
            request_body: false,
            response_body: false,
            pool: Arc::default(),
        })
    }

    fn compile(
        &self,
        key: &[u8; 32],
        wasm: &[u8],
        limits: &Limits,
    ) -> Result<Compiled, PluginError> {
        let engine = engine(limits);
        let module = match self.load_artifact(key, &engine) {
            Some(m) => m,
            None => {
                let m = Module::new(&engine, wasm)
                    .map_err(|e| PluginError::InvalidModule(e.to_string()))?;
                self.store_artifact(key, &m);
                m
            }
        };
        let compiled = check(engine, module, limits)?;
        // One instantiation now: linking, the start function, the memory
        // cap and the ABI version are checked before any request.
        let probe = Plugin {
            name: "probe".into(),
            compiled: Ok(Arc::new(compiled)),
            limits: *limits,
            config: Bytes::new(),
            kv: Arc::new(MemoryKv::new()),
            on_error: OnError::Skip,
            request_body: false,
            response_body: false,
            pool: Arc::default(),
        };
        probe.abi_version()?;
        let Ok(compiled) = probe.compiled else {
            unreachable!("made above")
        };
        Ok(Arc::try_unwrap(compiled).unwrap_or_else(|_| unreachable!("one owner")))
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
        let bytes = std::fs::read(self.artifact_path(key)?).ok()?;
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
            }
            Err(e) => {
                tracing::warn!(target: "cog_sandbox", error = %e, "could not store a compiled plugin");
                let _ = std::fs::remove_file(&tmp);
            }
        }
    }
}

/// Version 2: authenticated (HMAC-SHA256); version 1 files (a plain
/// checksum) are refused and rewritten.
const ARTIFACT_MAGIC: &[u8] = b"COGMOD2\0";

/// The cache key: the wasm, this runtime's version, and the limits that
/// shape compiled code.
fn cache_key(wasm: &[u8], limits: &Limits) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cog-sandbox/");
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(b"/wasmer-7.4/");
    h.update(limits.fuel.to_le_bytes());
    h.update(limits.memory_pages().to_le_bytes());
    h.update(Sha256::digest(wasm));
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An engine for one module: cranelift, metering, the memory cap.
fn engine(limits: &Limits) -> Engine {
    let mut compiler = Cranelift::default();
    compiler.push_middleware(Arc::new(wasmer_middlewares::Metering::new(
        limits.fuel,
        |_: &Operator<'_>| 1,
    )));
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

/// A loaded plugin: its compiled module, limits, configuration and failure
/// policy. Cheap to clone; calls may run concurrently.
#[derive(Clone)]
pub struct Plugin {
    name: Arc<str>,
    /// The module, or why it could not be loaded.
    compiled: Result<Arc<Compiled>, Arc<str>>,
    limits: Limits,
    config: Bytes,
    kv: Arc<dyn KvStore>,
    on_error: OnError,
    request_body: bool,
    response_body: bool,
    pool: Arc<Pool>,
}

/// Most idle instances one thread keeps (over all plugins and tenants).
const POOL_MAX: usize = 64;

/// Names a plugin's instances in the per-thread pools.
#[derive(Debug)]
struct Pool {
    id: u64,
}

impl Default for Pool {
    fn default() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Pool {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

type PoolKey = (u64, Arc<str>);

/// Idle instances kept across all threads; beyond it, a finished
/// instance is dropped instead of kept.
const IDLE_GLOBAL_MAX: usize = 256;

/// Idle instances held now, all threads together.
static IDLE_TOTAL: AtomicUsize = AtomicUsize::new(0);

/// One thread's idle instances; what it holds leaves the process-wide
/// count when the thread ends.
#[derive(Default)]
struct Idle(HashMap<PoolKey, Vec<Instantiated>>);

impl Drop for Idle {
    fn drop(&mut self) {
        let held: usize = self.0.values().map(Vec::len).sum();
        IDLE_TOTAL.fetch_sub(held, Ordering::Relaxed);
    }
}

thread_local! {
    /// Idle instances, by (plugin, tenant). wasmer stores stay on the
    /// thread that made them, so each (blocking) thread keeps its own.
    static IDLE: std::cell::RefCell<Idle> = std::cell::RefCell::new(Idle::default());
}

impl Pool {
    /// An idle instance that served this plugin and tenant on this thread.
    fn take(&self, tenant: &Arc<str>) -> Option<Instantiated> {
        IDLE.with_borrow_mut(|Idle(idle)| {
            let key = (self.id, tenant.clone());
            let list = idle.get_mut(&key)?;
            let found = list.pop();
            if list.is_empty() {
                idle.remove(&key);
            }
            if found.is_some() {
                IDLE_TOTAL.fetch_sub(1, Ordering::Relaxed);
            }
            found
        })
    }

    /// Keeps `instance` for the next call of this plugin for `tenant` on
    /// this thread; when the thread's pool is full, another plugin's or
    /// tenant's instances make room; when the process holds
    /// `IDLE_GLOBAL_MAX` idle instances, it is dropped.
    fn give(&self, tenant: Arc<str>, instance: Instantiated) {
        IDLE.with_borrow_mut(|Idle(idle)| {
            let total: usize = idle.values().map(Vec::len).sum();
            if total >= POOL_MAX {
                let victim = idle
                    .keys()
                    .find(|k| k.0 != self.id || k.1 != tenant)
                    .cloned();
                match victim {
                    Some(k) => {
                        let freed = idle.remove(&k).map_or(0, |v| v.len());
                        IDLE_TOTAL.fetch_sub(freed, Ordering::Relaxed);
                    }
                    None => return,
                }
            }
            // Reserve a place in the process-wide count, or let it go.
            let reserved = IDLE_TOTAL
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < IDLE_GLOBAL_MAX).then_some(n + 1)
                })
                .is_ok();
            if reserved {
                idle.entry((self.id, tenant)).or_default().push(instance);
            }
        });
    }
}

/// A live instance with its store and host state.
struct Instantiated {
    store: Store,
    env: FunctionEnv<HostState>,
    instance: Instance,
    memory: wasmer::Memory,
    /// Where the watchdog stops this instance (its fuel counter).
    fuel: Option<crate::watchdog::Fuel>,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Gives the plugin its configuration (read with the `config` host
    /// function).
    pub fn with_config(mut self, config: impl Into<Bytes>) -> Self {
        self.config = config.into();
        self
    }

    /// What a request does when this plugin fails.
    pub fn on_error(mut self, policy: OnError) -> Self {
        self.on_error = policy;
        self
    }

    /// Has the [layer](crate::layer::PluginLayer) read the request body (up to
    /// `max_input_bytes`) for this plugin, and the response body; without
    /// it, a hook can neither read nor replace that body.
    pub fn bodies(mut self, request: bool, response: bool) -> Self {
        self.request_body = request;
        self.response_body = response;
        self
    }

    /// Whether the layer reads the body of `phase` for this plugin.
    pub fn reads_body(&self, phase: Phase) -> bool {
        match phase {
            Phase::Request => self.request_body,
            Phase::Response => self.response_body,
        }
    }

    /// The plugin's name (its KV scope within a tenant).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Its failure policy.
    pub fn failure_policy(&self) -> OnError {
        self.on_error
    }

    /// Whether it has a hook for `phase` (an unavailable plugin stands in
    /// the request phase only).
    pub fn hooks(&self, phase: Phase) -> bool {
        match (&self.compiled, phase) {
            (Ok(c), Phase::Request) => c.request_hook,
            (Ok(c), Phase::Response) => c.response_hook,
            (Err(_), phase) => phase == Phase::Request,
        }
    }

    /// A plugin that could not be loaded (its bytes missing, refused by
    /// the sandbox…), standing in for it so its failure policy applies:
    /// each request it is attached to fails its call with
    /// [`PluginError::Unavailable`] — skipped (and counted) under
    /// [`OnError::Skip`], answered 500 under [`OnError::Fail`]. Never
    /// silently left out.
    pub fn unavailable(name: impl Into<Arc<str>>, reason: impl fmt::Display) -> Plugin {
        Plugin {
            name: name.into(),
            compiled: Err(reason.to_string().into()),
            limits: Limits::default(),
            config: Bytes::new(),
            kv: Arc::new(MemoryKv::new()),
            on_error: OnError::default(),
            request_body: false,
            response_body: false,
            pool: Arc::default(),
        }
    }

    /// Runs the hook for `phase` on `exchange` (synchronously: call it from
    /// a blocking thread). On success the plugin's changes are in
    /// `exchange`; on error it is untouched.
    ///
    /// # Errors
    /// Why the call ended early.
    pub fn call(&self, phase: Phase, exchange: &mut Exchange) -> Result<(), PluginError> {
        if !self.hooks(phase) {
            return Ok(());
        }
        let hook = match phase {
            Phase::Request => REQUEST_HOOK,
            Phase::Response => RESPONSE_HOOK,
        };
        let span = cog_core::telemetry::Child::internal("cog-sandbox", "plugin.call");
        span.set(|| opentelemetry::KeyValue::new("cog.plugin.name", self.name.to_string()));
        span.set(|| opentelemetry::KeyValue::new("cog.plugin.phase", phase.as_str()));
        let result = match &self.compiled {
            Err(reason) => Err(PluginError::Unavailable(reason.to_string())),
            Ok(_) => {
                // KV calls made by the plugin become the span's children.
                let _attached = span.is_recording().then(|| span.context().attach());
                self.run(phase, exchange.clone(), hook)
            }
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        if let Err(e) = &result {
            span.fail(outcome, || e.to_string());
        }
        crate::metrics::call(&self.name, phase, outcome);
        *exchange = result?.0;
        Ok(())
    }

    fn abi_version(&self) -> Result<(), PluginError> {
        let placeholder = Exchange::new(http::Method::GET, http::Uri::default(), "");
        let (_, found) = self.run(Phase::Request, placeholder, VERSION_EXPORT)?;
        if found != ABI_VERSION {
            return Err(PluginError::AbiVersion {
                found,
                expected: ABI_VERSION,
            });
        }
        Ok(())
    }

    /// A new instance for `state`.
    fn instantiate(&self, state: HostState) -> Result<Instantiated, PluginError> {
        let compiled = match &self.compiled {
            Ok(c) => c,
            Err(reason) => return Err(PluginError::Unavailable(reason.to_string())),
        };
        let mut store = Store::new(compiled.engine.clone());
        let env = FunctionEnv::new(&mut store, state);
        let imports = host::imports(&mut store, &env);
        let instance = Instance::new(&mut store, &compiled.module, &imports).map_err(|e| {
            let text = e.to_string();
            if text.contains("pages over the cap") {
                PluginError::MemoryTooLarge {
                    declared_pages: 0,
                    cap_pages: self.limits.memory_pages(),
                }
            } else {
                PluginError::Instantiate(text)
            }
        })?;
        let memory = instance
            .exports
            .get_memory("memory")
            .map_err(|e| PluginError::BadExport(e.to_string()))?
            .clone();
        env.as_mut(&mut store).memory = Some(memory.clone());
        let fuel = crate::watchdog::Fuel::of(&mut store, &instance);
        Ok(Instantiated {
            store,
            env,
            instance,
            memory,
            fuel,
        })
    }

    /// One call of `export`, in an instance that served this tenant before
    /// (it goes back to the pool after a clean call) or a new one.
    fn run(
        &self,
        phase: Phase,
        exchange: Exchange,
        export: &str,
    ) -> Result<(Exchange, i32), PluginError> {
        let deadline = Instant::now() + self.limits.deadline;
        let tenant = exchange.tenant.clone();
        let state = HostState {
            memory: None,
            exchange,
            phase,
            limits: self.limits,
            deadline,
            config: self.config.clone(),
            kv: self.kv.clone(),
            scope: KvScope {
                tenant: tenant.clone(),
                plugin: self.name.clone(),
            },
            log_used: 0,
        };
        let mut live = match self.pool.take(&tenant) {
            Some(mut live) => {
                let memory = Some(live.memory.clone());
                *live.env.as_mut(&mut live.store) = HostState { memory, ..state };
                live
            }
            None => self.instantiate(state)?,
        };
        let func: TypedFunction<(), i32> = live
            .instance
            .exports
            .get_typed_function(&live.store, export)
            .map_err(|e| PluginError::BadExport(e.to_string()))?;
        set_remaining_points(&mut live.store, &live.instance, self.limits.fuel);
        let (result, stopped) = {
            let armed = crate::watchdog::arm(deadline, live.fuel);
            let result = func.call(&mut live.store);
            (result, armed.fired())
        };
        match result {
            Ok(code) => {
                if export != VERSION_EXPORT && code != 0 {
                    return Err(PluginError::BadReturn(code));
                }
                let state = live.env.as_mut(&mut live.store);
                let done = std::mem::replace(
                    &mut state.exchange,
                    Exchange::new(http::Method::GET, http::Uri::default(), ""),
                );
                // Nothing of this call's data stays reachable from the host
                // state of an idle instance.
                state.config = Bytes::new();
                self.pool.give(tenant, live);
                Ok((done, code))
            }
            Err(e) => {
                let Instantiated {
                    mut store,
                    instance,
                    memory,
                    ..
                } = live;
                if stopped {
                    return Err(PluginError::DeadlineExceeded);
                }
                Err(self.classify(e, &mut store, &instance, &memory))
            }
        }
    }

    /// Names why a call trapped.
    fn classify(
        &self,
        e: RuntimeError,
        store: &mut Store,
        instance: &Instance,
        memory: &wasmer::Memory,
    ) -> PluginError {
        let e = match e.downcast::<PluginError>() {
            Ok(host) => return host,
            Err(e) => e,
        };
        if let MeteringPoints::Exhausted = get_remaining_points(store, instance) {
            return PluginError::FuelExhausted;
        }
        let trap = e.clone().to_trap();
        if trap == Some(wasmer_types::TrapCode::UnreachableCodeReached)
            && host::memory_at_cap(memory, store, &self.limits)
        {
            // The usual end of an allocation that `memory.grow` refused.
            return PluginError::MemoryLimit;
        }
        PluginError::Trap(crate::error::Cause::new(e))
    }
}
