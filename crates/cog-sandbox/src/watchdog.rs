//! Wall-clock deadlines for running plugins: one thread that interrupts
//! (wasmer's host interrupt, a signal) any call still running past its
//! deadline.
//!
//! Host functions check the deadline themselves, so a plugin looping
//! through the host is stopped there; the signal is for a guest spinning
//! in its own code. It comes 100 ms after the deadline and is repeated
//! only every 250 ms: wasmer's experimental interrupt can deadlock if a
//! signal lands while a trap is being unwound (the handler captures a
//! backtrace inside the unwinder's lock) — found by the generated-module
//! test — so as few signals as possible are sent, and only to a call that
//! has overrun by a wide margin.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use wasmer::Interrupter;

struct Armed {
    at: Instant,
    seq: u64,
    interrupter: Interrupter,
    done: Arc<AtomicBool>,
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
            if next.done.load(Ordering::Acquire) {
                q.heap.pop();
                continue;
            }
            let now = Instant::now();
            if next.at > now {
                let wait = next.at - now;
                self.wake.wait_for(&mut q, wait);
                continue;
            }
            let Some(Reverse(mut due)) = q.heap.pop() else {
                continue;
            };
            due.interrupter.interrupt();
            // An interrupt that lands in host code is only noted; try
            // again, rarely, until the call reports it has stopped.
            due.at = now + RETRY;
            q.heap.push(Reverse(due));
        }
    }
}

/// Disarms the deadline when dropped (the call returned).
pub(crate) struct Guard {
    done: Arc<AtomicBool>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
    }
}

/// After the deadline, before the first signal: a guest still running
/// then is spinning in its own code (a host call would have noticed the
/// deadline), not finishing a trap.
const GRACE: Duration = Duration::from_millis(100);
/// Between signals to a call that has not stopped.
const RETRY: Duration = Duration::from_millis(250);

/// Interrupts the store behind `interrupter` shortly after `deadline`
/// unless the returned guard is dropped first.
pub(crate) fn arm(deadline: Instant, interrupter: Interrupter) -> Guard {
    let at = deadline + GRACE;
    let done = Arc::new(AtomicBool::new(false));
    let dog = &*WATCHDOG;
    let mut q = dog.queue.lock();
    q.seq += 1;
    let seq = q.seq;
    let earliest = q.heap.peek().is_none_or(|Reverse(n)| at < n.at);
    q.heap.push(Reverse(Armed {
        at,
        seq,
        interrupter,
        done: done.clone(),
    }));
    drop(q);
    if earliest {
        dog.wake.notify_one();
    }
    Guard { done }
}
