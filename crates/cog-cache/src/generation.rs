//! Invalidation generations: a load that began before an invalidation of
//! its key must not write its (possibly outdated) value back.
//!
//! Keys hash onto a fixed number of stripes. Invalidating a key bumps its
//! stripe; invalidating a tag or a tenant, or flushing L1, bumps the epoch
//! that every key shares. A load takes a [`Seen`] before it reads L2 or
//! runs the loader, and writes its value only if nothing it depends on was
//! bumped since. Memory is fixed (no per-key state); a bump of another key
//! on the same stripe only costs that load its write, never correctness.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};

const STRIPES: usize = 1024;

pub(crate) struct Generations {
    epoch: AtomicU64,
    stripes: Box<[AtomicU64]>,
    hasher: foldhash::fast::FixedState,
}

/// What a load saw when it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    stripe: usize,
    epoch: u64,
    generation: u64,
}

impl Default for Generations {
    fn default() -> Self {
        Generations {
            epoch: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            hasher: foldhash::fast::FixedState::default(),
        }
    }
}

impl Generations {
    fn stripe(&self, key: impl Hash) -> usize {
        (self.hasher.hash_one(key) as usize) % STRIPES
    }

    /// The generations `key` depends on, now.
    pub(crate) fn seen(&self, key: impl Hash) -> Seen {
        let stripe = self.stripe(key);
        Seen {
            stripe,
            epoch: self.epoch.load(Ordering::Acquire),
            generation: self.stripes[stripe].load(Ordering::Acquire),
        }
    }

    /// Whether anything `seen` depends on was invalidated since.
    pub(crate) fn changed(&self, seen: Seen) -> bool {
        self.epoch.load(Ordering::Acquire) != seen.epoch
            || self.stripes[seen.stripe].load(Ordering::Acquire) != seen.generation
    }

    /// `key` was invalidated.
    pub(crate) fn bump_key(&self, key: impl Hash) {
        self.stripes[self.stripe(key)].fetch_add(1, Ordering::AcqRel);
    }

    /// Many keys were invalidated (a tag, a tenant, all of L1).
    pub(crate) fn bump_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_bump_changes_that_key_only() {
        let g = Generations::default();
        let a = g.seen("a");
        // Find a key on another stripe.
        let other = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| g.stripe(k) != a.stripe);
        let b = g.seen(other.as_ref().unwrap());
        assert!(!g.changed(a));
        g.bump_key("a");
        assert!(g.changed(a));
        assert!(!g.changed(b));
        assert!(!g.changed(g.seen("a")));
    }

    #[test]
    fn an_epoch_bump_changes_every_key() {
        let g = Generations::default();
        let a = g.seen("a");
        let b = g.seen("b");
        g.bump_all();
        assert!(g.changed(a) && g.changed(b));
        assert!(!g.changed(g.seen("a")));
    }
}
