//! Counters per tier, as OpenTelemetry metrics and as a snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::KeyValue;

use crate::l2::L2Error;

/// Counters of one cache since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Answers from a fresh L1 entry.
    pub l1_hits: u64,
    /// Lookups that found no fresh L1 entry.
    pub l1_misses: u64,
    /// Answers from a fresh L2 entry (after an L1 miss).
    pub l2_hits: u64,
    /// L2 lookups that found nothing.
    pub l2_misses: u64,
    /// L2 values that could not be decoded (foreign, old format, garbage).
    pub l2_corrupt: u64,
    /// L2 calls that failed or timed out, or were skipped by the open
    /// circuit.
    pub l2_errors: u64,
    /// Stale values served (while revalidating, or instead of an error).
    pub stale_served: u64,
    /// Loader runs that succeeded.
    pub loads: u64,
    /// Loader runs that failed.
    pub load_errors: u64,
    /// Values not kept in L1 because their tenant was at its cap.
    pub l1_tenant_capped: u64,
    /// Whether the L2 circuit is open now.
    pub l2_circuit_open: bool,
}

macro_rules! counters {
    ($($name:ident),*) => {
        #[derive(Default)]
        struct Counts { $($name: AtomicU64,)* }
        impl Counts {
            fn snapshot(&self, open: bool) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* l2_circuit_open: open }
            }
        }
    };
}

counters!(
    l1_hits,
    l1_misses,
    l2_hits,
    l2_misses,
    l2_corrupt,
    l2_errors,
    stale_served,
    loads,
    load_errors,
    l1_tenant_capped
);

/// Counters live in plain atomics (one relaxed add on the hot path); the
/// OpenTelemetry instruments are observable counters that read them when
/// metrics are collected.
pub(crate) struct Stats {
    counts: Arc<Counts>,
}

impl Stats {
    pub(crate) fn new() -> Self {
        let counts = Arc::new(Counts::default());
        register(&counts);
        Stats { counts }
    }

    pub(crate) fn snapshot(&self, circuit_open: bool) -> StatsSnapshot {
        self.counts.snapshot(circuit_open)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn l1_hit(&self) {
        Self::bump(&self.counts.l1_hits);
    }

    pub(crate) fn l1_miss(&self) {
        Self::bump(&self.counts.l1_misses);
    }

    pub(crate) fn l2_hit(&self) {
        Self::bump(&self.counts.l2_hits);
    }

    pub(crate) fn l2_miss(&self) {
        Self::bump(&self.counts.l2_misses);
    }

    pub(crate) fn l2_corrupt(&self) {
        Self::bump(&self.counts.l2_corrupt);
    }

    pub(crate) fn l2_error(&self, e: &L2Error) {
        tracing::debug!(target: "cog_cache", error = %e, kind = e.kind(), "L2 call failed");
        Self::bump(&self.counts.l2_errors);
    }

    pub(crate) fn stale_served(&self) {
        Self::bump(&self.counts.stale_served);
    }

    pub(crate) fn load(&self) {
        Self::bump(&self.counts.loads);
    }

    pub(crate) fn load_error(&self) {
        Self::bump(&self.counts.load_errors);
    }

    pub(crate) fn l1_tenant_capped(&self) {
        Self::bump(&self.counts.l1_tenant_capped);
    }
}

/// Registers the observable instruments; they hold only a weak reference,
/// so a dropped cache stops reporting.
fn register(counts: &Arc<Counts>) {
    let meter = opentelemetry::global::meter("cog-cache");
    let weak = Arc::downgrade(counts);
    let _requests = meter
        .u64_observable_counter("cog.cache.requests")
        .with_description("Cache lookups by tier and result")
        .with_callback({
            let weak = weak.clone();
            move |obs| {
                let Some(c) = weak.upgrade() else { return };
                for (tier, result, n) in [
                    ("l1", "hit", &c.l1_hits),
                    ("l1", "miss", &c.l1_misses),
                    ("l2", "hit", &c.l2_hits),
                    ("l2", "miss", &c.l2_misses),
                    ("any", "stale", &c.stale_served),
                ] {
                    obs.observe(
                        n.load(Ordering::Relaxed),
                        &[KeyValue::new("tier", tier), KeyValue::new("result", result)],
                    );
                }
            }
        })
        .build();
    let _loads = meter
        .u64_observable_counter("cog.cache.loads")
        .with_description("Loader runs by result")
        .with_callback({
            let weak = weak.clone();
            move |obs| {
                let Some(c) = weak.upgrade() else { return };
                obs.observe(
                    c.loads.load(Ordering::Relaxed),
                    &[KeyValue::new("result", "ok")],
                );
                obs.observe(
                    c.load_errors.load(Ordering::Relaxed),
                    &[KeyValue::new("result", "error")],
                );
            }
        })
        .build();
    let _errors = meter
        .u64_observable_counter("cog.cache.l2.errors")
        .with_description("Failed, timed-out or circuit-skipped Redis calls, and unreadable values")
        .with_callback(move |obs| {
            let Some(c) = weak.upgrade() else { return };
            obs.observe(
                c.l2_errors.load(Ordering::Relaxed),
                &[KeyValue::new("kind", "call")],
            );
            obs.observe(
                c.l2_corrupt.load(Ordering::Relaxed),
                &[KeyValue::new("kind", "corrupt")],
            );
        })
        .build();
}

/// Registers `cog.cache.l2.circuit_open` (1 while the L2 circuit is open).
#[cfg(feature = "redis")]
pub(crate) fn register_circuit<K, V>(inner: std::sync::Weak<crate::cache::Inner<K, V>>)
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let _gauge = opentelemetry::global::meter("cog-cache")
        .u64_observable_gauge("cog.cache.l2.circuit_open")
        .with_description("1 while Redis is failing and L2 is skipped, else 0")
        .with_callback(move |obs| {
            if let Some(inner) = inner.upgrade()
                && let Some(l2) = &inner.l2
            {
                obs.observe(u64::from(l2.circuit_open()), &[]);
            }
        })
        .build();
}
