//! A loaded plugin: its policy, its per-thread instance pools, and calls
//! of its hooks.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use wasmer::{Engine, FunctionEnv, Instance, Module, RuntimeError, Store, TypedFunction};
use wasmer_middlewares::metering::{MeteringPoints, get_remaining_points, set_remaining_points};

use crate::exchange::{Exchange, Phase};
use crate::host::{self, ABI_VERSION, HostState};
use crate::kv::{KvStore, MemoryKv};
use crate::{Limits, PluginError};

pub(crate) const REQUEST_HOOK: &str = "cog_on_request";
pub(crate) const RESPONSE_HOOK: &str = "cog_on_response";
pub(crate) const VERSION_EXPORT: &str = "cog_abi_version";

/// A compiled module with its engine.
pub(crate) struct Compiled {
    pub(crate) engine: Engine,
    pub(crate) module: Module,
    pub(crate) request_hook: bool,
    pub(crate) response_hook: bool,
}

/// What a plugin runs.
#[derive(Clone)]
pub(crate) enum Kind {
    /// A wasm module built for the host API.
    Wasm(Arc<Compiled>),
    /// Python source, run by the runtime's interpreter.
    Python(Arc<crate::python::Code>),
    /// Why it could not be loaded.
    Unavailable(Arc<str>),
}

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

/// A loaded plugin: its compiled module, limits, configuration and failure
/// policy. Cheap to clone; calls may run concurrently.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) name: Arc<str>,
    /// What runs, or why it could not be loaded.
    pub(crate) code: Kind,
    pub(crate) limits: Limits,
    pub(crate) config: Bytes,
    pub(crate) kv: Arc<dyn KvStore>,
    pub(crate) on_error: OnError,
    pub(crate) request_body: bool,
    pub(crate) response_body: bool,
    pub(crate) pool: Arc<Pool>,
}

/// Most idle instances one thread keeps (over all plugins and tenants).
const POOL_MAX: usize = 64;

/// Names a plugin's instances in the per-thread pools (and a Python
/// plugin's interpreters in its runtime's pool).
pub(crate) struct Pool {
    pub(crate) id: u64,
    /// A Python plugin's interpreters, whose idle ones for this pool go
    /// with it.
    python: Option<Arc<crate::python::Prepared>>,
}

/// The pools of plugins still loaded. An idle instance of any other pool
/// can never be taken again (the directory drops a plugin, or a tenant's
/// copy of it, when it changes); it is let go when its thread needs the
/// place.
static LIVE: parking_lot::Mutex<std::collections::BTreeSet<u64>> =
    parking_lot::const_mutex(std::collections::BTreeSet::new());

impl Pool {
    /// A new pool for instances of `code`.
    fn new(code: &Kind) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LIVE.lock().insert(id);
        let python = match code {
            Kind::Python(c) => Some(c.prepared.clone()),
            Kind::Wasm(_) | Kind::Unavailable(_) => None,
        };
        Pool { id, python }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        LIVE.lock().remove(&self.id);
        if let Some(python) = &self.python {
            python.pool.forget(self.id);
        }
    }
}

type PoolKey = (u64, Arc<str>);

/// Idle instances kept across all threads; beyond it, a finished
/// instance is dropped instead of kept.
const IDLE_GLOBAL_MAX: usize = 256;

/// Idle instances held now, all threads together.
pub(crate) static IDLE_TOTAL: AtomicUsize = AtomicUsize::new(0);

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
    /// this thread; when the thread's pool is full, instances of plugins no
    /// longer loaded make room, or else another plugin's or tenant's; when
    /// the process holds `IDLE_GLOBAL_MAX` idle instances, it is dropped.
    fn give(&self, tenant: Arc<str>, instance: Instantiated) {
        IDLE.with_borrow_mut(|Idle(idle)| {
            let held = |idle: &HashMap<PoolKey, Vec<Instantiated>>| -> usize {
                idle.values().map(Vec::len).sum()
            };
            if held(idle) >= POOL_MAX {
                let_orphans_go(idle);
            }
            if held(idle) >= POOL_MAX {
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
            // Reserve a place in the process-wide count; when there is none,
            // this thread's instances of plugins no longer loaded give
            // theirs up (other threads' do when they need one: spread thin
            // over many threads, they would otherwise keep every live
            // plugin from being pooled for as long as those threads live).
            let reserve = || {
                IDLE_TOTAL
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        (n < IDLE_GLOBAL_MAX).then_some(n + 1)
                    })
                    .is_ok()
            };
            let reserved = reserve() || {
                let_orphans_go(idle);
                reserve()
            };
            if reserved {
                idle.entry((self.id, tenant)).or_default().push(instance);
            }
        });
    }
}

/// Lets go of `idle`'s instances of plugins no longer loaded.
fn let_orphans_go(idle: &mut HashMap<PoolKey, Vec<Instantiated>>) {
    let live = LIVE.lock();
    let mut freed = 0;
    idle.retain(|(pool, _), list| {
        let keep = live.contains(pool);
        if !keep {
            freed += list.len();
        }
        keep
    });
    drop(live);
    IDLE_TOTAL.fetch_sub(freed, Ordering::Relaxed);
}

/// A live instance with its store and host state.
struct Instantiated {
    store: Store,
    env: FunctionEnv<HostState>,
    instance: Instance,
    memory: wasmer::Memory,
    /// Where the watchdog stops this instance (its stop flag).
    stop: Option<crate::watchdog::Stop>,
    /// Its stack budget, set before each call.
    budget: Option<crate::stack::Budget>,
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
    /// A plugin running `code` with the default policy, no configuration
    /// and no bodies.
    pub(crate) fn new(name: Arc<str>, code: Kind, limits: Limits, kv: Arc<dyn KvStore>) -> Self {
        let pool = Arc::new(Pool::new(&code));
        Plugin {
            name,
            code,
            limits,
            config: Bytes::new(),
            kv,
            on_error: OnError::default(),
            request_body: false,
            response_body: false,
            pool,
        }
    }

    /// Gives the plugin its configuration (read with the `config` host
    /// function).
    pub fn with_config(mut self, config: impl Into<Bytes>) -> Self {
        self.config = config.into();
        self
    }

    /// This plugin with instances of its own. Clones of a plugin share its
    /// instances: a call for a tenant may take the instance (or Python
    /// interpreter) an earlier call for that tenant left, with whatever
    /// state the plugin kept in it. Calls through the returned plugin and
    /// its clones never take an instance calls through `self` left, nor
    /// leave one for them — give each incarnation of a tenant its own
    /// copy and a tenant deleted and created again under the same id
    /// starts afresh, while the copy kept across changes keeps its
    /// instances warm.
    pub fn with_own_instances(mut self) -> Self {
        self.pool = Arc::new(Pool::new(&self.code));
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
        match (&self.code, phase) {
            (Kind::Wasm(c), Phase::Request) => c.request_hook,
            (Kind::Wasm(c), Phase::Response) => c.response_hook,
            (Kind::Python(c), Phase::Request) => c.hooks.0,
            (Kind::Python(c), Phase::Response) => c.hooks.1,
            (Kind::Unavailable(_), phase) => phase == Phase::Request,
        }
    }

    /// A plugin that could not be loaded (its bytes missing, refused by
    /// the sandbox…), standing in for it so its failure policy applies:
    /// each request it is attached to fails its call with
    /// [`PluginError::Unavailable`] — skipped (and counted) under
    /// [`OnError::Skip`], answered 500 under [`OnError::Fail`]. Never
    /// silently left out.
    pub fn unavailable(name: impl Into<Arc<str>>, reason: impl fmt::Display) -> Plugin {
        Plugin::new(
            name.into(),
            Kind::Unavailable(reason.to_string().into()),
            Limits::default(),
            Arc::new(MemoryKv::new()),
        )
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
        let result = match &self.code {
            Kind::Unavailable(reason) => Err(PluginError::Unavailable(reason.to_string())),
            Kind::Wasm(_) => {
                // KV calls made by the plugin become the span's children.
                let _attached = span.is_recording().then(|| span.context().attach());
                self.run(phase, exchange.clone(), hook).map(|(ex, _)| ex)
            }
            Kind::Python(code) => {
                // The call runs on the interpreter's thread: KV calls there
                // become the span's children too.
                let context = span.is_recording().then(|| span.context());
                crate::python::call(code, self, phase, exchange.clone(), context)
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
        *exchange = result?;
        Ok(())
    }

    /// The longest one hook call may take, counting everything it may wait
    /// for under a limit: its deadline, and for a Python plugin an
    /// interpreter's start (twice the start-up deadline: started, then the
    /// plugin loaded). [`PluginLayer`](crate::layer::PluginLayer) waits
    /// for a phase's hooks the sum of these and
    /// [`STRANDED_GRACE`](crate::layer::STRANDED_GRACE).
    pub fn longest_call(&self) -> std::time::Duration {
        match &self.code {
            Kind::Python(code) => self.limits.deadline + code.longest_start(),
            Kind::Wasm(_) | Kind::Unavailable(_) => self.limits.deadline,
        }
    }

    pub(crate) fn abi_version(&self) -> Result<(), PluginError> {
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
        let compiled = match &self.code {
            Kind::Wasm(c) => c,
            Kind::Unavailable(reason) => return Err(PluginError::Unavailable(reason.to_string())),
            Kind::Python(_) => unreachable!("python plugins run in the interpreter pool"),
        };
        let mut store = Store::new(compiled.engine.clone());
        let env = FunctionEnv::new(&mut store, state);
        let imports = host::imports(&mut store, &env);
        let instance = Instance::new(&mut store, &compiled.module, &imports)
            .map_err(|e| instantiation_error(&e, &self.limits))?;
        let memory = instance
            .exports
            .get_memory("memory")
            .map_err(|e| PluginError::BadExport(e.to_string()))?
            .clone();
        env.as_mut(&mut store).memory = Some(memory.clone());
        let stop = crate::watchdog::Stop::of(&mut store, &instance);
        let budget = crate::stack::Budget::of(&mut store, &instance);
        Ok(Instantiated {
            store,
            env,
            instance,
            memory,
            stop,
            budget,
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
        let state = HostState::new(
            self.name.clone(),
            exchange,
            phase,
            self.limits,
            self.config.clone(),
            self.kv.clone(),
        );
        let (deadline, tenant) = (state.deadline, state.scope.tenant.clone());
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
        if let Some(budget) = &live.budget {
            budget.reset();
        }
        let (result, stopped) = {
            let armed = crate::watchdog::arm(deadline, live.stop);
            let result = func.call(&mut live.store);
            (result, armed.fired())
        };
        match result {
            Ok(code) => {
                if export != VERSION_EXPORT && code != 0 {
                    return Err(PluginError::BadReturn(code));
                }
                let done = live.env.as_mut(&mut live.store).finish();
                self.pool.give(tenant, live);
                Ok((done, code))
            }
            Err(e) => {
                let Instantiated {
                    mut store,
                    instance,
                    memory,
                    budget,
                    ..
                } = live;
                if stopped {
                    return Err(PluginError::DeadlineExceeded);
                }
                if budget.is_some_and(|b| b.exceeded()) {
                    return Err(PluginError::Trap(crate::error::Cause::new(
                        std::io::Error::other(crate::stack::EXCEEDED_MESSAGE),
                    )));
                }
                Err(classify(e, &mut store, &instance, &memory, &self.limits))
            }
        }
    }
}

/// Names why an instance could not be made: over the memory cap (the
/// tunables refuse it), or another failure.
pub(crate) fn instantiation_error(e: &wasmer::InstantiationError, limits: &Limits) -> PluginError {
    let text = e.to_string();
    if text.contains("pages over the cap") {
        PluginError::MemoryTooLarge {
            declared_pages: 0,
            cap_pages: limits.memory_pages(),
        }
    } else {
        PluginError::Instantiate(text)
    }
}

/// Names why a call trapped.
pub(crate) fn classify(
    e: RuntimeError,
    store: &mut Store,
    instance: &Instance,
    memory: &wasmer::Memory,
    limits: &Limits,
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
        && host::memory_at_cap(memory, store, limits)
    {
        // The usual end of an allocation that `memory.grow` refused.
        return PluginError::MemoryLimit;
    }
    PluginError::Trap(crate::error::Cause::new(e))
}
