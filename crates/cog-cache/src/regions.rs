//! Invalidations across regions: each region keeps its own L2; an
//! invalidation made in one region is applied to every other region's L2
//! and published on its channel (so that region's instances drop their L1
//! entries), off the caller's path, in order, retried until it lands.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::inner::Inner;
use crate::l2::{Invalidation, L2};
use crate::traits::{CacheKey, CacheValue};

/// Most invalidations waiting for one region (while it is cut off). Past
/// it the oldest are dropped and counted; those entries then live in that
/// region until their TTL.
pub(crate) const OUTBOX: usize = 10_000;

/// Another region's L2, and what is still to be sent there.
pub(crate) struct Remote<K> {
    pub(crate) l2: L2,
    /// Waiting invalidations, numbered.
    outbox: Mutex<VecDeque<(u64, Invalidation<K>)>>,
    next: AtomicU64,
    notify: Notify,
    /// Invalidations dropped because the outbox was full.
    pub(crate) dropped: AtomicU64,
    /// Invalidations applied there.
    pub(crate) delivered: AtomicU64,
}

impl<K: CacheKey> Remote<K> {
    pub(crate) fn new(l2: L2) -> Self {
        Remote {
            l2,
            outbox: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(0),
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        }
    }

    /// Queues `msg` for this region.
    pub(crate) fn send(&self, msg: &Invalidation<K>) {
        {
            let mut q = self.outbox.lock();
            if q.len() >= OUTBOX {
                q.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back((self.next.fetch_add(1, Ordering::Relaxed), msg.clone()));
        }
        self.notify.notify_one();
    }

    /// Waiting invalidations.
    pub(crate) fn pending(&self) -> usize {
        self.outbox.lock().len()
    }

    /// Applies `msg` to this region: its L2, then its instances' L1s.
    async fn apply(&self, msg: &Invalidation<K>) -> bool {
        let l2 = &self.l2;
        let deleted = match msg {
            Invalidation::Key { tenant, key } => match l2.data_key(tenant, key) {
                Some(k) => l2.del(&k).await,
                None => Ok(()),
            },
            Invalidation::Tag { tenant, tag } => l2.delete_tag(tenant, tag).await,
            Invalidation::Tenant(tenant) => l2.delete_tenant(tenant).await,
        };
        deleted.is_ok() && l2.publish(msg).await.is_ok()
    }
}

/// Sends each remote region's outbox, in order; on a failure waits the
/// retry interval and tries the same invalidation again. Ends with the
/// cache.
pub(crate) fn spawn<K: CacheKey, V: CacheValue>(
    inner: Weak<Inner<K, V>>,
    remote: Arc<Remote<K>>,
    retry: Duration,
) {
    tokio::spawn(async move {
        loop {
            let next = remote.outbox.lock().front().cloned();
            let Some((seq, msg)) = next else {
                tokio::select! {
                    _ = remote.notify.notified() => {}
                    // Wake now and then to notice the cache is gone.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if inner.strong_count() == 0 {
                    return;
                }
                continue;
            };
            if inner.strong_count() == 0 {
                return;
            }
            if remote.apply(&msg).await {
                let mut q = remote.outbox.lock();
                // Unless an overflow dropped it meanwhile.
                if q.front().is_some_and(|(s, _)| *s == seq) {
                    q.pop_front();
                }
                drop(q);
                remote.delivered.fetch_add(1, Ordering::Relaxed);
            } else {
                tokio::time::sleep(retry).await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> Remote<String> {
        // Never connected: only the outbox is exercised.
        let config = fred::prelude::Config::from_url("redis://127.0.0.1:1").unwrap();
        let client = fred::prelude::Builder::from_config(config).build().unwrap();
        Remote::new(L2::new(client, crate::l2::L2Settings::default()))
    }

    fn key(i: usize) -> Invalidation<String> {
        Invalidation::Key {
            tenant: String::new(),
            key: format!("k{i}"),
        }
    }

    #[test]
    fn the_outbox_keeps_order_and_drops_the_oldest_past_its_bound() {
        let r = remote();
        for i in 0..3 {
            r.send(&key(i));
        }
        assert_eq!(r.pending(), 3);
        assert_eq!(r.dropped.load(Ordering::Relaxed), 0);
        for i in 3..OUTBOX + 2 {
            r.send(&key(i));
        }
        assert_eq!(r.pending(), OUTBOX);
        assert_eq!(r.dropped.load(Ordering::Relaxed), 2);
        // The oldest went: the first waiting is k2, numbered 2.
        let q = r.outbox.lock();
        let (seq, first) = q.front().unwrap();
        assert_eq!(*seq, 2);
        assert!(matches!(first, Invalidation::Key { key, .. } if key == "k2"));
    }
}
