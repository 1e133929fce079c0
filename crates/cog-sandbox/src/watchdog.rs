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

use std::cmp::Reverse;
use std::collections::BinaryHeap;
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

/// The fuel counter of one running call.
struct Target {
    fuel: Fuel,
    /// Whether the watchdog has stopped the call.
    fired: bool,
}

// SAFETY: the pointer is only written by the watchdog while the call is
// armed, under the slot's lock; disarming takes the same lock first and the
// instance outlives the guard (see `arm`).
#[allow(unsafe_code)]
unsafe impl Send for Target {}

/// `None` once the call has returned.
type Slot = Arc<Mutex<Option<Target>>>;

struct Armed {
    at: Instant,
    seq: u64,
    slot: Slot,
}

impl PartialEq for Armed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Armed {}
impl PartialOrd for Armed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Armed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Armed>>,
    seq: u64,
}

struct Watchdog {
    queue: Mutex<Queue>,
    wake: Condvar,
}

static WATCHDOG: LazyLock<Arc<Watchdog>> = LazyLock::new(|| {
    let dog = Arc::new(Watchdog {
        queue: Mutex::new(Queue::default()),
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
        let mut q = self.queue.lock();
        loop {
            let Some(Reverse(next)) = q.heap.peek() else {
                self.wake.wait(&mut q);
                continue;
            };
            let now = Instant::now();
            if next.at > now {
                let wait = next.at - now;
                self.wake.wait_for(&mut q, wait);
                continue;
            }
            let Some(Reverse(mut due)) = q.heap.pop() else {
                continue;
            };
            let running = {
                let mut slot = due.slot.lock();
                match slot.as_mut() {
                    Some(target) => {
                        target.fired = true;
                        // SAFETY: the slot is still armed, so the instance
                        // holding the global is alive (the guard, dropped
                        // before the instance, empties the slot under this
                        // lock). The global is 16-byte aligned storage whose
                        // first 8 bytes hold the i64; the guest reads it with
                        // plain loads, which an atomic store never tears.
                        #[allow(unsafe_code)]
                        unsafe {
                            AtomicU64::from_ptr(target.fuel.0.as_ptr().cast::<u64>())
                                .store(0, Ordering::SeqCst);
                        }
                        true
                    }
                    None => false,
                }
            };
            if running {
                due.at = now + RETRY;
                q.heap.push(Reverse(due));
            }
        }
    }
}

/// Disarms the deadline when dropped (the call returned).
pub(crate) struct Guard {
    slot: Slot,
}

impl Guard {
    /// Whether the watchdog stopped the call.
    pub(crate) fn fired(&self) -> bool {
        self.slot.lock().as_ref().is_some_and(|t| t.fired)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.slot.lock().take();
    }
}

/// Between writes to a call that has not stopped yet.
const RETRY: Duration = Duration::from_millis(5);

/// Stops the call running on `fuel` at `deadline` unless the returned
/// guard is dropped first. The guard must be dropped before the instance
/// that `fuel` belongs to.
pub(crate) fn arm(deadline: Instant, fuel: Option<Fuel>) -> Guard {
    let target = fuel.map(|fuel| Target { fuel, fired: false });
    let slot: Slot = Arc::new(Mutex::new(target));
    if slot.lock().is_none() {
        // Not a module compiled by this runtime: nothing to stop, the
        // host-side deadline checks still apply.
        return Guard { slot };
    }
    let dog = &*WATCHDOG;
    let mut q = dog.queue.lock();
    q.seq += 1;
    let seq = q.seq;
    let earliest = q.heap.peek().is_none_or(|Reverse(n)| deadline < n.at);
    q.heap.push(Reverse(Armed {
        at: deadline,
        seq,
        slot: slot.clone(),
    }));
    drop(q);
    if earliest {
        dog.wake.notify_one();
    }
    Guard { slot }
}
