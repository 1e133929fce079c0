//! The in-process store.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hashbrown::HashTable;
use parking_lot::{Mutex, RwLock};

use super::{Lease, LeaseKind, Store, StoreError, check_cost};
use crate::algo::{Step, Window, concurrency_step};
use crate::decision::{Decision, DecisionSource, LimitStatus, Statuses};
use crate::quota::{Params, Quota};

/// A shard is swept for idle entries when it grows past this, then again
/// each time it doubles.
const MIN_SWEEP: usize = 1024;

/// Subjects a store holds state for by default.
const DEFAULT_MAX_SUBJECTS: usize = 1_000_000;

/// Rate-limit state in this process: exact, fast, not shared.
///
/// Keys are spread over shards (a few per CPU), each a hash table behind a
/// read-write lock that is only taken for writing when a new subject
/// appears. A quota of one GCRA or one concurrency limit is decided with a
/// single compare-and-swap, without any lock held for writing; a quota of
/// several limits takes a per-subject lock so that it stays all-or-nothing.
///
/// Subjects whose state is back at rest (fully replenished) are evicted
/// when their shard grows, so memory follows the number of *active*
/// subjects; [`sweep`](Self::sweep) evicts on demand. Eviction never
/// changes a decision: an evicted subject's state equals a fresh one.
///
/// Active subjects are bounded too: past
/// [`max_subjects`](Self::with_max_subjects) (default 1 000 000, about
/// 100 MB) a shard forgets an eighth of its active subjects (never one
/// holding a concurrency slot) to make room. A forgotten subject starts
/// afresh: under a flood of distinct subjects the store errs on the side of
/// admitting, and its memory stays flat.
///
/// Cheap to clone: clones share state.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[RwLock<Shard>]>,
    /// Subjects one shard holds at most.
    max_per_shard: usize,
    hasher: foldhash::fast::RandomState,
    clock: quanta::Clock,
    start: u64,
}

struct Shard {
    /// Entries inline: a lookup touches the control bytes, one 32-byte
    /// entry and, on a match, the key's bytes.
    table: HashTable<Entry>,
    next_sweep: usize,
}

struct Entry {
    /// The quota's fingerprint (8 bytes, little-endian), then the subject.
    key: Box<[u8]>,
    state: State,
}

/// Shared with leases (`Arc`) where a lease must give slots back.
enum State {
    /// One GCRA limit: the theoretical arrival time.
    Gcra(AtomicU64),
    /// One concurrency limit: units in flight.
    Concurrency(Arc<Conc>),
    /// Several limits, decided together under the lock.
    Multi(Arc<Multi>),
}

struct Conc {
    in_flight: AtomicU64,
    /// Leases not known to be given back, for reclaim past their deadline.
    held: Mutex<Vec<Arc<Held>>>,
}

struct Multi {
    quota: Quota,
    slots: Mutex<Box<[Slot]>>,
    /// As in [`Conc`]; taken only with `slots` held.
    held: Mutex<Vec<Arc<Held>>>,
}

/// The slots of one admitted request: given back once — by its holder, or
/// by the store once its lease is over (a holder that never gives them
/// back: a hung request, a leaked lease).
struct Held {
    cost: u64,
    /// Store clock time after which the slots may be reclaimed.
    deadline: u64,
    done: AtomicBool,
}

impl Held {
    /// Marks the slots given back; true for the one caller that does it.
    fn give_back(&self) -> bool {
        !self.done.swap(true, Ordering::AcqRel)
    }
}

/// Remembers `held` in `list`, dropping entries already given back
/// whenever the list reaches a power of two (amortized O(1)).
fn remember(list: &mut Vec<Arc<Held>>, held: Arc<Held>) {
    if list.len() >= 16 && list.len().is_power_of_two() {
        list.retain(|h| !h.done.load(Ordering::Acquire));
    }
    list.push(held);
}

/// Gives back the slots of every lease in `list` past its deadline at
/// `now`, calling `free(cost)` for each; whether any was.
fn reclaim(list: &mut Vec<Arc<Held>>, now: u64, mut free: impl FnMut(u64)) -> bool {
    let mut any = false;
    list.retain(|h| {
        if h.done.load(Ordering::Acquire) {
            return false;
        }
        if h.deadline <= now && h.give_back() {
            free(h.cost);
            any = true;
            return false;
        }
        true
    });
    any
}

#[derive(Clone, Copy)]
enum Slot {
    Gcra(u64),
    Window(Window),
    Concurrency(u64),
}

/// Concurrency slots held in a [`MemoryStore`] entry; given back on
/// release or drop.
pub(crate) struct MemoryLease {
    state: LeaseState,
    held: Arc<Held>,
}

enum LeaseState {
    Concurrency(Arc<Conc>),
    Multi(Arc<Multi>),
}

impl fmt::Debug for MemoryLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLease")
            .field("cost", &self.held.cost)
            .finish_non_exhaustive()
    }
}

impl Drop for MemoryLease {
    fn drop(&mut self) {
        match &self.state {
            LeaseState::Concurrency(c) => {
                if self.held.give_back() {
                    c.in_flight.fetch_sub(self.held.cost, Ordering::AcqRel);
                }
            }
            LeaseState::Multi(m) => {
                let mut slots = m.slots.lock();
                if self.held.give_back() {
                    free_multi(&mut slots, self.held.cost);
                }
            }
        }
    }
}

fn free_multi(slots: &mut [Slot], cost: u64) {
    for slot in slots {
        if let Slot::Concurrency(n) = slot {
            *n = n.saturating_sub(cost);
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.inner.shards.len())
            .field("subjects", &self.len())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store with a few shards per CPU.
    pub fn new() -> Self {
        Self::with_clock(quanta::Clock::new())
    }

    /// An empty store holding state for at most about `max` subjects (see
    /// the type docs).
    pub fn with_max_subjects(max: usize) -> Self {
        Self::build(quanta::Clock::new(), max)
    }

    pub(crate) fn with_clock(clock: quanta::Clock) -> Self {
        Self::build(clock, DEFAULT_MAX_SUBJECTS)
    }

    fn build(clock: quanta::Clock, max_subjects: usize) -> Self {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shards = (cpus * 4).next_power_of_two().max(16);
        let start = clock.raw();
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..shards)
                    .map(|_| {
                        RwLock::new(Shard {
                            table: HashTable::new(),
                            next_sweep: MIN_SWEEP,
                        })
                    })
                    .collect(),
                max_per_shard: max_subjects.div_ceil(shards).max(1),
                hasher: foldhash::fast::RandomState::default(),
                clock,
                start,
            }),
        }
    }

    /// Nanoseconds on this store's monotonic clock (starts at 1 s so that
    /// "no state" (0) is always in the past).
    fn now(&self) -> u64 {
        let i = &self.inner;
        i.clock.delta_as_nanos(i.start, i.clock.raw()) + 1_000_000_000
    }

    /// How many subjects currently hold state.
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.read().table.len()).sum()
    }

    /// Whether no subject holds state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evicts every subject whose state is at rest. Returns how many were
    /// evicted.
    pub fn sweep(&self) -> usize {
        let now = self.now();
        self.inner
            .shards
            .iter()
            .map(|s| sweep_shard(&mut s.write(), now))
            .sum()
    }

    /// Checks and counts `cost` units for `subject` — the synchronous form
    /// of [`Store::check`], for callers outside async code.
    ///
    /// # Errors
    /// [`StoreError::InvalidCost`] when `cost` is above
    /// [`MAX_COUNT`](crate::MAX_COUNT).
    pub fn check_now(
        &self,
        subject: &str,
        quota: &Quota,
        cost: u64,
    ) -> Result<Decision, StoreError> {
        check_cost(cost)?;
        let now = self.now();
        Ok(self.with_entry(subject, quota, |e| decide(e, quota, now, cost, true)))
    }

    fn hash(&self, fingerprint: u64, subject: &[u8]) -> u64 {
        let mut h = self.inner.hasher.build_hasher();
        h.write_u64(fingerprint);
        h.write(subject);
        h.finish()
    }

    fn rehash(&self, e: &Entry) -> u64 {
        let (fp, subject) = e.key.split_at(8);
        let fp = u64::from_le_bytes(fp.try_into().expect("8 bytes"));
        self.hash(fp, subject)
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.inner.shards[shard_index(hash, self.inner.shards.len())]
    }

    fn with_entry<R>(&self, subject: &str, quota: &Quota, f: impl FnOnce(&Entry) -> R) -> R {
        let fp = quota.fingerprint();
        let hash = self.hash(fp, subject.as_bytes());
        let shard = self.shard(hash);
        let eq = matcher(fp, subject);
        {
            let guard = shard.read();
            if let Some(e) = guard.table.find(hash, eq) {
                return f(e);
            }
        }
        let mut guard = shard.write();
        let max = self.inner.max_per_shard;
        if guard.table.len() >= guard.next_sweep.min(max) {
            let now = self.now();
            sweep_shard(&mut guard, now);
            if guard.table.len() >= max {
                forget_some(&mut guard, (max / 8).max(1));
            }
            guard.next_sweep = (guard.table.len() * 2).max(MIN_SWEEP);
        }
        let entry = match guard.table.find(hash, eq) {
            Some(e) => e,
            None => guard
                .table
                .insert_unique(hash, Entry::new(subject, quota), |e| self.rehash(e))
                .into_mut(),
        };
        f(entry)
    }

    fn peek(&self, subject: &str, quota: &Quota) -> Decision {
        let now = self.now();
        let fp = quota.fingerprint();
        let hash = self.hash(fp, subject.as_bytes());
        let guard = self.shard(hash).read();
        match guard.table.find(hash, matcher(fp, subject)) {
            Some(e) => decide(e, quota, now, 0, false),
            None => decide(&Entry::new(subject, quota), quota, now, 0, false),
        }
    }

    fn forget(&self, subject: &str, quota: &Quota) {
        let fp = quota.fingerprint();
        let hash = self.hash(fp, subject.as_bytes());
        let mut guard = self.shard(hash).write();
        if let Ok(e) = guard.table.find_entry(hash, matcher(fp, subject)) {
            e.remove();
        }
    }
}

fn matcher(fp: u64, subject: &str) -> impl Fn(&Entry) -> bool + Copy + '_ {
    move |e: &Entry| {
        e.key.len() == subject.len() + 8
            && e.key[..8] == fp.to_le_bytes()
            && e.key[8..] == *subject.as_bytes()
    }
}

/// The shard of a hash: bits 32 and up. hashbrown places entries by the
/// low bits and tags them with the top seven; a shard index taken from
/// either would leave every entry of a shard alike in those bits (crowded
/// buckets, or tags that no longer tell entries apart).
fn shard_index(hash: u64, shards: usize) -> usize {
    ((hash >> 32) as usize) & (shards - 1)
}

/// Forgets up to `n` subjects that hold no concurrency slot.
fn forget_some(shard: &mut Shard, mut n: usize) {
    shard.table.retain(|e| {
        if n == 0 || e.leased() {
            return true;
        }
        n -= 1;
        false
    });
}

fn sweep_shard(shard: &mut Shard, now: u64) -> usize {
    let before = shard.table.len();
    shard.table.retain(|e| e.leased() || !e.at_rest(now));
    before - shard.table.len()
}

impl Entry {
    fn new(subject: &str, quota: &Quota) -> Self {
        let state = match quota.params() {
            [Params::Gcra(_)] => State::Gcra(AtomicU64::new(0)),
            [Params::Concurrency { .. }] => State::Concurrency(Arc::new(Conc {
                in_flight: AtomicU64::new(0),
                held: Mutex::new(Vec::new()),
            })),
            params => State::Multi(Arc::new(Multi {
                quota: quota.clone(),
                slots: Mutex::new(
                    params
                        .iter()
                        .map(|p| match p {
                            Params::Gcra(_) => Slot::Gcra(0),
                            Params::Sliding(_) => Slot::Window(Window::default()),
                            Params::Concurrency { .. } => Slot::Concurrency(0),
                        })
                        .collect(),
                ),
                held: Mutex::new(Vec::new()),
            })),
        };
        let mut key = Vec::with_capacity(8 + subject.len());
        key.extend_from_slice(&quota.fingerprint().to_le_bytes());
        key.extend_from_slice(subject.as_bytes());
        Entry {
            key: key.into_boxed_slice(),
            state,
        }
    }

    /// Whether a lease still refers to this entry's state.
    fn leased(&self) -> bool {
        match &self.state {
            State::Gcra(_) => false,
            State::Concurrency(a) => Arc::strong_count(a) > 1,
            State::Multi(a) => Arc::strong_count(a) > 1,
        }
    }

    fn at_rest(&self, now: u64) -> bool {
        match &self.state {
            State::Gcra(tat) => tat.load(Ordering::Acquire) <= now,
            State::Concurrency(c) => c.in_flight.load(Ordering::Acquire) == 0,
            State::Multi(m) => m
                .slots
                .lock()
                .iter()
                .zip(m.quota.params())
                .all(|(slot, p)| match (slot, p) {
                    (Slot::Gcra(tat), _) => *tat <= now,
                    (Slot::Window(w), Params::Sliding(s)) => s.at_rest(w, now),
                    (Slot::Concurrency(n), _) => *n == 0,
                    _ => true,
                }),
        }
    }
}

fn decision(allowed: bool, statuses: Statuses, retry: Option<u64>) -> Decision {
    Decision {
        allowed,
        retry_after: if allowed {
            None
        } else {
            retry.map(Duration::from_nanos)
        },
        statuses,
        source: DecisionSource::Store,
        lease: None,
        applied: None,
    }
}

/// Decides `cost` for one entry at `now`; with `commit`, counts it if
/// admitted.
#[inline]
fn decide(entry: &Entry, quota: &Quota, now: u64, cost: u64, commit: bool) -> Decision {
    // The single-GCRA fast path, inlined into the lookup; the rest apart.
    if let (State::Gcra(tat), [Params::Gcra(g)]) = (&entry.state, quota.params()) {
        let mut cur = tat.load(Ordering::Acquire);
        loop {
            let step = g.step(cur, now, cost);
            if !step.status.allowed || !commit {
                return one(step);
            }
            match tat.compare_exchange_weak(cur, step.next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return one(step),
                Err(actual) => cur = actual,
            }
        }
    }
    decide_other(entry, quota, now, cost, commit)
}

#[inline(never)]
fn decide_other(entry: &Entry, quota: &Quota, now: u64, cost: u64, commit: bool) -> Decision {
    let params = quota.params();
    match (&entry.state, params) {
        (State::Concurrency(c), [Params::Concurrency { max, lease: ttl }]) => {
            let n = &c.in_flight;
            let mut cur = n.load(Ordering::Acquire);
            let mut reclaimed = false;
            loop {
                let step = concurrency_step(*max, cur, cost);
                if !step.status.allowed && commit && !reclaimed {
                    // Slots held past their lease go back, then try again.
                    reclaimed = true;
                    if reclaim(&mut c.held.lock(), now, |cost| {
                        n.fetch_sub(cost, Ordering::AcqRel);
                    }) {
                        cur = n.load(Ordering::Acquire);
                        continue;
                    }
                }
                if !step.status.allowed || !commit || cost == 0 {
                    return one(step);
                }
                match n.compare_exchange_weak(cur, step.next, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        let held = held(cost, now, *ttl);
                        remember(&mut c.held.lock(), held.clone());
                        let mut d = one(step);
                        d.lease = lease(LeaseState::Concurrency(c.clone()), held);
                        return d;
                    }
                    Err(actual) => cur = actual,
                }
            }
        }
        (State::Multi(shared), params) => {
            let mut slots = shared.slots.lock();
            if commit {
                // Slots held past their lease go back first.
                reclaim(&mut shared.held.lock(), now, |cost| {
                    free_multi(&mut slots, cost)
                });
            }
            let mut statuses = Statuses::new();
            let mut next: smallvec::SmallVec<[Slot; 4]> = smallvec::SmallVec::new();
            let mut allowed = true;
            let mut retry = Some(0u64);
            let mut has_concurrency = false;
            let step = |slot: &Slot, p: &Params, cost: u64| match (slot, p) {
                (Slot::Gcra(tat), Params::Gcra(g)) => parts(g.step(*tat, now, cost), Slot::Gcra),
                (Slot::Window(w), Params::Sliding(s)) => parts(s.step(*w, now, cost), Slot::Window),
                (Slot::Concurrency(c), Params::Concurrency { max, .. }) => {
                    parts(concurrency_step(*max, *c, cost), Slot::Concurrency)
                }
                _ => unreachable!("an entry's slots follow its quota's limits"),
            };
            for (slot, p) in slots.iter().zip(params) {
                has_concurrency |= matches!(slot, Slot::Concurrency(_));
                let (status, n, r) = step(slot, p, cost);
                allowed &= status.allowed;
                if !status.allowed {
                    retry = match (retry, r) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                }
                statuses.push(status);
                next.push(n);
            }
            if !allowed {
                // Nothing is spent: report the limits that would have
                // admitted the request as they stand, not after the spend.
                for ((status, slot), p) in statuses.iter_mut().zip(slots.iter()).zip(params) {
                    if status.allowed {
                        let (unspent, _, _) = step(slot, p, 0);
                        status.remaining = unspent.remaining;
                        status.reset_after = unspent.reset_after;
                    }
                }
            }
            let mut d = decision(allowed, statuses, retry);
            if allowed && commit {
                slots.copy_from_slice(&next);
                if has_concurrency && cost > 0 {
                    // The longest lease of the quota's concurrency limits:
                    // no slot goes back before its own lease is over.
                    let ttl = params
                        .iter()
                        .filter_map(|p| match p {
                            Params::Concurrency { lease, .. } => Some(*lease),
                            _ => None,
                        })
                        .max()
                        .unwrap_or_default();
                    let held = held(cost, now, ttl);
                    remember(&mut shared.held.lock(), held.clone());
                    d.lease = lease(LeaseState::Multi(shared.clone()), held);
                }
            }
            d
        }
        _ => unreachable!("an entry's state follows its quota's shape"),
    }
}

fn held(cost: u64, now: u64, ttl: Duration) -> Arc<Held> {
    Arc::new(Held {
        cost,
        deadline: now.saturating_add(ttl.as_nanos().min(u128::from(u64::MAX)) as u64),
        done: AtomicBool::new(false),
    })
}

fn lease(state: LeaseState, held: Arc<Held>) -> Option<Lease> {
    Some(Lease {
        kind: LeaseKind::Memory(MemoryLease { state, held }),
    })
}

fn parts<S>(step: Step<S>, wrap: impl FnOnce(S) -> Slot) -> (LimitStatus, Slot, Option<u64>) {
    (step.status, wrap(step.next), step.retry)
}

fn one<S>(step: Step<S>) -> Decision {
    let mut statuses = Statuses::new();
    statuses.push(step.status);
    decision(step.status.allowed, statuses, step.retry)
}

impl Store for MemoryStore {
    async fn check(&self, subject: &str, quota: &Quota, cost: u64) -> Result<Decision, StoreError> {
        self.check_now(subject, quota, cost)
    }

    fn try_check_now(
        &self,
        subject: &str,
        quota: &Quota,
        cost: u64,
    ) -> Option<Result<Decision, StoreError>> {
        Some(self.check_now(subject, quota, cost))
    }

    async fn inspect(&self, subject: &str, quota: &Quota) -> Result<Decision, StoreError> {
        Ok(self.peek(subject, quota))
    }

    async fn reset(&self, subject: &str, quota: &Quota) -> Result<(), StoreError> {
        self.forget(subject, quota);
        Ok(())
    }

    fn is_remote(&self) -> bool {
        false
    }

    fn release(&self, lease: Lease) {
        // Dropping a memory lease gives its slots back.
        drop(lease);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limit;

    fn mock() -> (MemoryStore, Arc<quanta::Mock>) {
        let (clock, mock) = quanta::Clock::mock();
        (MemoryStore::with_clock(clock), mock)
    }

    #[test]
    fn gcra_fast_path_counts_and_refills() {
        let (store, clock) = mock();
        let q = Quota::single(Limit::per_second(2)).unwrap();
        assert!(store.check_now("a", &q, 1).unwrap().is_allowed());
        assert!(store.check_now("a", &q, 1).unwrap().is_allowed());
        let d = store.check_now("a", &q, 1).unwrap();
        assert!(!d.is_allowed());
        assert_eq!(d.retry_after(), Some(Duration::from_millis(500)));
        // Other subjects are independent.
        assert!(store.check_now("b", &q, 1).unwrap().is_allowed());
        clock.increment(Duration::from_millis(500));
        assert!(store.check_now("a", &q, 1).unwrap().is_allowed());
        assert!(!store.check_now("a", &q, 1).unwrap().is_allowed());
    }

    #[test]
    fn multi_limit_is_all_or_nothing() {
        let (store, clock) = mock();
        let q = Quota::new([Limit::per_second(10), Limit::per_minute(3)]).unwrap();
        for _ in 0..3 {
            assert!(store.check_now("k", &q, 1).unwrap().is_allowed());
        }
        let d = store.check_now("k", &q, 1).unwrap();
        assert!(!d.is_allowed());
        assert!(d.statuses()[0].allowed && !d.statuses()[1].allowed);
        // The denial spent nothing from the per-second limit.
        assert_eq!(d.statuses()[0].remaining, 7);
        assert_eq!(d.retry_after(), Some(Duration::from_secs(20)));
        clock.increment(Duration::from_secs(20));
        assert!(store.check_now("k", &q, 1).unwrap().is_allowed());
    }

    #[test]
    fn concurrency_lease_released_on_drop() {
        let (store, _clock) = mock();
        let q = Quota::single(Limit::concurrency(2)).unwrap();
        let mut a = store.check_now("k", &q, 1).unwrap();
        let mut b = store.check_now("k", &q, 1).unwrap();
        assert!(a.is_allowed() && b.is_allowed());
        assert!(!store.check_now("k", &q, 1).unwrap().is_allowed());
        store.release(a.take_lease().unwrap());
        let c = store.check_now("k", &q, 1).unwrap();
        assert!(c.is_allowed());
        drop(b.take_lease());
        assert_eq!(store.peek("k", &q).statuses()[0].remaining, 1);
    }

    #[test]
    fn idle_subjects_are_evicted_without_changing_decisions() {
        let (store, clock) = mock();
        let q = Quota::single(Limit::per_second(1)).unwrap();
        for i in 0..5000 {
            assert!(
                store
                    .check_now(&format!("k{i}"), &q, 1)
                    .unwrap()
                    .is_allowed()
            );
        }
        assert!(!store.check_now("k1", &q, 1).unwrap().is_allowed());
        assert_eq!(store.sweep(), 0, "nothing is at rest yet");
        assert!(!store.is_empty());
        clock.increment(Duration::from_secs(1));
        assert_eq!(store.sweep(), 5000);
        assert!(store.is_empty());
        // Growth past a shard's threshold sweeps it too.
        for i in 0..100_000 {
            store.check_now(&format!("x{i}"), &q, 1).unwrap();
            if i % 1000 == 0 {
                clock.increment(Duration::from_secs(1));
            }
        }
        assert!(store.len() < 50_000, "{}", store.len());
    }

    /// Slots given back are forgotten as more are taken: a subject that
    /// holds twenty slots for good and takes and gives back others forever
    /// keeps a bounded list.
    #[test]
    fn given_back_slots_are_forgotten() {
        let held = |done| {
            Arc::new(Held {
                cost: 1,
                deadline: u64::MAX,
                done: AtomicBool::new(done),
            })
        };
        let mut list = Vec::new();
        for _ in 0..20 {
            remember(&mut list, held(false));
        }
        for i in 0..100_000 {
            remember(&mut list, held(true));
            assert!(list.len() <= 64, "{} after {i}", list.len());
        }
    }

    /// A sliding window's subject stays until its use stops counting —
    /// through the next window, where the previous one still weighs —
    /// and goes after: an eviction never hands out a fresh budget early.
    #[test]
    fn a_sliding_windows_subject_is_evicted_only_at_rest() {
        let (store, clock) = mock();
        let q = Quota::single(Limit::sliding_window(2, Duration::from_secs(10))).unwrap();
        let spend = |n| {
            (0..n)
                .filter(|_| store.check_now("k", &q, 1).unwrap().is_allowed())
                .count()
        };
        assert_eq!(spend(3), 2);
        assert_eq!(store.sweep(), 0, "used in its window");
        clock.increment(Duration::from_secs(10));
        assert_eq!(store.sweep(), 0, "it weighs on the next window");
        assert_eq!(spend(1), 0);
        clock.increment(Duration::from_secs(20));
        assert_eq!(store.sweep(), 1);
        assert_eq!(spend(3), 2);
    }

    /// A subject of several limits is evicted only when every one is at
    /// rest: a spent daily limit beside an idle per-second one keeps it.
    #[test]
    fn a_subject_of_several_limits_is_evicted_only_when_all_rest() {
        let (store, clock) = mock();
        let q = Quota::new([Limit::per_day(2), Limit::per_second(100)]).unwrap();
        let spend = |n| {
            (0..n)
                .filter(|_| store.check_now("k", &q, 1).unwrap().is_allowed())
                .count()
        };
        assert_eq!(spend(3), 2);
        clock.increment(Duration::from_secs(60));
        assert_eq!(store.sweep(), 0, "the day's use still counts");
        assert_eq!(spend(1), 0);
        clock.increment(Duration::from_secs(86_400));
        assert_eq!(store.sweep(), 1);
    }

    #[test]
    fn shards_come_from_bits_hashbrown_does_not_use() {
        for shards in [16, 64, 1024] {
            // The top seven bits (hashbrown's tag) and the low bits (its
            // bucket) never choose the shard...
            for hash in [0u64, 0xFE00_0000_0000_0000, 0x0000_0000_FFFF_FFFF] {
                assert_eq!(shard_index(hash, shards), 0);
            }
            // ...bits 32 and up do, all of them used.
            let used: std::collections::HashSet<usize> = (0..shards as u64)
                .map(|i| shard_index(i << 32, shards))
                .collect();
            assert_eq!(used.len(), shards);
        }
    }

    #[test]
    fn active_subjects_are_bounded_under_a_million_distinct_ones() {
        let store = MemoryStore::with_max_subjects(10_000);
        let day = Quota::single(Limit::per_day(5)).unwrap();
        let slots = Quota::single(Limit::concurrency(1)).unwrap();
        // A subject holding a slot is never forgotten.
        let mut held = store.check_now("holder", &slots, 1).unwrap();
        for i in 0..1_000_000 {
            // Per day: nobody is back at rest during the test.
            assert!(
                store
                    .check_now(&format!("s{i}"), &day, 1)
                    .unwrap()
                    .is_allowed()
            );
        }
        let bound = 10_000 + store.inner.shards.len();
        assert!(store.len() <= bound, "{} > {bound}", store.len());
        // A full shard forgets an eighth, not more: every shard keeps at
        // least seven eighths of its share.
        assert!(store.len() >= 8_500, "{}", store.len());
        assert!(!store.check_now("holder", &slots, 1).unwrap().is_allowed());
        drop(held.take_lease());
        assert!(store.check_now("holder", &slots, 1).unwrap().is_allowed());
    }

    /// A full shard forgets subjects, but never one a lease refers to
    /// (a slot held, alone or among other limits), wherever it lies in the
    /// table.
    #[test]
    fn forgetting_keeps_every_subject_a_lease_refers_to() {
        let slots = Quota::single(Limit::concurrency(1)).unwrap();
        let multi = Quota::new([Limit::per_second(5), Limit::concurrency(1)]).unwrap();
        let day = Quota::single(Limit::per_day(5)).unwrap();
        let mut shard = Shard {
            table: HashTable::new(),
            next_sweep: MIN_SWEEP,
        };
        let mut held = Vec::new();
        for i in 0..300u64 {
            let (quota, name) = match i % 3 {
                0 => (&slots, "slot"),
                1 => (&multi, "multi"),
                _ => (&day, "day"),
            };
            let entry = Entry::new(&format!("{name}{i}"), quota);
            match &entry.state {
                State::Concurrency(c) => held.push(Box::new(c.clone()) as Box<dyn std::any::Any>),
                State::Multi(m) => held.push(Box::new(m.clone())),
                State::Gcra(_) => {}
            }
            shard.table.insert_unique(i, entry, |_| 0);
        }
        forget_some(&mut shard, 1_000);
        assert_eq!(shard.table.len(), 200, "the 100 others forgotten");
        assert!(shard.table.iter().all(Entry::leased));
        drop(held);
        assert!(shard.table.iter().all(|e| !e.leased()));
        forget_some(&mut shard, 150);
        assert_eq!(shard.table.len(), 50);
    }

    /// A slot held past its lease (a hung request, a leaked lease) goes
    /// back; its holder giving it back later frees nothing twice.
    #[test]
    fn slots_held_past_their_lease_are_reclaimed_once() {
        let (store, clock) = mock();
        let single = Quota::single(Limit::concurrency(1).lease(Duration::from_secs(10))).unwrap();
        let multi = Quota::new([
            Limit::per_second(1000),
            Limit::concurrency(1)
                .lease(Duration::from_secs(5))
                .named("a"),
            Limit::concurrency(2)
                .lease(Duration::from_secs(10))
                .named("b"),
        ])
        .unwrap();
        for (q, lease) in [(&single, 10), (&multi, 10)] {
            let mut hung = store.check_now("k", q, 1).unwrap();
            assert!(hung.is_allowed());
            let hung = hung.take_lease().unwrap();
            assert!(!store.check_now("k", q, 1).unwrap().is_allowed());
            // Not before its (longest) lease is over...
            clock.increment(Duration::from_secs(lease - 1));
            assert!(!store.check_now("k", q, 1).unwrap().is_allowed());
            // ...then it is.
            clock.increment(Duration::from_secs(1));
            let mut next = store.check_now("k", q, 1).unwrap();
            assert!(next.is_allowed());
            let next = next.take_lease().unwrap();
            // The hung holder finishes: nothing is freed twice.
            drop(hung);
            assert!(!store.check_now("k", q, 1).unwrap().is_allowed());
            drop(next);
            let mut again = store.check_now("k", q, 1).unwrap();
            assert!(again.is_allowed());
            drop(again.take_lease());
        }
    }

    #[test]
    fn given_back_leases_are_not_kept() {
        let (store, _clock) = mock();
        let q = Quota::single(Limit::concurrency(1)).unwrap();
        for _ in 0..10_000 {
            let mut d = store.check_now("k", &q, 1).unwrap();
            drop(d.take_lease());
        }
        let fp = q.fingerprint();
        let hash = store.hash(fp, b"k");
        let guard = store.shard(hash).read();
        let entry = guard.table.find(hash, matcher(fp, "k")).unwrap();
        let State::Concurrency(c) = &entry.state else {
            panic!()
        };
        assert!(c.held.lock().len() <= 32, "{}", c.held.lock().len());
    }

    #[test]
    fn reset_forgets() {
        let (store, _clock) = mock();
        let q = Quota::single(Limit::per_minute(1)).unwrap();
        assert!(store.check_now("k", &q, 1).unwrap().is_allowed());
        assert!(!store.check_now("k", &q, 1).unwrap().is_allowed());
        store.forget("k", &q);
        assert!(store.check_now("k", &q, 1).unwrap().is_allowed());
    }
}
