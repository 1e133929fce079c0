//! Counters per tier, as OpenTelemetry metrics and as a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use cog_core::striped::Striped;
use opentelemetry::KeyValue;
use parking_lot::Mutex;

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
            /// The sum over every stripe of `counts`.
            fn snapshot(counts: &Striped<Counts>, open: bool) -> StatsSnapshot {
                let mut sum = StatsSnapshot { l2_circuit_open: open, ..StatsSnapshot::default() };
                for c in counts.iter() {
                    $(sum.$name += c.$name.load(Ordering::Relaxed);)*
                }
                sum
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

/// Counters live in plain atomics, one copy per thread's stripe (one
/// relaxed add on the hot path, to a cache line no other core is adding
/// to — an L1 hit on every request thread must not bounce a shared line);
/// the OpenTelemetry instruments are observable counters that read them when
/// metrics are collected (see [`observe`]).
pub(crate) struct Stats {
    counts: Striped<Counts>,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Stats {
            counts: Striped::default(),
        }
    }

    pub(crate) fn snapshot(&self, circuit_open: bool) -> StatsSnapshot {
        Counts::snapshot(&self.counts, circuit_open)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn l1_hit(&self) {
        Self::bump(&self.counts.local().l1_hits);
    }

    pub(crate) fn l1_miss(&self) {
        Self::bump(&self.counts.local().l1_misses);
    }

    pub(crate) fn l2_hit(&self) {
        Self::bump(&self.counts.local().l2_hits);
    }

    pub(crate) fn l2_miss(&self) {
        Self::bump(&self.counts.local().l2_misses);
    }

    pub(crate) fn l2_corrupt(&self) {
        Self::bump(&self.counts.local().l2_corrupt);
    }

    pub(crate) fn l2_error(&self, e: &L2Error) {
        tracing::debug!(target: "cog_cache", error = e as &dyn std::error::Error, kind = e.kind(), "L2 call failed");
        Self::bump(&self.counts.local().l2_errors);
    }

    pub(crate) fn stale_served(&self) {
        Self::bump(&self.counts.local().stale_served);
    }

    pub(crate) fn load(&self) {
        Self::bump(&self.counts.local().loads);
    }

    pub(crate) fn load_error(&self) {
        Self::bump(&self.counts.local().load_errors);
    }

    pub(crate) fn l1_tenant_capped(&self) {
        Self::bump(&self.counts.local().l1_tenant_capped);
    }
}

/// What the process-wide instruments read from one live cache.
pub(crate) trait Observed: Send + Sync {
    fn stats(&self) -> &Stats;
    fn circuit_open(&self) -> bool;
}

/// Every live cache, for the process-wide instruments; dead ones are
/// dropped at each collection and each registration, so this holds no
/// more than the caches alive since the last of those.
struct Registry {
    caches: Mutex<Vec<Weak<dyn Observed>>>,
    /// The meter providers the instruments are registered with (by
    /// address): once each, not once per cache.
    providers: Mutex<Vec<usize>>,
}

static REGISTRY: Registry = Registry {
    caches: Mutex::new(Vec::new()),
    providers: Mutex::new(Vec::new()),
};

/// Makes `cache` count in `cog.cache.*`: its counters are summed with every
/// other live cache's, and `cog.cache.l2.circuit_open` is 1 while any
/// cache's circuit is open. The instruments are registered once per meter
/// provider (a provider installed after the first cache was built still
/// gets them), never once per cache — building many caches costs no
/// registrations.
pub(crate) fn observe(cache: Weak<dyn Observed>) {
    {
        let mut caches = REGISTRY.caches.lock();
        caches.retain(|c| c.strong_count() > 0);
        caches.push(cache);
    }
    let provider = opentelemetry::global::meter_provider();
    let id = Arc::as_ptr(&provider).cast::<()>() as usize;
    let mut providers = REGISTRY.providers.lock();
    if !providers.contains(&id) {
        providers.push(id);
        register(&provider.meter("cog-cache"));
    }
}

/// The live caches (pruning the dead).
fn live() -> Vec<Arc<dyn Observed>> {
    let mut caches = REGISTRY.caches.lock();
    caches.retain(|c| c.strong_count() > 0);
    caches.iter().filter_map(Weak::upgrade).collect()
}

/// Picks one counter of a cache's counts.
type Pick = fn(&Counts) -> &AtomicU64;

/// The sum over live caches of one counter.
fn total(caches: &[Arc<dyn Observed>], counter: impl Fn(&Counts) -> &AtomicU64) -> u64 {
    caches
        .iter()
        .flat_map(|c| c.stats().counts.iter())
        .map(|stripe| counter(stripe).load(Ordering::Relaxed))
        .sum()
}

fn register(meter: &opentelemetry::metrics::Meter) {
    let _requests = meter
        .u64_observable_counter("cog.cache.requests")
        .with_description("Cache lookups by tier and result")
        .with_callback(|obs| {
            let caches = live();
            let points: [(&str, &str, Pick); 5] = [
                ("l1", "hit", |c| &c.l1_hits),
                ("l1", "miss", |c| &c.l1_misses),
                ("l2", "hit", |c| &c.l2_hits),
                ("l2", "miss", |c| &c.l2_misses),
                ("any", "stale", |c| &c.stale_served),
            ];
            for (tier, result, counter) in points {
                obs.observe(
                    total(&caches, counter),
                    &[KeyValue::new("tier", tier), KeyValue::new("result", result)],
                );
            }
        })
        .build();
    let _loads = meter
        .u64_observable_counter("cog.cache.loads")
        .with_description("Loader runs by result")
        .with_callback(|obs| {
            let caches = live();
            obs.observe(
                total(&caches, |c| &c.loads),
                &[KeyValue::new("result", "ok")],
            );
            obs.observe(
                total(&caches, |c| &c.load_errors),
                &[KeyValue::new("result", "error")],
            );
        })
        .build();
    let _errors = meter
        .u64_observable_counter("cog.cache.l2.errors")
        .with_description("Failed, timed-out or circuit-skipped Redis calls, and unreadable values")
        .with_callback(|obs| {
            let caches = live();
            obs.observe(
                total(&caches, |c| &c.l2_errors),
                &[KeyValue::new("kind", "call")],
            );
            obs.observe(
                total(&caches, |c| &c.l2_corrupt),
                &[KeyValue::new("kind", "corrupt")],
            );
        })
        .build();
    let _circuit = meter
        .u64_observable_gauge("cog.cache.l2.circuit_open")
        .with_description("1 while Redis is failing and L2 is skipped (in any cache), else 0")
        .with_callback(|obs| {
            let open = live().iter().any(|c| c.circuit_open());
            obs.observe(u64::from(open), &[]);
        })
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(Stats);

    impl Observed for Fake {
        fn stats(&self) -> &Stats {
            &self.0
        }
        fn circuit_open(&self) -> bool {
            false
        }
    }

    #[test]
    fn counts_from_every_thread_are_summed() {
        let fake = Arc::new(Fake(Stats::new()));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        fake.0.l1_hit();
                        fake.0.load();
                    }
                });
            }
        });
        let snap = fake.0.snapshot(true);
        assert_eq!((snap.l1_hits, snap.loads, snap.l1_misses), (4000, 4000, 0));
        assert!(snap.l2_circuit_open);
        let caches: Vec<Arc<dyn Observed>> = vec![fake.clone(), fake];
        assert_eq!(total(&caches, |c| &c.l1_hits), 8000);
    }

    #[test]
    fn building_many_caches_registers_nothing_more_and_keeps_no_dead_ones() {
        for _ in 0..1_000_000 {
            let cache: Arc<dyn Observed> = Arc::new(Fake(Stats::new()));
            observe(Arc::downgrade(&cache));
        }
        assert!(REGISTRY.providers.lock().len() <= 2);
        assert!(REGISTRY.caches.lock().len() <= 2);
        let kept: Arc<dyn Observed> = Arc::new(Fake(Stats::new()));
        kept.stats().l1_hit();
        kept.stats().l1_hit();
        observe(Arc::downgrade(&kept));
        assert!(live().iter().any(|c| Arc::ptr_eq(c, &kept)));
        assert!(total(&live(), |c| &c.l1_hits) >= 2);
    }
}
