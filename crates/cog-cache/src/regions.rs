//! Invalidations that must land later: on other regions, and on this
//! deployment when Redis refused them. Each region keeps its own L2; an
//! invalidation made in one region is applied to every other region's L2
//! and published on its channel (so that region's instances drop their L1
//! entries), off the caller's path, in order, retried until it lands. An
//! invalidation whose delete or message failed here (Redis out of memory,
//! timing out, the circuit open) waits the same way for this deployment,
//! instead of leaving the entry in L2 and in the other instances' L1s.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::inner::Inner;
use crate::l2::{Invalidation, L2};
use crate::traits::{CacheKey, CacheValue};

/// Most invalidations waiting for one destination (while it is cut off). Past
/// it, the invalidations of the tenant with the most waiting are folded
/// into one of that whole tenant (more entries dropped there, none kept
/// that should go); only when no tenant has two waiting is the oldest
/// dropped and counted, and its entries then live there until their TTL.
pub(crate) const OUTBOX: usize = 10_000;

/// Invalidations waiting for a destination, numbered.
type Outbox<K> = VecDeque<(u64, Invalidation<K>)>;

/// A destination of invalidations, and what is still to be sent there.
pub(crate) struct Remote<K> {
    /// Another region's L2 (deletes and the message go there); `None`:
    /// this deployment (every L2 that may hold the tenant's entries, then
    /// this cache's channel).
    region: Option<L2>,
    /// Waiting invalidations, numbered.
    outbox: Mutex<Outbox<K>>,
    next: AtomicU64,
    notify: Notify,
    /// Invalidations dropped because the outbox was full.
    pub(crate) dropped: AtomicU64,
    /// Invalidations folded into one of their whole tenant because the
    /// outbox was full.
    pub(crate) folded: AtomicU64,
    /// Invalidations applied there.
    pub(crate) delivered: AtomicU64,
}

impl<K: CacheKey> Remote<K> {
    /// Another region, reached through `l2`.
    pub(crate) fn region(l2: L2) -> Self {
        Self::new(Some(l2))
    }

    /// This deployment, for what did not land at once.
    pub(crate) fn here() -> Self {
        Self::new(None)
    }

    fn new(region: Option<L2>) -> Self {
        Remote {
            region,
            outbox: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(0),
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
            folded: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        }
    }

    /// Queues `msg` for this region.
    pub(crate) fn send(&self, msg: &Invalidation<K>) {
        {
            let mut q = self.outbox.lock();
            if q.len() >= OUTBOX {
                self.make_room(&mut q);
            }
            q.push_back((self.next.fetch_add(1, Ordering::Relaxed), msg.clone()));
        }
        self.notify.notify_one();
    }

    /// Frees at least one place in a full outbox (see [`OUTBOX`]). The
    /// order of waiting invalidations does not matter — each only deletes,
    /// and a later delete covers an earlier one — so the fold goes last.
    /// One scan of the outbox, only when it is full.
    fn make_room(&self, q: &mut Outbox<K>) {
        let mut counts: std::collections::HashMap<&str, usize, foldhash::fast::RandomState> =
            Default::default();
        for (_, m) in q.iter() {
            *counts.entry(m.tenant()).or_default() += 1;
        }
        let most = counts
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .filter(|(_, n)| *n >= 2)
            .map(|(t, n)| (t.to_owned(), n));
        match most {
            Some((tenant, n)) => {
                q.retain(|(_, m)| m.tenant() != tenant);
                q.push_back((
                    self.next.fetch_add(1, Ordering::Relaxed),
                    Invalidation::Tenant(tenant),
                ));
                self.folded.fetch_add(n as u64, Ordering::Relaxed);
            }
            None => {
                q.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waiting invalidations.
    pub(crate) fn pending(&self) -> usize {
        self.outbox.lock().len()
    }

    /// Applies `msg` to the destination: its L2s, then its instances' L1s.
    async fn apply<V: CacheValue>(&self, inner: &Inner<K, V>, msg: &Invalidation<K>) -> bool {
        match &self.region {
            Some(l2) => l2.invalidate(msg).await.is_ok() && l2.publish(msg).await.is_ok(),
            None => inner.deliver_here(msg).await,
        }
    }
}

/// Sends a destination's outbox, in order; on a failure waits the retry
/// interval and tries the same invalidation again. Ends with the cache.
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
            let Some(cache) = inner.upgrade() else {
                return;
            };
            let landed = remote.apply(&cache, &msg).await;
            drop(cache);
            if landed {
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
        Remote::region(L2::new(client, crate::l2::L2Settings::default()))
    }

    fn of(tenant: &str, i: usize) -> Invalidation<String> {
        Invalidation::Key {
            tenant: tenant.to_owned(),
            key: format!("k{i}"),
        }
    }

    /// The waiting invalidations, as (tenant, key or `*` for the whole
    /// tenant).
    fn waiting(r: &Remote<String>) -> Vec<(String, String)> {
        r.outbox
            .lock()
            .iter()
            .map(|(_, m)| match m {
                Invalidation::Key { tenant, key } => (tenant.clone(), key.clone()),
                Invalidation::Tenant(t) => (t.clone(), "*".into()),
                Invalidation::Tag { tenant, tag } => (tenant.clone(), format!("#{tag}")),
            })
            .collect()
    }

    #[test]
    fn the_outbox_keeps_order_and_drops_the_oldest_past_its_bound() {
        let r = remote();
        for i in 0..3 {
            r.send(&of(&format!("t{i}"), i));
        }
        assert_eq!(r.pending(), 3);
        assert_eq!(r.dropped.load(Ordering::Relaxed), 0);
        // Every tenant has one waiting: nothing folds, the oldest go.
        for i in 3..OUTBOX + 2 {
            r.send(&of(&format!("t{i}"), i));
        }
        assert_eq!(r.pending(), OUTBOX);
        assert_eq!(r.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(r.folded.load(Ordering::Relaxed), 0);
        // The oldest went: the first waiting is k2, numbered 2.
        let q = r.outbox.lock();
        let (seq, first) = q.front().unwrap();
        assert_eq!(*seq, 2);
        assert!(matches!(first, Invalidation::Key { key, .. } if key == "k2"));
    }

    /// A full outbox folds the invalidations of the tenant with the most
    /// waiting into one of that whole tenant: nothing that should go is
    /// kept, and the others stay as they were, in order.
    #[test]
    fn a_full_outbox_folds_the_busiest_tenant_instead_of_dropping() {
        let r = remote();
        r.send(&of("quiet", 0));
        r.send(&Invalidation::Tag {
            tenant: "busy".into(),
            tag: "t".into(),
        });
        for i in 0..OUTBOX / 2 {
            r.send(&of("busy", i));
        }
        for i in 1..OUTBOX / 2 - 1 {
            r.send(&of(&format!("one{i}"), i));
        }
        assert_eq!(r.pending(), OUTBOX);
        r.send(&of("late", 7));
        assert_eq!(r.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(r.folded.load(Ordering::Relaxed), OUTBOX as u64 / 2 + 1);
        let w = waiting(&r);
        // quiet, one1 … one4998, the fold, late.
        assert_eq!(w.len(), 1 + (OUTBOX / 2 - 2) + 2);
        assert_eq!(w[0], ("quiet".into(), "k0".into()));
        assert_eq!(w[1], ("one1".into(), "k1".into()));
        assert!(!w.iter().any(|(t, k)| t == "busy" && k != "*"));
        assert_eq!(
            w[w.len() - 2..],
            [("busy".into(), "*".into()), ("late".into(), "k7".into())]
        );
    }
}
