//! Counters per tier, as OpenTelemetry metrics and as a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;

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
    /// Loader runs.
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

pub(crate) struct Stats {
    counts: Counts,
    requests: Counter<u64>,
    loads: Counter<u64>,
    l2_errors: Counter<u64>,
}

impl Stats {
    pub(crate) fn new() -> Self {
        let meter = opentelemetry::global::meter("cog-cache");
        Stats {
            counts: Counts::default(),
            requests: meter
                .u64_counter("cog.cache.requests")
                .with_description("Cache lookups by tier and result")
                .build(),
            loads: meter
                .u64_counter("cog.cache.loads")
                .with_description("Loader runs by result")
                .build(),
            l2_errors: meter
                .u64_counter("cog.cache.l2.errors")
                .with_description(
                    "Failed, timed-out or circuit-skipped Redis calls, and unreadable values",
                )
                .build(),
        }
    }

    pub(crate) fn snapshot(&self, circuit_open: bool) -> StatsSnapshot {
        self.counts.snapshot(circuit_open)
    }

    fn request(&self, tier: &'static str, result: &'static str) {
        self.requests.add(
            1,
            &[KeyValue::new("tier", tier), KeyValue::new("result", result)],
        );
    }

    pub(crate) fn l1_hit(&self) {
        self.counts.l1_hits.fetch_add(1, Ordering::Relaxed);
        self.request("l1", "hit");
    }

    pub(crate) fn l1_miss(&self) {
        self.counts.l1_misses.fetch_add(1, Ordering::Relaxed);
        self.request("l1", "miss");
    }

    pub(crate) fn l2_hit(&self) {
        self.counts.l2_hits.fetch_add(1, Ordering::Relaxed);
        self.request("l2", "hit");
    }

    pub(crate) fn l2_miss(&self) {
        self.counts.l2_misses.fetch_add(1, Ordering::Relaxed);
        self.request("l2", "miss");
    }

    pub(crate) fn l2_corrupt(&self) {
        self.counts.l2_corrupt.fetch_add(1, Ordering::Relaxed);
        self.l2_errors.add(1, &[KeyValue::new("kind", "corrupt")]);
    }

    pub(crate) fn l2_error(&self, e: &L2Error) {
        self.counts.l2_errors.fetch_add(1, Ordering::Relaxed);
        self.l2_errors.add(1, &[KeyValue::new("kind", e.kind())]);
    }

    pub(crate) fn stale_served(&self) {
        self.counts.stale_served.fetch_add(1, Ordering::Relaxed);
        self.request("any", "stale");
    }

    pub(crate) fn load(&self) {
        self.counts.loads.fetch_add(1, Ordering::Relaxed);
        self.loads.add(1, &[KeyValue::new("result", "ok")]);
    }

    pub(crate) fn load_error(&self) {
        self.counts.load_errors.fetch_add(1, Ordering::Relaxed);
        self.loads.add(1, &[KeyValue::new("result", "error")]);
    }

    pub(crate) fn l1_tenant_capped(&self) {
        self.counts.l1_tenant_capped.fetch_add(1, Ordering::Relaxed);
    }
}
