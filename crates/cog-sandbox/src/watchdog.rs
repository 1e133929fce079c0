//! Wall-clock deadlines for running plugins: one thread that stops any
//! call still running past its deadline, through the fuel counter the
//! metering middleware compiled into the module.
//!
//! Every basic block of a plugin checks its remaining fuel (a wasm global
//! in the instance) before it runs and traps when too little is left. To
//! stop a call, the watchdog writes zero into that global: the guest traps
//! at its next block, in its own code, exactly as when fuel runs out — no
//! signal, no second unwinding path. Host functions check the deadline
//! themselves, so a guest looping through the host stops there.
//!
//! An earlier version used wasmer's experimental host interrupt (a
//! signal), which could deadlock when the signal landed while a trap was
//! being unwound; the generated-module test found it.
//!
//! The guest reads the counter, subtracts and writes it back, so a zero
//! written between its read and its write is overwritten; the watchdog
//! writes again every [`RETRY`] until the call returns.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use wasmer::{AsStoreMut, Extern, Instance};

/// The fuel counter of one instance: the storage of the metering
/// middleware's `wasmer_metering_remaining_points` global, inside the
/// instance's context (valid as long as the instance).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fuel(NonNull<u8>);

impl Fuel {
    /// The counter of `instance`; `None` for a module compiled without
    /// the metering middleware.
    pub(crate) fn of(store: &mut impl AsStoreMut, instance: &Instance) -> Option<Self> {
        let global = instance
            .exports
            .get_extern("wasmer_metering_remaining_points")?;
        let Extern::Global(_) = global else {
            return None;
        };
        // Only the `sys` backend is compiled in, so `unwrap_sys` cannot fail.
        let wasmer_vm::VMExtern::Global(handle) = global.to_vm_extern().unwrap_sys() else {
            return None;
        };
        let objects = store.objects_mut().as_sys();
        Some(Self(handle.get(objects).vmglobal().cast::<u8>()))
    }
}

/// The fuel counter and deadline of one running call.
struct Target {
    fuel: Fuel,
    /// When to stop it (after the first write: when to write again).
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
                if target.at <= now {
                    target.fired = true;
                    // SAFETY: the slot is armed, so the instance holding
                    // the global is alive (the guard, dropped before the
                    // instance, empties the slot under this lock). The
                    // global is 16-byte aligned storage whose first 8 bytes
                    // hold the i64; the guest reads it with plain loads,
                    // which an atomic store never tears.
                    #[allow(unsafe_code)]
                    unsafe {
                        AtomicU64::from_ptr(target.fuel.0.as_ptr().cast::<u64>())
                            .store(0, Ordering::SeqCst);
                    }
                    target.at = now + RETRY;
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
    /// `None`: nothing to stop (no fuel counter).
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

/// Between writes to a call that has not stopped yet.
const RETRY: Duration = Duration::from_millis(5);

/// Stops the call running on `fuel` at `deadline` unless the returned
/// guard is dropped first. The guard must be dropped before the instance
/// that `fuel` belongs to.
pub(crate) fn arm(deadline: Instant, fuel: Option<Fuel>) -> Guard {
    let Some(fuel) = fuel else {
        // Not a module compiled by this runtime: nothing to stop, the
        // host-side deadline checks still apply.
        return Guard {
            slot: None,
            own: false,
        };
    };
    let target = Target {
        fuel,
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
    use super::*;

    /// A stand-in for an instance's fuel global.
    fn counter() -> Box<AtomicU64> {
        Box::new(AtomicU64::new(1_000_000))
    }

    fn fuel(counter: &AtomicU64) -> Fuel {
        Fuel(NonNull::from(counter).cast())
    }

    /// Waits (bounded) until the watchdog has emptied `counter`.
    fn emptied(counter: &AtomicU64) -> bool {
        for _ in 0..500 {
            if counter.load(Ordering::SeqCst) == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn a_passed_deadline_empties_the_counter_and_a_disarmed_one_does_not() {
        let (late, early) = (counter(), counter());
        // Armed first, far away: the watchdog plans to look then; the
        // second call's earlier deadline must wake it.
        let far = arm(
            Instant::now() + Duration::from_secs(3600),
            Some(fuel(&late)),
        );
        // On the same thread while the first is armed: a slot of its own.
        let due = arm(Instant::now(), Some(fuel(&early)));
        assert!(due.own && !far.own);
        assert!(emptied(&early));
        assert!(due.fired());
        assert!(!far.fired());
        assert_eq!(late.load(Ordering::SeqCst), 1_000_000);
        drop(due);
        drop(far);

        // Disarmed before its deadline: never written.
        let spared = counter();
        drop(arm(
            Instant::now() + Duration::from_millis(20),
            Some(fuel(&spared)),
        ));
        let probe = counter();
        let after = arm(
            Instant::now() + Duration::from_millis(60),
            Some(fuel(&probe)),
        );
        assert!(emptied(&probe));
        assert_eq!(spared.load(Ordering::SeqCst), 1_000_000);
        drop(after);
    }

    #[test]
    fn a_thread_slot_is_reused_and_unregistered_when_the_thread_ends() {
        let slot = std::thread::spawn(|| {
            let c = counter();
            let first = arm(Instant::now() + Duration::from_secs(60), Some(fuel(&c)));
            let slot = first.slot.clone().expect("armed");
            drop(first);
            let second = arm(Instant::now() + Duration::from_secs(60), Some(fuel(&c)));
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
    fn a_module_without_a_counter_arms_nothing() {
        let guard = arm(Instant::now(), None);
        assert!(guard.slot.is_none());
        assert!(!guard.fired());
    }
}
