//! "A background refresh of this key is running": one per key, released
//! however the refresh ends, and bounded in number.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;

/// Keys with a background refresh in flight, at most `max` of them.
pub(crate) struct Markers<K> {
    set: Mutex<HashSet<K>>,
    max: usize,
}

impl<K: Hash + Eq + Clone> Markers<K> {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Markers {
            set: Mutex::new(HashSet::new()),
            max,
        })
    }

    /// Marks `key`, unless it is marked already or `max` keys are: the
    /// caller then starts no refresh. The mark goes when the returned guard
    /// is dropped — when the refresh ends, fails, panics or is cancelled.
    pub(crate) fn mark(self: &Arc<Self>, key: K) -> Option<Marked<K>> {
        let mut set = self.set.lock();
        if set.len() >= self.max || !set.insert(key.clone()) {
            return None;
        }
        Some(Marked {
            markers: self.clone(),
            key: Some(key),
        })
    }

    /// Keys marked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.lock().len()
    }
}

/// A key's mark; see [`Markers::mark`].
pub(crate) struct Marked<K: Hash + Eq> {
    markers: Arc<Markers<K>>,
    key: Option<K>,
}

impl<K: Hash + Eq> Drop for Marked<K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.markers.set.lock().remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_mark_per_key_until_dropped() {
        let m = Markers::new(10);
        let a = m.mark("a").unwrap();
        assert!(m.mark("a").is_none());
        let b = m.mark("b").unwrap();
        assert_eq!(m.len(), 2);
        drop(a);
        assert_eq!(m.len(), 1);
        assert!(m.mark("a").is_some());
        drop(b);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn a_panic_releases_the_mark() {
        let m = Markers::new(10);
        let m2 = m.clone();
        let r = std::thread::spawn(move || {
            let _mark = m2.mark("k").unwrap();
            panic!("loader panicked");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(m.len(), 0);
        assert!(m.mark("k").is_some());
    }

    #[test]
    fn bounded_under_a_million_keys() {
        let m = Markers::new(1000);
        let held: Vec<_> = (0..1_000_000u32).filter_map(|i| m.mark(i)).collect();
        assert_eq!(held.len(), 1000);
        assert_eq!(m.len(), 1000);
        drop(held);
        assert_eq!(m.len(), 0);
    }
}
