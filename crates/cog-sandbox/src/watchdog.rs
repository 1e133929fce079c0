//! Wall-clock deadlines for running plugins: one thread that interrupts
//! (wasmer's host interrupt) any call still running past its deadline,
//! again every millisecond until the call has stopped.

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
            // An interrupt that lands in host code is only noted; keep
            // trying until the call reports it has stopped.
            due.at = now + Duration::from_millis(1);
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

/// Interrupts the store behind `interrupter` at `at` unless the returned
/// guard is dropped first.
pub(crate) fn arm(at: Instant, interrupter: Interrupter) -> Guard {
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
