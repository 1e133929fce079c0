//! Global limits across regions: one limit per subject, enforced by every
//! region on its own Redis, with no cross-region call on the request path.
//!
//! # Protocol
//!
//! Each region enforces the global quota at a **share** `wᵢ` of it: its
//! local state keeps the global limit in finer units (× `M`), and a request
//! of cost `c` is charged `c·M / wᵢ` of them — so region `i` admits `wᵢ` of
//! the global rate and burst, and a share change never resets state.
//!
//! Shares follow demand. Every instance counts the units asked for per
//! subject; every [`sync_interval`](RegionSet::sync_interval) (a *round*,
//! numbered from the Unix epoch) it adds those not yet counted to its
//! region's counter in the local Redis, *seals* the region's entry for the
//! round that just ended — `(round, cumulative units, cumulative units a
//! round earlier)` — and pushes that entry to every other region's Redis.
//! The instance sends its running total, and the ledger keeps the total it
//! last counted for each instance (and each time the instance took the
//! subject up afresh): a seal whose answer was lost (applied, then timed
//! out) is not counted again when the next round sends the total anew.
//! Those marks go ten rounds after their last seal. Half a round later
//! it reads the entries its local Redis holds and computes the shares: a
//! region's demand is the units asked for in the last round (0 when its
//! entry is older: idle, or cut off); every region gets at least a floor
//! (a quarter of an equal split), the rest is split by demand.
//!
//! Entries are per region and ordered by `(round, units)`: merging keeps
//! the larger, which is commutative, associative and idempotent (a
//! G-counter per region), so pushes may repeat, cross and arrive late.
//!
//! # Bounds
//!
//! - **Links up** (latency under half a round): every region computes the
//!   same shares from the same entries, they sum to at most 1, and the
//!   fleet admits at most `(r·t + b) · Σᵢ maxᵢ` in any window of length
//!   `t`, where `maxᵢ` is region `i`'s largest share during it — `r·t + b`
//!   while shares are steady — plus what each region's own store adds (the
//!   leased mode's `2·N·S`).
//! - **Partition**: each side keeps computing shares from what it sees;
//!   regions it cannot see count as idle, so each side admits at most its
//!   own shares of the limit, and the total is at most limit × regions.
//! - **Healing**: the first round after the links are back exchanges the
//!   entries; shares agree again within two rounds.
//! - **Clocks**: rounds are numbered by each instance's clock, which must
//!   agree with its Redis servers' clocks within ten rounds. An entry more
//!   than ten rounds ahead of the server's clock (garbage, or an instance
//!   whose clock is far off) is replaced where it is found and refused
//!   where it is pushed: kept, it would win every merge for ever and hold
//!   its region's demand at 0. Within that bound the merge is the
//!   lattice's, so a push that arrives late changes nothing.
//!
//! Quotas with a concurrency limit are not global: they are decided by the
//! local region's store as given.
//!
//! # Cost
//!
//! Per round and instance: one call to the local Redis per subject asked
//! for in the last three rounds, one push to every other region's Redis
//! per such subject, and one local read. Shares are kept for at most
//! 65 536 subjects per instance.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cog_core::keys::encode_segment;
use fred::clients::Client;
use fred::interfaces::LuaInterface;

use crate::decision::{Decision, LimitStatus};
use crate::quota::Quota;
use crate::store::lease::KeyRef;
use crate::store::{Lease, RedisStore, Store, StoreError};

/// Lua shared by the scripts: whether a round is more than ten rounds
/// ahead of this server's clock, for rounds of `ms` milliseconds. No
/// script wrote such an entry on a clock near the server's (garbage, or an
/// instance whose clock is far off): kept, it would win every merge for
/// ever.
macro_rules! ahead_lua {
    () => {
        r#"
local function ahead(round, ms)
  local t = redis.call('TIME')
  local now = (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) / tonumber(ms)
  return round > now + 10
end
"#
    };
}

const SEAL_LUA: &str = concat!(
    ahead_lua!(),
    r#"
-- KEYS[1] ledger; ARGV[1] region, ARGV[2] the sealing instance's mark
-- for the subject, ARGV[3] units asked of it in all, ARGV[4] how many of
-- them it knows are counted,
-- ARGV[5] round to seal, ARGV[6] lifetime (ms), ARGV[7] '1' to drop the
-- marks of instances quiet for ten rounds, ARGV[8] a round's length (ms).
-- Returns the region's sealed entry.
--
-- The mark 'i:<mark>' = 'total:round' holds the total
-- last counted: a seal whose answer was lost, sent again, adds nothing
-- twice.
-- Garbage is replaced, never trusted; nothing is deleted on an error
-- (OOM: the seal fails and is sent again).
local function count(v)
  local n = tonumber(v)
  if n and n >= 0 and n < 2^53 then return math.floor(n) end
  return 0
end
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'hash' and t ~= 'none' then redis.call('DEL', KEYS[1]) end
local r = tonumber(ARGV[5])
local mark = 'i:' .. ARGV[2]
local seen = count(string.match(redis.call('HGET', KEYS[1], mark) or '', '^(%d+):%d+$'))
local add = math.max(count(ARGV[3]) - math.max(seen, count(ARGV[4])), 0)
local cum = count(redis.call('HGET', KEYS[1], 'c:' .. ARGV[1])) + add
redis.call('HSET', KEYS[1], 'c:' .. ARGV[1], string.format('%d', cum), mark, ARGV[3] .. ':' .. ARGV[5])
local e = redis.call('HGET', KEYS[1], ARGV[1])
local er, ecum = -1, 0
if e then
  local a, b = string.match(e, '^(%d+):(%d+):%d+$')
  er, ecum = tonumber(a) or -1, count(b)
end
-- An entry far ahead of this server's clock is replaced, not kept for
-- ever; a round far ahead (this instance's clock is off) is not sealed.
if ahead(er, ARGV[8]) then er, ecum = -1, cum end
if er < r and not ahead(r, ARGV[8]) then
  e = string.format('%d:%d:%d', r, cum, ecum)
  redis.call('HSET', KEYS[1], ARGV[1], e)
end
if ARGV[7] == '1' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'i:' then
      local mr = tonumber(string.match(all[i + 1], ':(%d+)$'))
      if (not mr) or mr + 10 < r then redis.call('HDEL', KEYS[1], all[i]) end
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return e
"#
);

const MERGE_LUA: &str = concat!(
    ahead_lua!(),
    r#"
-- KEYS[1] ledger; ARGV[1] region, ARGV[2] entry 'round:units:before',
-- ARGV[3] lifetime (ms), ARGV[4] a round's length (ms). Keeps the larger
-- entry by (round, units, before); neither may be far ahead of this
-- server's clock.
local function parse(e)
  local a, b, c = string.match(e or '', '^(%d+):(%d+):(%d+)$')
  return tonumber(a), tonumber(b), tonumber(c)
end
local nr, nc, np = parse(ARGV[2])
if (not nr) or ahead(nr, ARGV[4]) then return 0 end
local ok, cur = pcall(redis.call, 'HGET', KEYS[1], ARGV[1])
if not ok then redis.call('DEL', KEYS[1]); cur = nil end
local cr, cc, cp = parse(cur)
if (not cr) or ahead(cr, ARGV[4]) or nr > cr or (nr == cr and (nc > cc or (nc == cc and np > cp))) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
"#
);

const READ_LUA: &str = r#"
local ok, v = pcall(redis.call, 'HGETALL', KEYS[1])
if ok then return v end
return {}
"#;

/// Finer units of the regional state: up to a thousandth of a unit.
const SCALES: [u64; 4] = [1_000, 100, 10, 1];
/// The whole a share is a part of: divisible by every region count up to
/// 16 (and by four times it), so equal splits and floors are exact.
const WHOLE: u64 = 720_720;

/// The Redis deployments of every region, the local one first.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use cog_ratelimit::region::{GlobalStore, RegionSet};
/// use cog_ratelimit::store::{connect, Leasing, RedisStore};
///
/// let eu = connect("redis://redis.eu:6379").await?;
/// let regions = RegionSet::new("eu", eu.clone())
///     .region("us", connect("redis://redis.us:6379").await?)
///     .region("ap", connect("redis://redis.ap:6379").await?)
///     .sync_interval(Duration::from_secs(1));
/// let store = GlobalStore::new(regions, RedisStore::new(eu).leased(Leasing::new()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RegionSet {
    regions: Vec<Region>,
    interval: Duration,
}

/// A region: its name, a client of its Redis, and what reconnects that
/// client when a failover left it on a replica (the sync task's calls are
/// its only ones when the client is not also a store's).
#[derive(Clone)]
struct Region {
    name: String,
    client: Client,
    demotion: Arc<cog_core::redis::Demotion>,
}

impl Region {
    fn new(name: String, client: Client) -> Self {
        Region {
            name,
            client,
            demotion: Default::default(),
        }
    }

    /// Notes a failed call to this region (a `READONLY` answer reconnects).
    fn failed(&self, error: &fred::error::Error) {
        self.demotion.after_error(&self.client, error.details());
    }
}

impl std::fmt::Debug for RegionSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionSet")
            .field("local", &self.regions[0].name)
            .field("regions", &self.names())
            .field("interval", &self.interval)
            .finish()
    }
}

impl RegionSet {
    /// The local region, `name`, on `client` (the same deployment the local
    /// store uses).
    pub fn new(name: impl Into<String>, client: Client) -> Self {
        RegionSet {
            regions: vec![Region::new(name.into(), client)],
            interval: Duration::from_secs(1),
        }
    }

    /// Adds a remote region (a name already in the set is ignored). Every
    /// region must know the same set.
    pub fn region(mut self, name: impl Into<String>, client: Client) -> Self {
        let name = name.into();
        // A name already there (the local one included) is not added twice.
        if !self.regions.iter().any(|r| r.name == name) {
            self.regions.push(Region::new(name, client));
        }
        self
    }

    /// How often regions exchange demand and recompute shares (default 1 s,
    /// at least 10 ms). Cross-region latency must stay under half of it.
    pub fn sync_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Region names, the local one first.
    pub fn names(&self) -> Vec<&str> {
        self.regions.iter().map(|r| r.name.as_str()).collect()
    }

    fn local(&self) -> &str {
        &self.regions[0].name
    }
}

/// One region's entry in a subject's ledger: at the end of `round`, the
/// region had been asked for `units` in all, and `before` a round earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub(crate) round: u64,
    pub(crate) units: u64,
    pub(crate) before: u64,
}

impl Entry {
    fn parse(s: &str) -> Option<Entry> {
        let mut it = s.split(':').map(|p| p.parse::<u64>().ok());
        let e = Entry {
            round: it.next()??,
            units: it.next()??,
            before: it.next()??,
        };
        it.next().is_none().then_some(e)
    }

    #[cfg(test)]
    fn render(&self) -> String {
        format!("{}:{}:{}", self.round, self.units, self.before)
    }
}

/// Entries by region.
pub(crate) type Entries = BTreeMap<String, Entry>;

/// Merges two views of a ledger: per region, the larger entry. The
/// specification of `MERGE_LUA`, which a test holds it to.
#[cfg(test)]
pub(crate) fn merge(a: &Entries, b: &Entries) -> Entries {
    let mut out = a.clone();
    for (region, e) in b {
        out.entry(region.clone())
            .and_modify(|mine| *mine = (*mine).max(*e))
            .or_insert(*e);
    }
    out
}

/// Shares (millionths) of `regions` after `round`, from the entries seen:
/// a region's demand is what it was asked for during `round` (0 if its
/// entry is for an earlier round); each gets at least a quarter of an equal
/// split, the rest goes by demand. Never sums to more than a whole.
pub(crate) fn shares(entries: &Entries, regions: &[&str], round: u64) -> Vec<u64> {
    let k = regions.len().max(1) as u64;
    let floor = WHOLE / (4 * k);
    let demand: Vec<u64> = regions
        .iter()
        .map(|r| match entries.get(*r) {
            Some(e) if e.round == round => e.units.saturating_sub(e.before),
            _ => 0,
        })
        .collect();
    let total: u128 = demand.iter().map(|&d| u128::from(d)).sum();
    let rest = WHOLE - floor * k;
    demand
        .iter()
        .map(
            |&d| match (u128::from(rest) * u128::from(d)).checked_div(total) {
                Some(by_demand) => floor + by_demand as u64,
                // Nobody asked: an equal split.
                None => WHOLE / k,
            },
        )
        .collect()
}

/// A subject this instance has seen.
struct Subject {
    ledger: String,
    /// This region's share, millionths.
    share: AtomicU64,
    /// Units asked for here in all.
    total: AtomicU64,
    /// Of `total`, how many a seal has confirmed counted in the region's
    /// counter (what a seal whose answer is lost may not have).
    counted: AtomicU64,
    /// The last round it was asked for.
    active: AtomicU64,
    /// Its mark in the ledger: this instance's name and a number of its
    /// own, so a subject forgotten and taken up again starts afresh.
    mark: String,
}

struct Inner {
    regions: RegionSet,
    local: RedisStore,
    prefix: String,
    subjects: quick_cache::sync::Cache<(u64, Box<str>), Arc<Subject>>,
    /// Scaled quotas by fingerprint, with their scale.
    scaled: quick_cache::sync::Cache<u64, (Quota, u64)>,
    /// Rounds completed by the sync task (for tests and metrics).
    rounds: AtomicU32,
    /// This instance's name in the ledgers' marks: random, so a restarted
    /// instance starts from nothing counted.
    instance: u64,
    /// Subjects taken up so far (numbers their marks).
    taken: AtomicU64,
}

/// A [`Store`] enforcing each quota globally across a [`RegionSet`],
/// deciding on the local region's store (exact or
/// [leased](crate::store::Leasing)) with no cross-region call on the
/// request path. The protocol and its bounds are in the
/// [module docs](self).
///
/// Creating one spawns its sync task on the current Tokio runtime; it ends
/// when the last clone of the store is dropped.
#[derive(Clone)]
pub struct GlobalStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GlobalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalStore")
            .field("regions", &self.inner.regions)
            .finish_non_exhaustive()
    }
}

impl GlobalStore {
    /// Global limits over `regions`, decided on `local` (a store on the
    /// local region's deployment). Keeps up to 65 536 subjects' shares.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn new(regions: RegionSet, local: RedisStore) -> Self {
        let inner = Arc::new(Inner {
            regions,
            local,
            prefix: "cog:rg:".to_owned(),
            subjects: quick_cache::sync::Cache::new(65_536),
            scaled: quick_cache::sync::Cache::new(1_024),
            rounds: AtomicU32::new(0),
            instance: rand::random::<u64>(),
            taken: AtomicU64::new(0),
        });
        tokio::spawn(sync(Arc::downgrade(&inner)));
        GlobalStore { inner }
    }

    /// This region's current share of `quota` for `subject` (0 to 1).
    pub fn share(&self, subject: &str, quota: &Quota) -> f64 {
        self.share_of(subject, quota) as f64 / WHOLE as f64
    }

    /// The share in parts of [`WHOLE`]: an equal split for a subject not
    /// seen yet.
    fn share_of(&self, subject: &str, quota: &Quota) -> u64 {
        let k = self.inner.regions.regions.len() as u64;
        self.inner
            .subjects
            .get(&KeyRef(quota.fingerprint(), subject))
            .map_or(WHOLE / k, |s| s.share.load(Ordering::Relaxed))
            .max(1)
    }

    /// Sync rounds completed by this instance.
    pub fn rounds(&self) -> u32 {
        self.inner.rounds.load(Ordering::Relaxed)
    }

    fn subject(&self, subject: &str, quota: &Quota) -> Arc<Subject> {
        if let Some(s) = self
            .inner
            .subjects
            .get(&KeyRef(quota.fingerprint(), subject))
        {
            return s;
        }
        let k = self.inner.regions.regions.len() as u64;
        let ledger = format!(
            "{}{{{}}}:{}",
            self.inner.prefix,
            encode_segment(subject),
            quota.state_ids().join(",")
        );
        let s = Arc::new(Subject {
            ledger,
            share: AtomicU64::new(WHOLE / k),
            total: AtomicU64::new(0),
            counted: AtomicU64::new(0),
            active: AtomicU64::new(round_now(self.inner.regions.interval)),
            mark: format!(
                "{:016x}.{:x}",
                self.inner.instance,
                self.inner.taken.fetch_add(1, Ordering::Relaxed)
            ),
        });
        self.inner
            .subjects
            .insert((quota.fingerprint(), subject.into()), s.clone());
        s
    }

    fn scaled(&self, quota: &Quota) -> Result<(Quota, u64), StoreError> {
        if let Some(q) = self.inner.scaled.get(&quota.fingerprint()) {
            return Ok(q);
        }
        let q = SCALES
            .iter()
            .find_map(|&m| quota.scaled(m).ok().map(|q| (q, m)))
            .ok_or_else(|| StoreError::Protocol("quota cannot be scaled".into()))?;
        self.inner.scaled.insert(quota.fingerprint(), q.clone());
        Ok(q)
    }

    /// Statuses in the regional units back in the quota's, as this region
    /// sees them (what its share leaves).
    fn unscale(d: &mut Decision, per_unit: u64) {
        for s in d.statuses.iter_mut() {
            *s = LimitStatus {
                remaining: s.remaining / per_unit.max(1),
                ..*s
            };
        }
    }
}

/// What one unit costs in the regional state at `share` (scale `m`):
/// `m / share`, rounded up — never less than the share allows.
fn per_unit(m: u64, share: u64) -> u64 {
    (u128::from(m) * u128::from(WHOLE))
        .div_ceil(u128::from(share.max(1)))
        .min(u128::from(u64::MAX)) as u64
}

/// Whether a quota is enforced globally (no concurrency limit).
fn global(quota: &Quota) -> bool {
    !quota.has_concurrency()
}

impl Store for GlobalStore {
    async fn check(&self, subject: &str, quota: &Quota, cost: u64) -> Result<Decision, StoreError> {
        crate::store::check_cost(cost)?;
        if !global(quota) {
            return self.inner.local.check(subject, quota, cost).await;
        }
        let s = self.subject(subject, quota);
        s.total.fetch_add(cost, Ordering::Relaxed);
        s.active
            .store(round_now(self.inner.regions.interval), Ordering::Relaxed);
        let share = s.share.load(Ordering::Relaxed).max(1);
        let (scaled, m) = self.scaled(quota)?;
        let per = per_unit(m, share);
        let charged = cost
            .checked_mul(per)
            .filter(|c| *c <= crate::MAX_COUNT)
            .ok_or(StoreError::InvalidCost { cost })?;
        let mut d = self.inner.local.check(subject, &scaled, charged).await?;
        Self::unscale(&mut d, per);
        Ok(d)
    }

    async fn inspect(&self, subject: &str, quota: &Quota) -> Result<Decision, StoreError> {
        if !global(quota) {
            return self.inner.local.inspect(subject, quota).await;
        }
        let share = self.share_of(subject, quota);
        let (scaled, m) = self.scaled(quota)?;
        let mut d = self.inner.local.inspect(subject, &scaled).await?;
        Self::unscale(&mut d, per_unit(m, share));
        Ok(d)
    }

    async fn reset(&self, subject: &str, quota: &Quota) -> Result<(), StoreError> {
        if !global(quota) {
            return self.inner.local.reset(subject, quota).await;
        }
        let (scaled, _) = self.scaled(quota)?;
        self.inner.local.reset(subject, &scaled).await
    }

    fn release(&self, lease: Lease) {
        self.inner.local.release(lease)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn round_now(interval: Duration) -> u64 {
    unix_ms() / (interval.as_millis() as u64).max(1)
}

/// The sync task: at each round boundary seal and push this region's
/// entries; half a round later read the local ledgers and set the shares.
async fn sync(inner: Weak<Inner>) {
    let Some(interval) = inner.upgrade().map(|i| i.regions.interval) else {
        return;
    };
    let ms = interval.as_millis() as u64;
    let ledger_ms = (ms * 10).max(10_000).to_string();
    let round_ms = ms.to_string();
    loop {
        // Sleep to the next boundary.
        let now = unix_ms();
        let next = (now / ms + 1) * ms;
        tokio::time::sleep(Duration::from_millis(next - now)).await;
        let round = next / ms;
        let Some(i) = inner.upgrade() else { return };
        let active: Vec<Arc<Subject>> = i
            .subjects
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.active.load(Ordering::Relaxed) + 3 >= round)
            .collect();
        let timeout = interval / 2;
        let local = i.regions.regions[0].clone();
        let region = i.regions.local().to_owned();
        // Each instance tidies the marks once every ten rounds, not all
        // in the same round.
        let prune = round.wrapping_add(i.instance) % 10 == 0;
        for s in &active {
            let total = s.total.load(Ordering::Relaxed);
            let sealed = tokio::time::timeout(
                timeout,
                local.client.eval::<Option<String>, _, _, _>(
                    SEAL_LUA,
                    vec![s.ledger.clone()],
                    vec![
                        region.clone(),
                        s.mark.clone(),
                        total.to_string(),
                        s.counted.load(Ordering::Relaxed).to_string(),
                        (round - 1).to_string(),
                        ledger_ms.clone(),
                        if prune { "1" } else { "0" }.to_owned(),
                        round_ms.clone(),
                    ],
                ),
            )
            .await;
            // Not confirmed: the next round's seal sends the total again,
            // and the mark tells what this one already counted.
            let entry = match sealed {
                Ok(Ok(Some(entry))) => entry,
                Ok(Err(e)) => {
                    local.failed(&e);
                    continue;
                }
                Ok(Ok(None)) | Err(_) => continue,
            };
            s.counted.store(total, Ordering::Relaxed);
            for remote in &i.regions.regions[1..] {
                let (remote, ledger, region, entry, ttl, round_ms) = (
                    remote.clone(),
                    s.ledger.clone(),
                    region.clone(),
                    entry.clone(),
                    ledger_ms.clone(),
                    round_ms.clone(),
                );
                // Each push on its own: a slow or cut link delays nothing.
                tokio::spawn(async move {
                    let merged = tokio::time::timeout(
                        timeout,
                        remote.client.eval::<i64, _, _, _>(
                            MERGE_LUA,
                            vec![ledger],
                            vec![region, entry, ttl, round_ms],
                        ),
                    )
                    .await;
                    if let Ok(Err(e)) = merged {
                        remote.failed(&e);
                    }
                });
            }
        }
        drop(i);
        tokio::time::sleep(interval / 2).await;
        let Some(i) = inner.upgrade() else { return };
        let names = i.regions.names();
        for s in &active {
            let read = tokio::time::timeout(
                timeout,
                local.client.eval::<Vec<String>, _, _, _>(
                    READ_LUA,
                    vec![s.ledger.clone()],
                    Vec::<String>::new(),
                ),
            )
            .await;
            let flat = match read {
                Ok(Ok(flat)) => flat,
                Ok(Err(e)) => {
                    local.failed(&e);
                    continue;
                }
                Err(_) => continue,
            };
            let entries: Entries = flat
                .chunks_exact(2)
                .filter_map(|kv| Some((kv[0].clone(), Entry::parse(&kv[1])?)))
                .collect();
            let w = shares(&entries, &names, round - 1);
            s.share.store(w[0], Ordering::Relaxed);
        }
        i.rounds.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entries() -> impl Strategy<Value = Entries> {
        proptest::collection::btree_map(
            prop_oneof![Just("eu"), Just("us"), Just("ap")].prop_map(str::to_owned),
            (0u64..5, 0u64..50, 0u64..50).prop_map(|(round, units, before)| Entry {
                round,
                units,
                before,
            }),
            0..3,
        )
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(
            a in entries(), b in entries(), c in entries()
        ) {
            prop_assert_eq!(merge(&a, &b), merge(&b, &a));
            prop_assert_eq!(merge(&merge(&a, &b), &c), merge(&a, &merge(&b, &c)));
            prop_assert_eq!(merge(&a, &a), a.clone());
            // And a merge never loses what either side knew.
            let m = merge(&a, &b);
            for (r, e) in a.iter().chain(b.iter()) {
                prop_assert!(m[r] >= *e);
            }
        }

        #[test]
        fn shares_never_sum_past_a_whole(e in entries(), round in 0u64..5) {
            let w = shares(&e, &["eu", "us", "ap"], round);
            prop_assert!(w.iter().sum::<u64>() <= WHOLE);
            prop_assert!(w.iter().all(|&s| s >= WHOLE / 12));
        }
    }

    #[test]
    fn shares_follow_last_rounds_demand() {
        let e: Entries = [
            (
                "eu".to_owned(),
                Entry {
                    round: 7,
                    units: 900,
                    before: 300,
                },
            ),
            (
                "us".to_owned(),
                Entry {
                    round: 7,
                    units: 250,
                    before: 50,
                },
            ),
            // An older round: idle or cut off.
            (
                "ap".to_owned(),
                Entry {
                    round: 6,
                    units: 500,
                    before: 0,
                },
            ),
        ]
        .into();
        let w = shares(&e, &["eu", "us", "ap"], 7);
        let floor = WHOLE / 12;
        let rest = WHOLE - 3 * floor;
        assert_eq!(
            w,
            vec![floor + rest * 600 / 800, floor + rest * 200 / 800, floor]
        );
        // Nobody asked: an equal split.
        assert_eq!(shares(&e, &["eu", "us", "ap"], 9), vec![WHOLE / 3; 3]);
    }

    /// A real Redis, a runtime and a client of it.
    fn redis() -> (
        cog_testkit::RedisServer,
        tokio::runtime::Runtime,
        fred::clients::Client,
    ) {
        let server = cog_testkit::RedisServer::start().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(crate::store::connect(&server.url())).unwrap();
        (server, rt, client)
    }

    /// The Lua merge, run by a real Redis on random pushes, ends where the
    /// Rust merge does, in any order.
    #[test]
    fn redis_merges_as_the_specification_does() {
        let (_server, rt, client) = redis();
        let n = std::sync::atomic::AtomicU64::new(0);
        proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64))
            .run(&proptest::collection::vec(entries(), 1..5), |views| {
                let ledger = format!("l{}", n.fetch_add(1, Ordering::Relaxed));
                let mut expected = Entries::new();
                for v in &views {
                    expected = merge(&expected, v);
                    for (region, e) in v {
                        let _: i64 = rt
                            .block_on(client.eval(
                                MERGE_LUA,
                                vec![ledger.clone()],
                                vec![region.clone(), e.render(), "60000".into(), "1000".into()],
                            ))
                            .unwrap();
                    }
                }
                let flat: Vec<String> = rt
                    .block_on(client.eval(READ_LUA, vec![ledger], Vec::<String>::new()))
                    .unwrap();
                let got: Entries = flat
                    .chunks_exact(2)
                    .map(|kv| (kv[0].clone(), Entry::parse(&kv[1]).unwrap()))
                    .collect();
                prop_assert_eq!(got, expected);
                Ok(())
            })
            .unwrap();
    }

    /// The seal script on a real Redis: what a seal adds to the region's
    /// counter, sent again or not, by one instance or two, over garbage;
    /// which marks it drops; and that an error deletes nothing.
    #[test]
    fn the_seal_counts_each_unit_once() {
        let (_server, rt, client) = redis();
        let seal = |instance: &str, total: u64, counted: u64, round: u64, prune: bool| {
            rt.block_on(client.eval::<String, _, _, _>(
                SEAL_LUA,
                vec!["l"],
                vec![
                    "eu".to_owned(),
                    instance.to_owned(),
                    total.to_string(),
                    counted.to_string(),
                    round.to_string(),
                    "60000".to_owned(),
                    if prune { "1" } else { "0" }.to_owned(),
                    "1000".to_owned(),
                ],
            ))
        };
        let raw = |args: &[&str]| {
            use fred::interfaces::ClientLike;
            let cmd = fred::types::CustomCommand {
                cmd: args[0].to_owned().into(),
                ..fred::types::CustomCommand::new_static("CMD", None, false)
            };
            let args: Vec<String> = args[1..].iter().map(|a| (*a).to_owned()).collect();
            rt.block_on(client.custom::<fred::types::Value, _>(cmd, args))
                .unwrap()
        };
        let counter = || raw(&["HGET", "l", "c:eu"]).convert::<u64>().unwrap();

        assert_eq!(seal("a", 10, 0, 100, false).unwrap(), "100:10:0");
        // The answer was lost: sent again, with more asked since.
        assert_eq!(seal("a", 10, 0, 100, false).unwrap(), "100:10:0");
        assert_eq!(counter(), 10);
        assert_eq!(seal("a", 15, 0, 101, false).unwrap(), "101:15:10");
        // Another instance counts on its own.
        seal("b", 5, 0, 101, false).unwrap();
        assert_eq!(counter(), 20);
        // What the instance knows counted is never counted again, even
        // without its mark (gone after ten quiet rounds).
        raw(&["HDEL", "l", "i:a"]);
        seal("a", 18, 15, 102, false).unwrap();
        assert_eq!(counter(), 23);
        // Garbage: a mark read as nothing counted, a counter from zero.
        raw(&["HSET", "l", "i:c", "x:y"]);
        seal("c", 4, 0, 102, false).unwrap();
        assert_eq!(counter(), 27);
        raw(&["HSET", "l", "c:eu", "-3"]);
        seal("c", 6, 4, 102, false).unwrap();
        assert_eq!(counter(), 2);

        // Marks of instances quiet for more than ten rounds go; others,
        // and everything that is not a mark, stay.
        raw(&["HSET", "l", "i:old", "1:91", "i:edge", "1:92", "i:bad", "1"]);
        seal("a", 18, 18, 102, false).unwrap();
        assert!(raw(&["HEXISTS", "l", "i:old"]).convert::<bool>().unwrap());
        seal("a", 18, 18, 102, true).unwrap();
        let fields: Vec<String> = raw(&["HKEYS", "l"]).convert().unwrap();
        for gone in ["i:old", "i:bad"] {
            assert!(!fields.iter().any(|f| f == gone), "{gone}: {fields:?}");
        }
        for kept in ["i:edge", "i:a", "i:b", "i:c", "c:eu", "eu"] {
            assert!(fields.iter().any(|f| f == kept), "{kept}: {fields:?}");
        }

        // Out of memory: the seal fails and changes nothing.
        raw(&["CONFIG", "SET", "maxmemory", "1"]);
        assert!(seal("a", 50, 18, 103, false).is_err());
        raw(&["CONFIG", "SET", "maxmemory", "0"]);
        assert_eq!(counter(), 2);
        assert_eq!(seal("a", 50, 18, 103, false).unwrap(), "103:34:23");

        // Not a hash: replaced.
        raw(&["SET", "l", "garbage"]);
        assert_eq!(seal("a", 60, 50, 104, false).unwrap(), "104:10:0");

        // Rounds of 1 s, on this server's clock: an entry more than ten
        // rounds ahead of it is replaced; a round that far ahead is not
        // sealed (its units are counted all the same).
        let now = unix_ms() / 1000;
        let far = format!("{}:0:0", now + 12);
        raw(&["HSET", "l", "eu", &far]);
        assert_eq!(
            seal("a", 61, 60, now, false).unwrap(),
            format!("{now}:11:11")
        );
        assert_eq!(
            seal("a", 62, 61, now + 12, false).unwrap(),
            format!("{now}:11:11")
        );
        assert_eq!(counter(), 12);
        // Within ten rounds it stands: a clock a little ahead is no
        // garbage.
        let near = format!("{}:12:11", now + 9);
        raw(&["HSET", "l", "eu", &near]);
        assert_eq!(seal("a", 62, 62, now + 1, false).unwrap(), near);
    }

    /// The merge on a server's clock: an entry pushed late changes nothing
    /// (the larger one stays), one far ahead of the clock is refused, and
    /// one found far ahead is replaced.
    #[test]
    fn the_merge_keeps_the_clock_it_runs_on() {
        let (_server, rt, client) = redis();
        let now = unix_ms() / 1000;
        let merge = |entry: String| {
            rt.block_on(client.eval::<i64, _, _, _>(
                MERGE_LUA,
                vec!["l"],
                vec!["eu".to_owned(), entry, "60000".into(), "1000".into()],
            ))
            .unwrap()
        };
        let stored = || {
            rt.block_on(client.eval::<Vec<String>, _, _, _>(
                READ_LUA,
                vec!["l"],
                Vec::<String>::new(),
            ))
            .unwrap()[1]
                .clone()
        };
        assert_eq!(merge(format!("{now}:5:1")), 1);
        // Pushed late, twenty rounds behind: the newer entry stays.
        assert_eq!(merge(format!("{}:3:1", now - 20)), 0);
        assert_eq!(stored(), format!("{now}:5:1"));
        // Far ahead of this server's clock: refused.
        assert_eq!(merge(format!("{}:9:1", now + 12)), 0);
        assert_eq!(stored(), format!("{now}:5:1"));
        // A little ahead: merged as any larger entry.
        assert_eq!(merge(format!("{}:6:5", now + 9)), 1);
        // Found far ahead (garbage): replaced by the next push.
        {
            use fred::interfaces::ClientLike;
            let cmd = fred::types::CustomCommand::new_static("HSET", None, false);
            let garbage = format!("{}:0:0", now + 1_000_000);
            let args = vec!["l".to_owned(), "eu".to_owned(), garbage];
            rt.block_on(client.custom::<fred::types::Value, _>(cmd, args))
                .unwrap();
        }
        assert_eq!(merge(format!("{now}:7:5")), 1);
        assert_eq!(stored(), format!("{now}:7:5"));
    }

    /// A subject forgotten (evicted from the bounded map) and asked for
    /// again is counted from its first unit: it seals under a mark of its
    /// own, not the forgotten one's, whose total is higher.
    #[tokio::test]
    async fn a_subject_taken_up_again_is_counted_afresh() {
        let server = cog_testkit::RedisServer::start().unwrap();
        let client = crate::store::connect(&server.url()).await.unwrap();
        let round = Duration::from_millis(50);
        let store = GlobalStore::new(
            RegionSet::new("eu", client.clone()).sync_interval(round),
            RedisStore::new(client.clone()).local_deny(false),
        );
        let quota = Quota::single(crate::Limit::per_second(1_000_000)).unwrap();
        store.check("acme", &quota, 10).await.unwrap();
        let key = KeyRef(quota.fingerprint(), "acme");
        let ledger = store.inner.subjects.get(&key).unwrap().ledger.clone();
        let counter = || async {
            let c: Option<u64> = client
                .eval(
                    "return redis.call('HGET', KEYS[1], 'c:eu')",
                    vec![ledger.clone()],
                    Vec::<String>::new(),
                )
                .await
                .unwrap();
            c.unwrap_or(0)
        };
        tokio::time::sleep(round * 3).await;
        assert_eq!(counter().await, 10);
        store.inner.subjects.remove(&key);
        store.check("acme", &quota, 5).await.unwrap();
        tokio::time::sleep(round * 3).await;
        assert_eq!(counter().await, 15);
    }

    #[test]
    fn entries_parse_and_render() {
        let e = Entry {
            round: 1,
            units: 2,
            before: 3,
        };
        assert_eq!(Entry::parse(&e.render()), Some(e));
        for bad in ["", "1:2", "1:2:3:4", "a:b:c", "-1:2:3"] {
            assert_eq!(Entry::parse(bad), None, "{bad}");
        }
    }
}
