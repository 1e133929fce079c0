//! L2 writes made by loads, remembered for a moment.
//!
//! A load on this instance checks, before and after writing its value to
//! L2, that its key was not invalidated meanwhile ([`crate::generation`]).
//! One window is left: another instance deletes the key and publishes the
//! invalidation, this instance's write lands after the delete, and the
//! message arrives after the write. When that message arrives, the writes
//! it names from the last [`WINDOW`] are deleted again — at worst a value
//! written legitimately after the invalidation becomes a miss.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::l2::Invalidation;
use crate::slot::Tags;

/// How long a write is remembered: far longer than a pub/sub message
/// takes to arrive.
const WINDOW: Duration = Duration::from_secs(2);

/// Writes remembered at most (the oldest go first).
const CAPACITY: usize = 1024;

pub(crate) struct RecentWrites<K> {
    ring: Mutex<VecDeque<Recent<K>>>,
}

struct Recent<K> {
    tenant: Arc<str>,
    key: K,
    tags: Tags,
    data_key: String,
    at: Instant,
}

impl<K: Eq> Default for RecentWrites<K> {
    fn default() -> Self {
        RecentWrites {
            ring: Mutex::new(VecDeque::new()),
        }
    }
}

impl<K: Eq> RecentWrites<K> {
    /// Remembers that a load wrote `key` (of `tenant`, with `tags`) to L2
    /// as `data_key`.
    pub(crate) fn record(&self, tenant: &Arc<str>, key: K, tags: &Tags, data_key: String) {
        let mut ring = self.ring.lock();
        let now = Instant::now();
        while ring
            .front()
            .is_some_and(|r| ring.len() >= CAPACITY || now - r.at > WINDOW)
        {
            ring.pop_front();
        }
        ring.push_back(Recent {
            tenant: tenant.clone(),
            key,
            tags: tags.clone(),
            data_key,
            at: now,
        });
    }

    /// The L2 keys of remembered writes that `msg` invalidates (forgotten
    /// now).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn named_by(&self, msg: &Invalidation<K>) -> Vec<String> {
        let mut ring = self.ring.lock();
        let now = Instant::now();
        let mut named = Vec::new();
        ring.retain_mut(|r| {
            if now - r.at > WINDOW {
                return false;
            }
            let hit = match msg {
                Invalidation::Key { tenant, key } => *r.tenant == **tenant && r.key == *key,
                Invalidation::Tenant(tenant) => *r.tenant == **tenant,
                Invalidation::Tag { tenant, tag } => {
                    *r.tenant == **tenant
                        && r.tags
                            .as_ref()
                            .is_some_and(|t| t.iter().any(|x| **x == **tag))
                }
            };
            if hit {
                named.push(std::mem::take(&mut r.data_key));
            }
            !hit
        });
        named
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.ring.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> Tags {
        Some(Arc::new(t.iter().map(|s| Arc::from(*s)).collect()))
    }

    #[test]
    fn invalidations_name_the_writes_they_cover() {
        let w = RecentWrites::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        w.record(&a, 1u8, &tags(&["t"]), "a1".into());
        w.record(&a, 2u8, &None, "a2".into());
        w.record(&b, 1u8, &tags(&["t"]), "b1".into());
        let key = |tenant: &str, key| Invalidation::Key {
            tenant: tenant.into(),
            key,
        };
        assert_eq!(w.named_by(&key("a", 3)), Vec::<String>::new());
        assert_eq!(w.named_by(&key("a", 2)), ["a2"]);
        // Forgotten once named.
        assert_eq!(w.named_by(&key("a", 2)), Vec::<String>::new());
        let tag = Invalidation::Tag {
            tenant: "b".into(),
            tag: "t".into(),
        };
        assert_eq!(w.named_by(&tag), ["b1"]);
        assert_eq!(w.named_by(&Invalidation::Tenant("a".into())), ["a1"]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn bounded() {
        let w = RecentWrites::default();
        let t: Arc<str> = Arc::from("t");
        for i in 0..1_000_000u32 {
            w.record(&t, i, &None, String::new());
        }
        assert!(w.len() <= CAPACITY);
    }
}
