//! One interpreter: a CPython instance with its WASI state, started (from
//! the snapshot when there is one), with one plugin loaded, calling its
//! hooks. Every step runs under fuel and a deadline: start-up under the
//! interpreter's start-up budget, hooks under the plugin's limits.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use wasmer::{Instance, Memory, RuntimeError, Store, TypedFunction};
use wasmer_middlewares::metering::set_remaining_points;

use super::channel::{Channel, Mode};
use super::wasi::{self, PyState, Wasi};
use super::{Prepared, Snapshot};
use crate::exchange::{Exchange, Phase};
use crate::kv::KvStore;
use crate::ops::HostState;
use crate::watchdog::Stop;
use crate::{Limits, PluginError};

/// The bootstrap run in `__main__`: fetch the `cog` module's source from the
/// host, make it the module `cog`, register its dispatcher.
const BOOT: &str = "\
import posix, sys
def _boot():
    posix.write(4, b'\\x01\\x00\\x00\\x00\\x19')
    head = posix.read(4, 8)
    size = int.from_bytes(head[4:8], 'little')
    src = head[8:]
    while len(src) < size:
        src += posix.read(4, size - len(src))
    cog = type(sys)('cog')
    cog.__file__ = 'cog.py'
    sys.modules['cog'] = cog
    exec(compile(src, 'cog.py', 'exec'), cog.__dict__)
    cog._ready()
_boot()
del _boot, posix, sys
\0";

/// Byte offsets of `PyConfig` fields (CPython 3.11, wasm32) the host sets.
const CONFIG_SITE_IMPORT: u64 = 108;
const CONFIG_WRITE_BYTECODE: u64 = 136;
const CONFIG_BUFFERED_STDIO: u64 = 156;

/// What one plugin's calls share: its name, and the KV store.
#[derive(Clone)]
pub(crate) struct Plugin {
    pub(crate) name: Arc<str>,
    pub(crate) source: Bytes,
    pub(crate) kv: Arc<dyn KvStore>,
}

pub(crate) struct Interp {
    store: Store,
    env: wasmer::FunctionEnv<PyState>,
    instance: Instance,
    memory: Memory,
    stop: Option<Stop>,
    call: TypedFunction<i32, i32>,
    decref: TypedFunction<i32, ()>,
    dispatch: i32,
    plugin: Plugin,
}

fn missing(e: impl std::fmt::Display) -> PluginError {
    PluginError::InvalidModule(format!("not a usable CPython for WASI: {e}"))
}

impl Interp {
    /// A new interpreter with `plugin` loaded for `tenant` (empty for a
    /// check); the hooks it defines.
    pub(crate) fn start(
        py: &Prepared,
        plugin: Plugin,
        limits: &Limits,
        tenant: Arc<str>,
    ) -> Result<(Interp, (bool, bool)), PluginError> {
        let mut interp = Interp::instantiate(py, plugin, limits, tenant)?;
        match py.snapshot() {
            Some(snapshot) => interp.restore(&snapshot)?,
            None => {
                interp.boot(py)?;
                if py.snapshots {
                    py.keep(interp.snapshot(py, limits)?);
                }
            }
        }
        let hooks = interp.load(py)?;
        Ok((interp, hooks))
    }

    fn instantiate(
        py: &Prepared,
        plugin: Plugin,
        limits: &Limits,
        tenant: Arc<str>,
    ) -> Result<Interp, PluginError> {
        let mut store = Store::new(py.engine(limits));
        let exchange = Exchange::new(http::Method::GET, http::Uri::default(), tenant);
        let state = PyState {
            host: HostState::new(
                plugin.name.clone(),
                exchange,
                Phase::Request,
                *limits,
                Bytes::new(),
                plugin.kv.clone(),
            ),
            wasi: Wasi::new(py.vfs.clone(), py.clock, py.entropy),
            channel: Channel::new(plugin.source.clone()),
        };
        let env = wasmer::FunctionEnv::new(&mut store, state);
        let imports = wasi::imports(&mut store, &env);
        let instance = Instance::new(&mut store, &py.module, &imports)
            .map_err(|e| crate::plugin::instantiation_error(&e, limits))?;
        let memory = instance
            .exports
            .get_memory("memory")
            .map_err(missing)?
            .clone();
        env.as_mut(&mut store).host.memory = Some(memory.clone());
        let stop = Stop::of(&mut store, &instance);
        let call = instance
            .exports
            .get_typed_function(&store, "cog_call")
            .map_err(missing)?;
        let decref = instance
            .exports
            .get_typed_function(&store, "cog_decref")
            .map_err(missing)?;
        Ok(Interp {
            store,
            env,
            instance,
            memory,
            stop,
            call,
            decref,
            dispatch: 0,
            plugin,
        })
    }

    fn state(&mut self) -> &mut PyState {
        self.env.as_mut(&mut self.store)
    }

    /// Runs `f` with `fuel` and until `deadline`; a trap becomes the error
    /// that caused it.
    fn run<R>(
        &mut self,
        fuel: u64,
        deadline: Instant,
        f: impl FnOnce(&mut Self) -> Result<R, RuntimeError>,
    ) -> Result<R, PluginError> {
        set_remaining_points(&mut self.store, &self.instance, fuel);
        self.state().host.deadline = deadline;
        let (result, stopped) = {
            let armed = crate::watchdog::arm(deadline, self.stop);
            let result = f(self);
            (result, armed.fired())
        };
        result.map_err(|e| {
            if stopped {
                return PluginError::DeadlineExceeded;
            }
            let limits = self.state().host.limits;
            crate::plugin::classify(e, &mut self.store, &self.instance, &self.memory, &limits)
        })
    }

    fn export<A, R>(&self, name: &str) -> Result<TypedFunction<A, R>, PluginError>
    where
        A: wasmer::WasmTypeList,
        R: wasmer::WasmTypeList,
    {
        self.instance
            .exports
            .get_typed_function(&self.store, name)
            .map_err(missing)
    }

    /// libc's constructors, CPython's initialisation (isolated: no
    /// environment, no site, unbuffered standard streams), the `cog`
    /// module.
    fn boot(&mut self, py: &Prepared) -> Result<(), PluginError> {
        let deadline = Instant::now() + py.startup_deadline;
        let ctors: TypedFunction<(), ()> = self.export("cog_ctors")?;
        let malloc: TypedFunction<i32, i32> = self.export("cog_malloc")?;
        let isolated: TypedFunction<i32, ()> = self.export("cog_config_isolated")?;
        let initialize: TypedFunction<(i32, i32), ()> = self.export("cog_initialize")?;
        let run_string: TypedFunction<(i32, i32), i32> = self.export("cog_run_string")?;
        let fuel = py.startup_fuel;
        let memory = self.memory.clone();
        let (status, failed) = self.run(fuel, deadline, |me| {
            ctors.call(&mut me.store)?;
            let config = malloc.call(&mut me.store, 4096)?;
            let status = malloc.call(&mut me.store, 16)?;
            isolated.call(&mut me.store, config)?;
            {
                let view = memory.view(&me.store);
                let base = u64::from(config as u32);
                for field in [
                    CONFIG_SITE_IMPORT,
                    CONFIG_WRITE_BYTECODE,
                    CONFIG_BUFFERED_STDIO,
                ] {
                    view.write(base + field, &0i32.to_le_bytes())
                        .map_err(|e| RuntimeError::new(e.to_string()))?;
                }
            }
            initialize.call(&mut me.store, status, config)?;
            let mut st = [0u8; 16];
            memory
                .view(&me.store)
                .read(u64::from(status as u32), &mut st)
                .map_err(|e| RuntimeError::new(e.to_string()))?;
            Ok((st, i32::from_le_bytes(st[0..4].try_into().expect("4")) != 0))
        })?;
        if failed {
            let at = u32::from_le_bytes(status[8..12].try_into().expect("4"));
            return Err(PluginError::Instantiate(format!(
                "CPython did not start: {}",
                self.c_string(at)
            )));
        }
        self.state().channel.begin(Mode::Boot);
        let rc = self.run(fuel, deadline, |me| {
            let code = malloc.call(&mut me.store, BOOT.len() as i32)?;
            memory
                .view(&me.store)
                .write(u64::from(code as u32), BOOT.as_bytes())
                .map_err(|e| RuntimeError::new(e.to_string()))?;
            run_string.call(&mut me.store, code, 0)
        })?;
        let dispatch = self.state().channel.dispatch;
        match (rc, dispatch) {
            (0, Some(d)) => {
                self.dispatch = d as i32;
                Ok(())
            }
            _ => Err(PluginError::Instantiate(
                "the cog module did not start (its traceback is in the plugin log)".into(),
            )),
        }
    }

    fn c_string(&self, at: u32) -> String {
        let mut out = Vec::new();
        let view = self.memory.view(&self.store);
        let mut b = [0u8];
        for i in 0..512u64 {
            if view.read(u64::from(at) + i, &mut b).is_err() || b[0] == 0 {
                break;
            }
            out.push(b[0]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Calls the dispatcher in `mode`; what the guest reported failing.
    fn dispatch(&mut self, mode: Mode, fuel: u64, deadline: Instant) -> Result<(), PluginError> {
        self.state().channel.begin(mode);
        let (call, decref, dispatch) = (self.call.clone(), self.decref.clone(), self.dispatch);
        let result = self.run(fuel, deadline, |me| {
            let out = call.call(&mut me.store, dispatch)?;
            if out != 0 {
                decref.call(&mut me.store, out)?;
            }
            Ok(out)
        })?;
        if let Some(failure) = self.state().channel.failure.take() {
            return Err(failure);
        }
        if result == 0 {
            return Err(PluginError::Exception(
                "the cog dispatcher raised (its traceback is in the plugin log)".into(),
            ));
        }
        Ok(())
    }

    /// Runs the plugin's source; the hooks it defines.
    fn load(&mut self, py: &Prepared) -> Result<(bool, bool), PluginError> {
        let deadline = Instant::now() + py.startup_deadline;
        self.dispatch(Mode::Load, py.startup_fuel, deadline)?;
        self.state()
            .channel
            .hooks
            .ok_or_else(|| PluginError::InvalidScript("the plugin did not load".into()))
    }

    /// Runs the hook for `phase` on `exchange`.
    pub(crate) fn call(
        &mut self,
        phase: Phase,
        exchange: Exchange,
        limits: &Limits,
        config: Bytes,
        kv: Arc<dyn KvStore>,
    ) -> Result<Exchange, PluginError> {
        let host = HostState::new(
            self.plugin.name.clone(),
            exchange,
            phase,
            *limits,
            config,
            kv,
        );
        let deadline = host.deadline;
        let memory = self.state().host.memory.take();
        self.state().host = HostState { memory, ..host };
        let mode = match phase {
            Phase::Request => Mode::Request,
            Phase::Response => Mode::Response,
        };
        self.dispatch(mode, limits.fuel, deadline)?;
        Ok(self.state().host.finish())
    }

    /// This interpreter's memory, as far as it differs from a new
    /// instance's.
    fn snapshot(&mut self, py: &Prepared, limits: &Limits) -> Result<Snapshot, PluginError> {
        let fresh = Interp::instantiate(py, self.plugin.clone(), limits, "".into())?;
        let now = self
            .memory
            .view(&self.store)
            .copy_to_vec()
            .map_err(missing)?;
        let base = fresh
            .memory
            .view(&fresh.store)
            .copy_to_vec()
            .map_err(missing)?;
        let pages = changed_pages(&now, &base);
        Ok(Snapshot {
            pages: (now.len() / super::PAGE) as u32,
            diff: pages,
            dispatch: self.dispatch as u32,
            bytes: now.len(),
        })
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), PluginError> {
        let have = self.memory.view(&self.store).size().0;
        if snapshot.pages > have {
            self.memory
                .grow(&mut self.store, snapshot.pages - have)
                .map_err(|_| PluginError::MemoryLimit)?;
        }
        let view = self.memory.view(&self.store);
        for (page, bytes) in &snapshot.diff {
            view.write(u64::from(*page) * super::PAGE as u64, bytes)
                .map_err(missing)?;
        }
        self.dispatch = snapshot.dispatch as i32;
        Ok(())
    }
}

/// The pages of `now` that differ from `base` (a new instance's memory):
/// beyond `base`'s end, those that are not all zeros (a new page is).
fn changed_pages(now: &[u8], base: &[u8]) -> Vec<(u32, Box<[u8]>)> {
    let mut pages = Vec::new();
    for (i, page) in now.chunks(super::PAGE).enumerate() {
        let before = base.get(i * super::PAGE..(i + 1) * super::PAGE);
        let changed = match before {
            Some(b) => b != page,
            None => page.iter().any(|&b| b != 0),
        };
        if changed {
            pages.push((i as u32, Box::<[u8]>::from(page)));
        }
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_keeps_the_pages_that_changed_and_new_pages_that_are_not_zero() {
        const P: usize = super::super::PAGE;
        let base = vec![1u8; 3 * P];
        let mut now = base.clone();
        now[P + 7] = 9; // page 1 changed
        now[2 * P..3 * P].fill(0); // page 2 zeroed: changed too
        now.extend(vec![0u8; P]); // page 3: new, zero
        let mut tail = vec![0u8; P];
        tail[P - 1] = 5;
        now.extend(tail); // page 4: new, not zero
        let pages: Vec<u32> = changed_pages(&now, &base).iter().map(|(i, _)| *i).collect();
        assert_eq!(pages, [1, 2, 4]);
        let kept = changed_pages(&now, &base);
        assert_eq!(kept[0].1[7], 9);
        assert_eq!(kept[2].1.len(), P);
    }
}
