//! Leased budgets: slices of a subject's GCRA budget taken from Redis in
//! one script call and spent in this process.
//!
//! The arithmetic of leasing (how much, from what is left, who gets stolen
//! units) is in `redis_lease.lua`; this module keeps what an instance holds
//! and decides how much to ask for.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::decision::{Decision, DecisionSource, LimitStatus};

/// Settings of the leased mode of [`RedisStore`](super::RedisStore).
///
/// In leased mode an instance takes a slice of a subject's budget from
/// Redis (a *lease*) in the same script call that decides a request, and
/// spends it locally at memory-store speed until it runs out or its
/// [`lease_time`](Self::lease_time) is over; then the next request gives
/// back what is left and takes a new lease, in one call again.
///
/// - **Lease sizes adapt**: to this instance's recent rate for the subject
///   (about one lease time's worth of requests, growing at most fourfold
///   per lease, at most [`max_units`](Self::max_units) requests of the
///   asking request's cost), and to what is left of the budget: never more
///   than a quarter of it, so leases shrink to exact per-request decisions
///   as the subject nears its limit.
/// - **No refusal for a budget parked elsewhere**: Redis keeps a ledger of
///   the units leased out. A request that finds the budget spent is still
///   admitted if other instances hold that many units unspent; the holder
///   gets that much less credit when its lease comes back.
/// - **Over-admission bound**: with `N` instances and leases of at most `S`
///   units, the fleet admits at most `2·N·S` units more than the limit
///   allows in any window: `N·S` units leased before the window and spent
///   in it, and `N·S` admitted against leased units their holders then
///   spend too. `S` is at most `max_units` requests and at most a quarter
///   of the limit's burst. [`bound`](Self::bound) computes it for unit
///   costs.
/// - **Headers** show what this instance knows: its unspent units plus what
///   Redis had left when the lease was granted.
///
/// Leases apply to quotas of one GCRA limit (the usual per-second,
/// -minute, … quota); other quotas are decided exactly, per request.
///
/// ```
/// use std::time::Duration;
/// use cog_ratelimit::store::Leasing;
///
/// let leasing = Leasing::new()
///     .lease_time(Duration::from_millis(100))
///     .max_units(256);
/// // Three instances sharing a limit of 10 000 per second (burst 10 000):
/// assert_eq!(leasing.bound(3, 10_000), 2 * 3 * 256);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leasing {
    lease_time: Duration,
    max_units: u64,
    capacity: usize,
}

impl Default for Leasing {
    fn default() -> Self {
        Leasing {
            lease_time: Duration::from_millis(100),
            max_units: 256,
            capacity: 65_536,
        }
    }
}

impl Leasing {
    /// Defaults: lease time 100 ms, at most 256 units per lease, leases
    /// kept for at most 65 536 subjects.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a lease may be spent (default 100 ms). Shorter: fresher
    /// headers and less parked budget, more Redis calls.
    pub fn lease_time(mut self, time: Duration) -> Self {
        self.lease_time = time.max(Duration::from_millis(1));
        self
    }

    /// The most requests one lease holds, of the cost of the request that
    /// asks for it (default 256; at least 1): with unit costs, units.
    pub fn max_units(mut self, units: u64) -> Self {
        self.max_units = units.max(1);
        self
    }

    /// The most subjects this instance holds leases for (default 65 536):
    /// past it the least recently used leases are forgotten — their units
    /// stay counted in Redis, and other instances can still be admitted
    /// against them through the ledger.
    pub fn capacity(mut self, subjects: usize) -> Self {
        self.capacity = subjects.max(1);
        self
    }

    /// The lease time.
    pub fn time(&self) -> Duration {
        self.lease_time
    }

    /// The most units the fleet admits beyond a limit of burst `burst`, in
    /// any window, with `instances` instances sharing it and requests of
    /// one unit: `2·N·S`, where `S` is the largest lease,
    /// `min(max_units, burst / 4)`.
    pub fn bound(&self, instances: u64, burst: u64) -> u64 {
        2 * instances * self.max_units.min(burst / 4)
    }
}

/// What this instance holds for one subject.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Units left to spend locally.
    units: u64,
    /// Units granted with the current lease (leaves the ledger with it).
    size: u64,
    /// When the lease may no longer be spent (store clock, ns).
    expires: u64,
    /// When it was granted.
    granted_at: u64,
    /// Redis's lead (ns) and remaining units right after the grant.
    lead: u64,
    remaining: u64,
    /// Units this instance admitted for the subject since `since`.
    spent: u64,
    since: u64,
    /// The size asked for last time.
    want: u64,
    /// A renewal is in flight: others decide exactly meanwhile.
    renewing: bool,
}

/// What a renewal gives back and asks for.
pub(crate) struct Renewal {
    pub(crate) back_size: u64,
    pub(crate) back_unused: u64,
    pub(crate) want: u64,
}

type Key = (u64, Box<str>);

/// Looks up a `(quota fingerprint, subject)` key without allocating one;
/// hashes like it. Shared with the deny cache.
#[derive(Hash)]
pub(crate) struct KeyRef<'a>(pub(crate) u64, pub(crate) &'a str);

impl quick_cache::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.0 == key.0 && self.1 == &*key.1
    }
}

/// The leases this instance holds: bounded, one lock per subject.
pub(crate) struct Leases {
    pub(crate) config: Leasing,
    map: quick_cache::sync::Cache<Key, Arc<Mutex<Slot>>>,
}

impl Leases {
    pub(crate) fn new(config: Leasing) -> Self {
        Leases {
            config,
            map: quick_cache::sync::Cache::new(config.capacity),
        }
    }

    /// Spends `cost` units of a live lease: the fast path, no I/O.
    pub(crate) fn spend(&self, fp: u64, subject: &str, cost: u64, now: u64) -> Option<Decision> {
        let slot = self.map.get(&KeyRef(fp, subject))?;
        let mut s = slot.lock();
        if now >= s.expires || s.units < cost {
            return None;
        }
        s.units -= cost;
        s.spent += cost;
        let status = LimitStatus {
            remaining: s.remaining.saturating_add(s.units),
            // `now` may predate a renewal another task just installed.
            reset_after: Duration::from_nanos(
                s.lead.saturating_sub(now.saturating_sub(s.granted_at)),
            ),
            allowed: true,
        };
        Some(Decision {
            allowed: true,
            retry_after: None,
            statuses: smallvec::smallvec![status],
            source: DecisionSource::Lease,
            lease: None,
            applied: None,
        })
    }

    fn slot(&self, fp: u64, subject: &str, now: u64) -> Arc<Mutex<Slot>> {
        if let Some(slot) = self.map.get(&KeyRef(fp, subject)) {
            return slot;
        }
        let slot = Arc::new(Mutex::new(Slot {
            since: now,
            ..Slot::default()
        }));
        self.map.insert((fp, subject.into()), slot.clone());
        slot
    }

    /// Starts a renewal of `subject`'s lease, or `None` when one is in
    /// flight already (the caller then decides exactly, leasing nothing).
    /// The old lease's units are taken out of reach at once: they are
    /// given back with the call.
    pub(crate) fn begin(
        &self,
        fp: u64,
        subject: &str,
        cost: u64,
        now: u64,
    ) -> (Arc<Mutex<Slot>>, Option<Renewal>) {
        let slot = self.slot(fp, subject, now);
        let mut s = slot.lock();
        if s.renewing {
            drop(s);
            return (slot, None);
        }
        s.renewing = true;
        let lease = self.config.lease_time.as_nanos() as u64;
        // About one lease time's worth at the rate seen since the last
        // renewal (this request included), growing at most fourfold.
        let elapsed = now.saturating_sub(s.since);
        let seen = s.spent + cost;
        let rate_want = if elapsed == 0 {
            0
        } else {
            (u128::from(seen) * u128::from(lease) / u128::from(elapsed)).min(u128::from(u64::MAX))
                as u64
        };
        // Sizes count requests of this one's cost: a store charging more
        // than a unit per request (the global store's finer units) leases
        // as many requests as any other.
        let per = cost.max(1);
        let want = rate_want
            .min(s.want.saturating_mul(4).saturating_add(4 * per))
            .min(self.config.max_units.saturating_mul(per));
        let renewal = Renewal {
            back_size: s.size,
            back_unused: s.units,
            want,
        };
        s.units = 0;
        s.size = 0;
        s.expires = 0;
        s.spent = 0;
        s.since = now;
        s.want = want;
        drop(s);
        (slot, Some(renewal))
    }

    /// Ends a renewal: installs the lease Redis granted (`granted` units,
    /// Redis's lead `lead` ns and `remaining` units after it), or nothing
    /// when the call failed (the old lease's units are then forgotten: a
    /// failed call may or may not have given them back, and counting them
    /// spent can only under-admit).
    pub(crate) fn finish(slot: &Mutex<Slot>, grant: Option<(u64, u64, u64)>, lease: u64, now: u64) {
        let mut s = slot.lock();
        s.renewing = false;
        if let Some((granted, lead, remaining)) = grant {
            s.units = granted;
            s.size = granted;
            s.expires = now.saturating_add(lease);
            s.granted_at = now;
            s.lead = lead;
            s.remaining = remaining;
        }
    }

    /// Counts units admitted by an exact decision (for the rate estimate).
    pub(crate) fn count(slot: &Mutex<Slot>, cost: u64) {
        slot.lock().spent += cost;
    }

    /// Forgets `subject`'s lease (after a reset).
    pub(crate) fn remove(&self, fp: u64, subject: &str) {
        self.map.remove(&KeyRef(fp, subject));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_sizes_follow_the_rate_and_grow_at_most_fourfold() {
        let leases = Leases::new(Leasing::new().lease_time(Duration::from_millis(100)));
        // The first decision knows no rate: exact.
        let (slot, r) = leases.begin(1, "s", 1, 1_000);
        assert_eq!(r.unwrap().want, 0);
        Leases::finish(&slot, Some((0, 0, 0)), 100_000_000, 1_000);
        Leases::count(&slot, 1);
        // 2 units in 1 ms: 200 per lease time, but at most 0·4 + 4.
        let (slot, r) = leases.begin(1, "s", 1, 1_001_000);
        assert_eq!(r.unwrap().want, 4);
        Leases::finish(&slot, Some((4, 0, 0)), 100_000_000, 1_001_000);
        for _ in 0..4 {
            assert!(leases.spend(1, "s", 1, 1_002_000).is_some());
        }
        assert!(leases.spend(1, "s", 1, 1_002_000).is_none());
        // 5 units in 1 ms: 500 per lease time; at most 4·4 + 4 = 20.
        let (_, r) = leases.begin(1, "s", 1, 2_001_000);
        let r = r.unwrap();
        assert_eq!((r.want, r.back_size, r.back_unused), (20, 4, 0));
    }

    #[test]
    fn a_slow_subject_asks_for_little_and_max_units_caps_a_fast_one() {
        let leases = Leases::new(Leasing::new().max_units(8));
        let (slot, _) = leases.begin(1, "slow", 1, 1);
        Leases::finish(&slot, Some((0, 0, 0)), 100_000_000, 1);
        // One unit a second, lease time 100 ms: 0 (exact decisions).
        let (_, r) = leases.begin(1, "slow", 1, 2_000_000_001);
        assert_eq!(r.unwrap().want, 0);
        let (slot, _) = leases.begin(1, "fast", 1, 1);
        {
            let mut s = slot.lock();
            s.want = 1_000;
            s.renewing = false;
            s.spent = 1_000_000;
        }
        let (_, r) = leases.begin(1, "fast", 1, 1_000_001);
        assert_eq!(r.unwrap().want, 8);
    }

    #[test]
    fn one_renewal_at_a_time_and_unspent_units_go_back_with_it() {
        let leases = Leases::new(Leasing::new());
        let (slot, _) = leases.begin(1, "s", 1, 1);
        Leases::finish(&slot, Some((10, 5_000, 90)), 100_000_000, 1);
        let d = leases.spend(1, "s", 3, 2).unwrap();
        assert_eq!(d.source(), DecisionSource::Lease);
        // What this instance knows: 7 unspent plus Redis's 90.
        assert_eq!(d.statuses()[0].remaining, 97);
        let (slot, r) = leases.begin(1, "s", 20, 3);
        let r = r.unwrap();
        assert_eq!((r.back_size, r.back_unused), (10, 7));
        // Taken out of reach while the renewal is in flight.
        assert!(leases.spend(1, "s", 1, 4).is_none());
        assert!(leases.begin(1, "s", 1, 4).1.is_none());
        // A failed call installs nothing; the next one may renew.
        Leases::finish(&slot, None, 100_000_000, 5);
        assert!(leases.spend(1, "s", 1, 6).is_none());
        assert!(leases.begin(1, "s", 1, 6).1.is_some());
    }

    #[test]
    fn a_lease_is_spent_only_by_its_subject_and_quota() {
        let leases = Leases::new(Leasing::new());
        let (slot, _) = leases.begin(1, "a", 1, 1);
        Leases::finish(&slot, Some((10, 0, 0)), 1_000, 1);
        assert!(leases.spend(1, "b", 1, 2).is_none());
        assert!(leases.spend(2, "a", 1, 2).is_none());
        assert!(leases.spend(1, "a", 1, 2).is_some());
        assert!(!quick_cache::Equivalent::equivalent(
            &KeyRef(1, "a"),
            &(1, Box::<str>::from("b"))
        ));
    }

    #[test]
    fn a_lease_decision_counts_down_redis_reset_time() {
        let leases = Leases::new(Leasing::new());
        let (slot, _) = leases.begin(1, "s", 1, 1);
        Leases::finish(&slot, Some((10, 5_000, 90)), 100_000, 1);
        let d = leases.spend(1, "s", 1, 1_001).unwrap();
        assert_eq!(d.statuses()[0].reset_after, Duration::from_nanos(4_000));
        let d = leases.spend(1, "s", 1, 9_001).unwrap();
        assert_eq!(d.statuses()[0].reset_after, Duration::ZERO);
    }

    #[test]
    fn the_asking_request_counts_toward_the_rate() {
        let leases = Leases::new(Leasing::new().lease_time(Duration::from_millis(100)));
        let (slot, _) = leases.begin(1, "s", 1, 1);
        Leases::finish(&slot, Some((0, 0, 0)), 100_000_000, 1);
        slot.lock().want = 100;
        // Nothing spent since, a request of 5 one lease time later: 5.
        let (_, r) = leases.begin(1, "s", 5, 100_000_001);
        assert_eq!(r.unwrap().want, 5);
    }

    #[test]
    fn units_spent_from_the_lease_count_toward_the_rate() {
        let leases = Leases::new(Leasing::new().lease_time(Duration::from_millis(100)));
        let (slot, _) = leases.begin(1, "s", 1, 1);
        Leases::finish(&slot, Some((10, 0, 0)), 100_000_000, 1);
        slot.lock().want = 100;
        for _ in 0..9 {
            assert!(leases.spend(1, "s", 1, 2).is_some());
        }
        // Nine spent here and the asking one, in half a lease time: 20.
        let (_, r) = leases.begin(1, "s", 1, 50_000_001);
        assert_eq!(r.unwrap().want, 20);
    }

    #[test]
    fn growth_is_counted_in_requests_of_the_asking_cost() {
        let leases = Leases::new(Leasing::new().lease_time(Duration::from_millis(100)));
        let (slot, _) = leases.begin(1, "s", 3, 1);
        Leases::finish(&slot, Some((0, 0, 0)), 100_000_000, 1);
        Leases::count(&slot, 3_000);
        // A fast rate, from no lease: four requests of 3 units, 12.
        let (_, r) = leases.begin(1, "s", 3, 1_000_001);
        assert_eq!(r.unwrap().want, 12);
    }

    #[test]
    fn exact_decisions_count_toward_the_rate() {
        let leases = Leases::new(Leasing::new().lease_time(Duration::from_millis(100)));
        let (slot, _) = leases.begin(1, "s", 1, 1);
        Leases::finish(&slot, Some((0, 0, 0)), 100_000_000, 1);
        slot.lock().want = 100;
        for _ in 0..9 {
            Leases::count(&slot, 2);
        }
        // 18 units admitted exactly, and the asking one, in a lease time.
        let (_, r) = leases.begin(1, "s", 1, 100_000_001);
        assert_eq!(r.unwrap().want, 19);
    }

    #[test]
    fn a_clock_read_before_a_renewal_spends_without_underflow() {
        let leases = Leases::new(Leasing::new());
        let (slot, _) = leases.begin(1, "s", 1, 1);
        // Installed at 5 000 by one task; another read the clock at 4 000.
        Leases::finish(&slot, Some((10, 3_000, 0)), 100_000, 5_000);
        let d = leases.spend(1, "s", 1, 4_000).unwrap();
        assert_eq!(d.statuses()[0].reset_after, Duration::from_nanos(3_000));
    }

    #[test]
    fn an_expired_lease_is_not_spent() {
        let leases = Leases::new(Leasing::new());
        let (slot, _) = leases.begin(1, "s", 1, 1);
        Leases::finish(&slot, Some((10, 0, 0)), 1_000, 1);
        assert!(leases.spend(1, "s", 1, 1_000).is_some());
        assert!(leases.spend(1, "s", 1, 1_001).is_none());
    }

    #[test]
    fn leases_are_kept_for_a_bounded_number_of_subjects() {
        let leases = Leases::new(Leasing::new().capacity(1_000));
        for i in 0..100_000u32 {
            let _ = leases.begin(1, &format!("subject-{i}"), 1, 1);
            assert!(leases.len() <= 1_000 + 64);
        }
    }

    #[test]
    fn settings_are_kept_and_floored() {
        let l = Leasing::new()
            .lease_time(Duration::from_millis(5))
            .max_units(0)
            .capacity(0);
        assert_eq!(l.time(), Duration::from_millis(5));
        assert_eq!(l.bound(1, 1_000), 2);
        assert_eq!(
            Leasing::new().lease_time(Duration::ZERO).time(),
            Duration::from_millis(1)
        );
        assert_eq!(Leasing::new().time(), Duration::from_millis(100));
    }

    #[test]
    fn the_bound_is_two_leases_per_instance() {
        let l = Leasing::new().max_units(100);
        assert_eq!(l.bound(3, 10_000), 600);
        // Small limits cap the lease at a quarter of the burst.
        assert_eq!(l.bound(3, 40), 60);
    }
}
