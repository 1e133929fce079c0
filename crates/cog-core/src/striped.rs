//! Counters that every request thread bumps, without the threads fighting
//! over one cache line.
//!
//! A plain `AtomicU64` shared by the threads serving requests costs little
//! on one core, but under load on several each add must first take the
//! line from whichever core added last — a round trip between cores on
//! every request, for every counter on its path (and for the counters
//! next to it in memory). [`Striped`] keeps one copy of a set of counters
//! per stripe, each on cache lines of its own; a thread always adds to the
//! same stripe (its own while there are no more threads than stripes), and
//! a reader sums the stripes.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use cog_core::striped::Striped;
//!
//! #[derive(Default)]
//! struct Counts {
//!     hits: AtomicU64,
//!     misses: AtomicU64,
//! }
//!
//! let counts: Striped<Counts> = Striped::default();
//! counts.local().hits.fetch_add(1, Ordering::Relaxed);
//! let hits: u64 = counts.iter().map(|c| c.hits.load(Ordering::Relaxed)).sum();
//! assert_eq!(hits, 1);
//! ```

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Stripes per [`Striped`]: threads beyond this many share stripes (still
/// correct, just contended again).
pub const STRIPES: usize = 16;

/// One stripe, alone on its cache lines (128 bytes: adjacent-line
/// prefetching pulls lines in pairs on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// A set of counters `T` (atomics), one copy per stripe. See the
/// [module](self) docs.
#[derive(Debug)]
pub struct Striped<T> {
    stripes: Box<[Padded<T>; STRIPES]>,
}

impl<T: Default> Default for Striped<T> {
    fn default() -> Self {
        Striped {
            stripes: Box::new(std::array::from_fn(|_| Padded::default())),
        }
    }
}

impl<T> Striped<T> {
    /// The calling thread's stripe: add to it.
    pub fn local(&self) -> &T {
        &self.stripes[stripe()].0
    }

    /// Every stripe: sum them to read.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.stripes.iter().map(|p| &p.0)
    }
}

/// The calling thread's stripe index: threads take the next one when they
/// first count, round the stripes.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE
        .try_with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
                s.set(i);
            }
            i
        })
        // Counting from a thread-local destructor: any stripe is right.
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[test]
    fn stripes_are_cache_lines_apart() {
        let s: Striped<AtomicU64> = Striped::default();
        let addresses: Vec<usize> = s.iter().map(|c| std::ptr::from_ref(c) as usize).collect();
        assert_eq!(addresses.len(), STRIPES);
        for pair in addresses.windows(2) {
            assert_eq!(pair[1] - pair[0], 128);
        }
    }

    #[test]
    fn threads_keep_their_stripe_live_ones_get_their_own_and_every_add_counts() {
        let s: Striped<AtomicU64> = Striped::default();
        // Each of these threads counts once, then waits for the others:
        // all alive together, each must have landed on a stripe of its own.
        let threads = 8;
        let barrier = std::sync::Barrier::new(threads);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    let mine = std::ptr::from_ref(s.local());
                    for _ in 0..1000 {
                        assert!(std::ptr::eq(mine, s.local()), "the stripe moved");
                        s.local().fetch_add(1, Ordering::Relaxed);
                    }
                    barrier.wait();
                });
            }
        });
        let per: Vec<u64> = s.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(per.iter().sum::<u64>(), 8000, "{per:?}");
        // Eight threads at once never share a stripe (fewer than STRIPES,
        // handed out in turn): eight stripes of 1000.
        assert_eq!(per.iter().filter(|&&n| n == 1000).count(), 8, "{per:?}");

        // (In the same test: threads counting in parallel elsewhere in
        // this process would take stripes in between.) More threads than
        // stripes: some share, and every add still counts.
        let s: Striped<AtomicU64> = Striped::default();
        std::thread::scope(|scope| {
            for _ in 0..STRIPES * 2 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        s.local().fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        let total: u64 = s.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, (STRIPES * 2 * 10_000) as u64);
    }
}
