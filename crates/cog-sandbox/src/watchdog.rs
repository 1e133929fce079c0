//! Wall-clock deadlines for running plugins: one thread that stops any
//! call still running past its deadline, through a stop flag compiled into
//! the module.
//!
//! The [`Interrupt`] middleware gives every module a global of its own
//! (`__cog_sandbox_stop`, 0 while the call may run) and makes the guest
//! read it on entry to every function and at the head of every loop
//! iteration: `if stop { unreachable }`. Every unbounded execution goes
//! through one of those two (a loop's back edge or a call). To stop a call
//! the watchdog writes 1 there: the guest traps at its next loop iteration
//! or call, in its own code — no signal, no second unwinding path. Host
//! functions check the deadline themselves, so a guest looping through the
//! host stops there.
//!
//! The guest only ever reads the flag, so the watchdog's one write cannot
//! be lost. An earlier version zeroed the metering fuel counter instead;
//! the guest decrements that counter with a read-modify-write, and a tight
//! loop read its own buffered store back every iteration, so the zero was
//! overwritten again and again — a spinning plugin outlived a 30 ms
//! deadline by up to 22 s (the demo's fault suite caught it on CI). An
//! earlier one still used wasmer's experimental host interrupt (a signal),
//! which could deadlock when the signal landed while a trap was being
//! unwound; the generated-module test found it.
//!
//! Arming is cheap and allocation-free: each thread that runs plugins
//! owns a slot, registered once, where a call writes its deadline and
//! clears it on return. The watchdog sleeps until the earliest deadline it
//! has seen, then looks at every slot; a call only wakes it when its
//! deadline is earlier than that (under a steady load with one timeout:
//! about once per timeout, not once per call). An earlier version kept a
//! heap of every call's deadline until it passed, which cost more than
//! the call itself.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use wasmer::sys::{FunctionMiddleware, MiddlewareError, MiddlewareReaderState, ModuleMiddleware};
use wasmer::wasmparser::{BlockType, Operator};
use wasmer::{
    AsStoreMut, ExportIndex, Extern, GlobalInit, GlobalType, Instance, LocalFunctionIndex,
    Mutability, Type,
};
use wasmer_types::{GlobalIndex, ModuleInfo};

/// The export naming the stop flag.
const STOP_EXPORT: &str = "__cog_sandbox_stop";

/// The middleware that makes a module stoppable: a stop flag, read on
/// entry to every function and at the head of every loop. One per module
/// (it remembers the flag's index), like wasmer's metering.
#[derive(Debug, Default)]
pub(crate) struct Interrupt {
    flag: std::sync::Mutex<Option<GlobalIndex>>,
}

impl ModuleMiddleware for Interrupt {
    fn generate_function_middleware<'a>(
        &self,
        _: LocalFunctionIndex,
    ) -> Box<dyn FunctionMiddleware<'a> + 'a> {
        let flag = self
            .flag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .expect("transform_module_info runs before the functions are compiled");
        Box::new(FunctionInterrupt {
            flag: flag.as_u32(),
            entered: false,
        })
    }

    fn transform_module_info(&self, info: &mut ModuleInfo) -> Result<(), MiddlewareError> {
        let mut flag = self
            .flag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if flag.is_some() {
            return Err(MiddlewareError::new(
                "cog-sandbox interrupt",
                "one Interrupt middleware per module",
            ));
        }
        *flag = Some(add_exported_global(info, STOP_EXPORT, 0));
        Ok(())
    }
}

/// Gives the module a mutable `i32` global of the host's, starting at
/// `init` and exported as `name` (so the host finds its storage,
/// [`global_storage`]).
pub(crate) fn add_exported_global(info: &mut ModuleInfo, name: &str, init: i32) -> GlobalIndex {
    let index = info
        .globals
        .push(GlobalType::new(Type::I32, Mutability::Var));
    info.global_initializers.push(GlobalInit::I32Const(init));
    info.exports
        .insert(name.to_owned(), ExportIndex::Global(index));
    index
}

#[derive(Debug)]
struct FunctionInterrupt {
    flag: u32,
    /// Whether the entry check is in already.
    entered: bool,
}

impl FunctionInterrupt {
    fn check(&self, state: &mut MiddlewareReaderState<'_>) {
        state.extend(&[
            Operator::GlobalGet {
                global_index: self.flag,
            },
            Operator::If {
                blockty: BlockType::Empty,
            },
            Operator::Unreachable,
            Operator::End,
        ]);
    }
}

impl<'a> FunctionMiddleware<'a> for FunctionInterrupt {
    fn feed(
        &mut self,
        operator: Operator<'a>,
        state: &mut MiddlewareReaderState<'a>,
    ) -> Result<(), MiddlewareError> {
        if !self.entered {
            self.entered = true;
            self.check(state);
        }
        let is_loop = matches!(operator, Operator::Loop { .. });
        state.push_operator(operator);
        if is_loop {
            // Inside the loop: every iteration (every branch back to its
            // head) reads the flag.
            self.check(state);
        }
        Ok(())
    }
}

/// The stop flag of one instance: the storage of the
/// [`Interrupt`] middleware's global inside the instance's context (valid
/// as long as the instance).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stop(NonNull<u8>);

impl Stop {
    /// The flag of `instance`; `None` for a module compiled without the
    /// [`Interrupt`] middleware.
    pub(crate) fn of(store: &mut impl AsStoreMut, instance: &Instance) -> Option<Self> {
        global_storage(store, instance, STOP_EXPORT).map(Self)
    }

    fn flag(&self) -> &AtomicU32 {
        // SAFETY: the pointer is the instance's global storage (16-byte
        // aligned, its first 4 bytes the i32), alive while the instance is
        // (see `of`; the guard that lets the watchdog write is dropped
        // before the instance). The guest reads it with plain loads, which
        // an atomic store never tears.
        #[allow(unsafe_code)]
        unsafe {
            AtomicU32::from_ptr(self.0.as_ptr().cast::<u32>())
        }
    }

    /// Lets the next call run (the flag of a stopped call stays set).
    pub(crate) fn clear(&self) {
        self.flag().store(0, Ordering::SeqCst);
    }

    fn raise(&self) {
        self.flag().store(1, Ordering::SeqCst);
    }
}

/// Where the exported global `name` of `instance` keeps its value (valid
/// as long as the instance); `None` if there is no such global.
pub(crate) fn global_storage(
    store: &mut impl AsStoreMut,
    instance: &Instance,
    name: &str,
) -> Option<NonNull<u8>> {
    let global = instance.exports.get_extern(name)?;
    let Extern::Global(_) = global else {
        return None;
    };
    // Only the `sys` backend is compiled in, so `unwrap_sys` cannot fail.
    let wasmer_vm::VMExtern::Global(handle) = global.to_vm_extern().unwrap_sys() else {
        return None;
    };
    let objects = store.objects_mut().as_sys();
    Some(handle.get(objects).vmglobal().cast::<u8>())
}

/// The stop flag and deadline of one running call.
struct Target {
    stop: Stop,
    /// When to stop it.
    at: Instant,
    /// Whether the watchdog has stopped the call.
    fired: bool,
}

// SAFETY: the pointer is only written by the watchdog while the call is
// armed, under the slot's lock; disarming takes the same lock first and the
// instance outlives the guard (see `arm`).
#[allow(unsafe_code)]
unsafe impl Send for Target {}

/// Where calls on one thread put their deadline; `None` between calls.
type Slot = Arc<Mutex<Option<Target>>>;

struct State {
    /// Every registered slot.
    slots: Vec<Slot>,
    /// When the watchdog looks next, unless woken earlier; `None`: not
    /// before it is woken.
    next: Option<Instant>,
}

struct Watchdog {
    state: Mutex<State>,
    wake: Condvar,
}

static WATCHDOG: LazyLock<Arc<Watchdog>> = LazyLock::new(|| {
    let dog = Arc::new(Watchdog {
        state: Mutex::new(State {
            slots: Vec::new(),
            next: None,
        }),
        wake: Condvar::new(),
    });
    let run = dog.clone();
    std::thread::Builder::new()
        .name("cog-sandbox-watchdog".into())
        .spawn(move || run.run())
        .expect("spawning the plugin watchdog thread");
    dog
});

impl Watchdog {
    fn run(&self) {
        let mut state = self.state.lock();
        loop {
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            for slot in &state.slots {
                let mut slot = slot.lock();
                let Some(target) = slot.as_mut() else {
                    continue;
                };
                if target.fired {
                    // Stopped: the guest never writes the flag back.
                    continue;
                }
                if target.at <= now {
                    target.fired = true;
                    // The slot is armed, so the instance holding the flag
                    // is alive (the guard, dropped before the instance,
                    // empties the slot under this lock).
                    target.stop.raise();
                    continue;
                }
                next = Some(next.map_or(target.at, |n| n.min(target.at)));
            }
            state.next = next;
            match next {
                Some(at) => {
                    self.wake.wait_until(&mut state, at);
                }
                None => self.wake.wait(&mut state),
            }
        }
    }

    fn register(&self, slot: &Slot) {
        self.state.lock().slots.push(slot.clone());
    }

    fn unregister(&self, slot: &Slot) {
        self.state.lock().slots.retain(|s| !Arc::ptr_eq(s, slot));
    }
}

/// A thread's own slot, unregistered when the thread ends (thread pools
/// come and go).
struct ThreadSlot(Slot);

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        WATCHDOG.unregister(&self.0);
    }
}

thread_local! {
    static THREAD_SLOT: ThreadSlot = {
        let slot = Slot::default();
        WATCHDOG.register(&slot);
        ThreadSlot(slot)
    };
}

/// Disarms the deadline when dropped (the call returned).
pub(crate) struct Guard {
    /// `None`: nothing to stop (no stop flag).
    slot: Option<Slot>,
    /// A slot of its own (a call made while another was armed on the same
    /// thread), unregistered on drop.
    own: bool,
}

impl Guard {
    /// Whether the watchdog stopped the call.
    pub(crate) fn fired(&self) -> bool {
        self.slot
            .as_ref()
            .is_some_and(|s| s.lock().as_ref().is_some_and(|t| t.fired))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(slot) = &self.slot {
            slot.lock().take();
            if self.own {
                WATCHDOG.unregister(slot);
            }
        }
    }
}

/// Stops the call running with `stop` at `deadline` unless the returned
/// guard is dropped first; clears the flag first. The guard must be dropped
/// before the instance that `stop` belongs to.
pub(crate) fn arm(deadline: Instant, stop: Option<Stop>) -> Guard {
    let Some(stop) = stop else {
        // Not a module compiled by this runtime: nothing to stop, the
        // host-side deadline checks still apply.
        return Guard {
            slot: None,
            own: false,
        };
    };
    stop.clear();
    let target = Target {
        stop,
        at: deadline,
        fired: false,
    };
    let dog = &*WATCHDOG;
    // The thread's slot when it is free; otherwise (a call made while
    // another is armed on this thread, or during thread teardown) a slot
    // of the call's own.
    let mut target = Some(target);
    let shared = THREAD_SLOT
        .try_with(|s| {
            let mut armed = s.0.lock();
            if armed.is_some() {
                return None;
            }
            *armed = target.take();
            Some(s.0.clone())
        })
        .ok()
        .flatten();
    let guard = match shared {
        Some(slot) => Guard {
            slot: Some(slot),
            own: false,
        },
        None => {
            let own = Slot::new(Mutex::new(target));
            dog.register(&own);
            Guard {
                slot: Some(own),
                own: true,
            }
        }
    };
    let mut state = dog.state.lock();
    if state.next.is_none_or(|next| deadline < next) {
        state.next = Some(deadline);
        dog.wake.notify_one();
    }
    guard
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A stand-in for an instance's stop flag (16-byte storage, like a
    /// wasm global's), set by an earlier stopped call.
    fn counter() -> Box<[AtomicU32; 4]> {
        Box::new([
            AtomicU32::new(1),
            AtomicU32::new(0),
            AtomicU32::new(0),
            AtomicU32::new(0),
        ])
    }

    fn stop(counter: &[AtomicU32; 4]) -> Stop {
        Stop(NonNull::from(counter).cast())
    }

    fn raised(counter: &[AtomicU32; 4]) -> bool {
        counter[0].load(Ordering::SeqCst) == 1
    }

    /// Waits (bounded) until the watchdog has raised `counter`.
    fn stopped(counter: &[AtomicU32; 4]) -> bool {
        for _ in 0..500 {
            if raised(counter) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn a_passed_deadline_raises_the_flag_and_a_disarmed_one_does_not() {
        let (late, early) = (counter(), counter());
        // Armed first, far away: the watchdog plans to look then; the
        // second call's earlier deadline must wake it.
        let far = arm(
            Instant::now() + Duration::from_secs(3600),
            Some(stop(&late)),
        );
        // On the same thread while the first is armed: a slot of its own.
        let due = arm(Instant::now(), Some(stop(&early)));
        assert!(due.own && !far.own);
        assert!(stopped(&early));
        assert!(due.fired());
        assert!(!far.fired());
        // Arming cleared it, and nothing raised it since.
        assert!(!raised(&late));
        drop(due);
        drop(far);

        // Disarmed before its deadline: never written.
        let spared = counter();
        drop(arm(
            Instant::now() + Duration::from_millis(20),
            Some(stop(&spared)),
        ));
        let probe = counter();
        let after = arm(
            Instant::now() + Duration::from_millis(60),
            Some(stop(&probe)),
        );
        assert!(stopped(&probe));
        assert!(!raised(&spared));
        drop(after);
    }

    #[test]
    fn a_thread_slot_is_reused_and_unregistered_when_the_thread_ends() {
        let slot = std::thread::spawn(|| {
            let c = counter();
            let first = arm(Instant::now() + Duration::from_secs(60), Some(stop(&c)));
            let slot = first.slot.clone().expect("armed");
            drop(first);
            let second = arm(Instant::now() + Duration::from_secs(60), Some(stop(&c)));
            assert!(Arc::ptr_eq(second.slot.as_ref().expect("armed"), &slot));
            assert!(!second.own);
            slot
        })
        .join()
        .expect("the thread ran");
        let registered = WATCHDOG
            .state
            .lock()
            .slots
            .iter()
            .any(|s| Arc::ptr_eq(s, &slot));
        assert!(!registered);
        assert!(slot.lock().is_none());
    }

    #[test]
    fn a_module_without_a_flag_arms_nothing() {
        let guard = arm(Instant::now(), None);
        assert!(guard.slot.is_none());
        assert!(!guard.fired());
    }
}
