//! The Redis store: exact limits shared by every instance.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cog_core::telemetry::{Child, redis_peer};
use fred::clients::Client;
use fred::interfaces::{KeysInterface, LuaInterface};
use fred::prelude::{ClientLike, Error as FredError};
use fred::types::config::Options;
use fred::types::{FromValue, Key, Value};

use super::lease::{KeyRef, Leases, Leasing};
use super::memory::MemoryStore;
use super::{Lease, LeaseKind, Store, StoreError, check_cost};
use crate::algo::Gcra;
use crate::decision::{Decision, DecisionSource, LimitStatus, Statuses};
use crate::quota::{Params, Quota};
use cog_core::breaker::Breaker;
use cog_core::keys::encode_segment;

/// The decision scripts, each after what they share (`redis_state.lua`:
/// what counts as garbage under their keys).
const DECIDE_LUA: &str = concat!(include_str!("redis_state.lua"), include_str!("redis.lua"));
const GCRA_LUA: &str = concat!(
    include_str!("redis_state.lua"),
    include_str!("redis_gcra.lua")
);
const LEASE_LUA: &str = concat!(
    include_str!("redis_state.lua"),
    include_str!("redis_lease.lua")
);
const RELEASE_LUA: &str =
    "for _, k in ipairs(KEYS) do redis.call('ZREM', k, ARGV[1]) end return #KEYS";

/// What the Redis store does when Redis is slow (a call exceeds the
/// timeout) or unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Admit every request (availability over enforcement).
    FailOpen,
    /// Refuse every request: checks return [`StoreError::Unavailable`],
    /// which the layer answers with `503 Service Unavailable`.
    FailClosed,
    /// Enforce each quota locally, divided by the number of instances that
    /// share it, so the fleet as a whole stays near the global limit.
    Local {
        /// How many instances share the quota (at least 1).
        instances: u64,
    },
}

/// Rate-limit state in Redis (or Redis Cluster), shared by every instance.
///
/// Each decision is one `EVALSHA` of a Lua script that reads the clock with
/// Redis `TIME` (instances' clocks never matter), checks every limit of the
/// quota, and counts the request only if all admit it. State is kept in
/// microseconds. A subject's keys share one hash tag, so the store works
/// unchanged on Redis Cluster; subjects are escaped (or hashed when long)
/// before they become part of a key.
///
/// Key layout: `{prefix}{<escaped subject>}:<limit id>`, default prefix
/// `cog:rl:`.
///
/// # Redis slow, gone, and back
///
/// Every call is bounded by [`timeout`](Self::timeout) (default 50 ms). A
/// failed or timed-out call opens a breaker for
/// [`retry_interval`](Self::retry_interval) (default 1 s) during which
/// decisions follow the [`FailurePolicy`] without touching Redis; then one
/// request probes Redis, and a success closes the breaker — recovery needs
/// no restart.
///
/// A subject that Redis has denied is remembered locally until its retry
/// time: further requests with the same or a larger cost are denied
/// without a round trip ([`DecisionSource::LocalDeny`]). For rate limits
/// this loses nothing: other instances can only use more of the limit,
/// never less — with one exception, a [`reset`](Store::reset) made through
/// another instance, which this one notices only at the retry time (a
/// reset through this store clears its memory at once). Quotas with a
/// concurrency limit are never remembered: a slot can free up at any
/// moment. At most
/// [`local_deny_capacity`](Self::local_deny_capacity) denials are kept.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    prefix: String,
    timeout: Duration,
    retry_interval: Duration,
    policy: FailurePolicy,
    local_deny: bool,
    deny_capacity: usize,
    fallback: MemoryStore,
    denied: DenyCache,
    clock: quanta::Clock,
    start: u64,
    breaker: Breaker,
    decide_sha: String,
    gcra_sha: String,
    lease_sha: String,
    release_sha: String,
    /// The leased mode's leases, when it is on.
    leases: Option<Leases>,
    /// `cog.ratelimit.redis.duration{outcome}`, seconds.
    duration: opentelemetry::metrics::Histogram<f64>,
    /// Reconnects after a failover left the client on a replica.
    demotion: cog_core::redis::Demotion,
}

/// Concurrency slots held in Redis.
#[derive(Debug, Clone)]
pub(crate) struct RedisLease {
    keys: Vec<String>,
    member: String,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("RedisStore")
            .field("prefix", &i.prefix)
            .field("timeout", &i.timeout)
            .field("retry_interval", &i.retry_interval)
            .field("policy", &i.policy)
            .field("local_deny", &i.local_deny)
            .field("breaker_open", &self.breaker_open())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on an initialized `fred` client (standalone, Cluster or
    /// Sentinel), with the defaults described on the type and the
    /// [`FailurePolicy::FailOpen`] policy.
    ///
    /// Takes fred's `Client`: fred's major version is part of this crate's
    /// API under the `redis` feature (why: `docs/architecture.md`, "The
    /// Redis client is part of the API").
    pub fn new(client: Client) -> Self {
        Self::build(client, Settings::default())
    }

    fn build(client: Client, s: Settings) -> Self {
        let clock = quanta::Clock::new();
        let start = clock.raw();
        RedisStore {
            inner: Arc::new(Inner {
                client,
                prefix: s.prefix,
                timeout: s.timeout,
                retry_interval: s.retry_interval,
                policy: s.policy,
                local_deny: s.local_deny,
                deny_capacity: s.deny_capacity,
                fallback: MemoryStore::new(),
                denied: DenyCache::new(s.deny_capacity),
                clock,
                start,
                // A probe that has not answered in twice the timeout was
                // abandoned by its caller: let another through.
                breaker: Breaker::new(s.retry_interval, 2 * s.timeout),
                duration: opentelemetry::global::meter("cog-ratelimit")
                    .f64_histogram("cog.ratelimit.redis.duration")
                    .with_description("Redis round trips of rate-limit decisions, by outcome")
                    .with_unit("s")
                    .build(),
                decide_sha: fred::util::sha1_hash(DECIDE_LUA),
                gcra_sha: fred::util::sha1_hash(GCRA_LUA),
                lease_sha: fred::util::sha1_hash(LEASE_LUA),
                leases: s.leasing.map(Leases::new),
                release_sha: fred::util::sha1_hash(RELEASE_LUA),
                demotion: Default::default(),
            }),
        }
    }

    fn settings(&self) -> Settings {
        let i = &self.inner;
        Settings {
            prefix: i.prefix.clone(),
            timeout: i.timeout,
            retry_interval: i.retry_interval,
            policy: i.policy,
            local_deny: i.local_deny,
            deny_capacity: i.deny_capacity,
            leasing: i.leases.as_ref().map(|l| l.config),
        }
    }

    fn with(self, f: impl FnOnce(&mut Settings)) -> Self {
        let mut s = self.settings();
        f(&mut s);
        Self::build(self.inner.client.clone(), s)
    }

    /// Sets the key prefix (default `cog:rl:`). Limiters that must not
    /// share state need different prefixes.
    pub fn prefix(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.with(|s| s.prefix = prefix)
    }

    /// Bounds every Redis call (default 50 ms).
    pub fn timeout(self, timeout: Duration) -> Self {
        self.with(|s| s.timeout = timeout)
    }

    /// How long to stay on the failure policy after a failed call before
    /// probing Redis again (default 1 s).
    pub fn retry_interval(self, interval: Duration) -> Self {
        self.with(|s| s.retry_interval = interval)
    }

    /// What to do while Redis is slow or unreachable (default
    /// [`FailurePolicy::FailOpen`]).
    pub fn on_failure(self, policy: FailurePolicy) -> Self {
        self.with(|s| s.policy = policy)
    }

    /// Whether to remember denials locally until their retry time (default
    /// on).
    pub fn local_deny(self, enabled: bool) -> Self {
        self.with(|s| s.local_deny = enabled)
    }

    /// Most denials remembered locally (default 65 536): past it the least
    /// useful are forgotten (and asked of Redis again), so memory stays
    /// flat however many subjects are denied.
    pub fn local_deny_capacity(self, entries: usize) -> Self {
        self.with(|s| s.deny_capacity = entries)
    }

    /// Turns on the leased mode (default off): quotas of one GCRA limit
    /// are spent from leases of their budget, most decisions without a
    /// round trip, within the over-admission bound stated on [`Leasing`].
    /// Failure policies apply when a lease runs out and Redis cannot be
    /// reached; a live lease is spent whatever Redis's state (its units are
    /// counted there already).
    pub fn leased(self, leasing: Leasing) -> Self {
        self.with(|s| s.leasing = Some(leasing))
    }

    /// The leased mode's settings, when it is on.
    pub fn leasing(&self) -> Option<Leasing> {
        self.inner.leases.as_ref().map(|l| l.config)
    }

    /// The `fred` client this store uses.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Whether the breaker is open: Redis failed recently and decisions
    /// follow the failure policy.
    pub fn breaker_open(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// The Redis keys holding `subject`'s state for `quota`, one per limit.
    pub fn keys(&self, subject: &str, quota: &Quota) -> Vec<String> {
        let tag = encode_segment(subject);
        quota
            .state_ids()
            .iter()
            .map(|id| self.key(&tag, id))
            .collect()
    }

    /// Every Redis key of `subject`'s state for `quota`: its
    /// [`keys`](Self::keys) and, in leased mode, their ledgers of units
    /// leased out — what a reset deletes and a partition move copies.
    pub(crate) fn all_keys(&self, subject: &str, quota: &Quota) -> Vec<String> {
        let mut keys = self.keys(subject, quota);
        if self.inner.leases.is_some() {
            let ledgers: Vec<String> = keys.iter().map(|k| ledger_key(k)).collect();
            keys.extend(ledgers);
        }
        keys
    }

    /// `{prefix}{<tag>}:<id>`, allocated once.
    fn key(&self, tag: &str, id: &str) -> String {
        let prefix = &self.inner.prefix;
        let mut key = String::with_capacity(prefix.len() + tag.len() + id.len() + 3);
        key.push_str(prefix);
        key.push('{');
        key.push_str(tag);
        key.push_str("}:");
        key.push_str(id);
        key
    }

    fn now(&self) -> u64 {
        let i = &self.inner;
        i.clock.delta_as_nanos(i.start, i.clock.raw()) + 1
    }

    fn record_success(&self) {
        if self.inner.breaker.success() {
            tracing::info!(target: "cog_ratelimit", "redis reachable again, rate-limit breaker closed");
        }
    }

    fn record_failure(&self, err: &StoreError) {
        if self.inner.breaker.failure() {
            tracing::warn!(target: "cog_ratelimit", error = err as &dyn std::error::Error, policy = ?self.inner.policy,
                "redis unavailable, rate-limit breaker open");
        }
    }

    fn on_failure_decision(
        &self,
        subject: &str,
        quota: &Quota,
        cost: u64,
        err: StoreError,
    ) -> Result<Decision, StoreError> {
        match self.inner.policy {
            FailurePolicy::FailOpen => Ok(Decision::fail_open()),
            FailurePolicy::FailClosed => Err(StoreError::unavailable(err)),
            FailurePolicy::Local { instances } => {
                let local = quota.divided(instances);
                let mut d = self.inner.fallback.check_now(subject, &local, cost)?;
                d.source = DecisionSource::Fallback;
                d.applied = Some(local);
                Ok(d)
            }
        }
    }

    fn args(quota: &Quota, cost: u64, commit: bool, member: &str) -> Vec<Value> {
        let limits = &quota.redis_args().generic;
        let mut args = Vec::with_capacity(3 + limits.len());
        args.push(cost_arg(cost));
        args.push(Value::from_static_str(if commit { "1" } else { "0" }));
        args.push(Value::from(member));
        args.extend(limits.iter().cloned());
        args
    }

    /// Runs a script by hash, loading it on `NOSCRIPT`, within the timeout.
    /// `call` builds the keys and arguments (twice on `NOSCRIPT`: fred
    /// takes them by value, and building beats cloning every time).
    async fn eval<R: FromValue>(
        &self,
        sha: &str,
        lua: &str,
        call: impl Fn() -> (Vec<Key>, Vec<Value>),
    ) -> Result<R, StoreError> {
        let i = &self.inner;
        // No client-side timeout here: the one below bounds both calls.
        let opts = Options {
            fail_fast: true,
            max_attempts: Some(1),
            ..Default::default()
        };
        let client = i.client.with_options(&opts);
        let call = async {
            let (keys, args) = call();
            match client.evalsha::<R, _, _, _>(sha, keys, args).await {
                Err(e) if e.details().starts_with("NOSCRIPT") => {
                    let (keys, args) = call();
                    client.eval::<R, _, _, _>(lua, keys, args).await
                }
                other => other,
            }
        };
        let span = Child::redis("cog-ratelimit", "EVALSHA", || redis_peer(&i.client));
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(i.timeout, span.wrap(call)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                i.demotion.after_error(&i.client, e.details());
                Err(fred_error(e, i.timeout))
            }
            Err(_) => Err(StoreError::Timeout(i.timeout)),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(StoreError::Timeout(_)) => "timeout",
            Err(_) => "error",
        };
        if let Err(e) = &result {
            span.fail(outcome, || e.to_string());
        }
        i.duration.record(
            started.elapsed().as_secs_f64(),
            &[opentelemetry::KeyValue::new("outcome", outcome)],
        );
        result
    }

    async fn decide(
        &self,
        subject: &str,
        quota: &Quota,
        cost: u64,
        commit: bool,
    ) -> Result<Decision, StoreError> {
        let i = &self.inner;
        if commit && let Some((gcra, t, tau)) = &quota.redis_args().gcra {
            // The common quota, one GCRA limit: the lean script.
            let key = Key::from(self.key(&encode_segment(subject), &quota.state_ids()[0]));
            let reply: i64 = self
                .eval(&i.gcra_sha, GCRA_LUA, || {
                    let args = vec![cost_arg(cost), t.clone(), tau.clone()];
                    (vec![key.clone()], args)
                })
                .await?;
            return Ok(gcra_decision(gcra, reply, cost));
        }
        let has_concurrency = commit && cost > 0 && quota.has_concurrency();
        let member = if has_concurrency {
            format!("{:016x}", rand::random::<u64>())
        } else {
            String::new()
        };
        let keys = self.keys(subject, quota);
        let reply: Vec<i64> = self
            .eval(&i.decide_sha, DECIDE_LUA, || {
                let keys = keys.iter().map(|k| Key::from(k.as_str())).collect();
                (keys, Self::args(quota, cost, commit, &member))
            })
            .await?;
        let mut d = parse_decision(&reply, quota.params().len())?;
        if d.allowed && has_concurrency {
            let keys = keys
                .into_iter()
                .zip(quota.params())
                .filter(|(_, p)| matches!(p, Params::Concurrency { .. }))
                .map(|(k, _)| k)
                .collect();
            // The script stores the member with its cost: `<id>:<cost>`.
            let member = format!("{member}:{cost}");
            d.lease = Some(Lease {
                kind: LeaseKind::Redis(Box::new(RedisLease { keys, member })),
            });
        }
        Ok(d)
    }
}

/// The lease script's reply: `(code, ns, granted)`, all in range.
fn parse_lease(r: &[i64]) -> Result<(i64, u64, u64), StoreError> {
    match *r {
        [code @ 0..=2, ns, granted] if ns >= 0 && granted >= 0 => {
            Ok((code, ns as u64, granted as u64))
        }
        _ => Err(StoreError::Protocol(format!("lease reply {r:?}"))),
    }
}

/// Ends a lease renewal with nothing granted unless it is forgotten: on an
/// error, and when the caller drops the call half-way.
struct RenewGuard<'a> {
    slot: &'a parking_lot::Mutex<super::lease::Slot>,
    lease_ns: u64,
    store: &'a RedisStore,
}

impl Drop for RenewGuard<'_> {
    fn drop(&mut self) {
        Leases::finish(self.slot, None, self.lease_ns, self.store.now());
    }
}

/// Where the leased mode keeps its ledger for a limit's state key.
fn ledger_key(key: &str) -> String {
    format!("{key}:lease")
}

impl RedisStore {
    /// One call of the lease script: decides the request exactly and, when
    /// this caller renews the subject's lease, gives the old one back and
    /// takes a new one (see `redis_lease.lua`).
    async fn decide_leased(
        &self,
        leases: &Leases,
        (gcra, t, tau): &(Gcra, Value, Value),
        subject: &str,
        quota: &Quota,
        cost: u64,
    ) -> Result<Decision, StoreError> {
        let i = &self.inner;
        let fp = quota.fingerprint();
        let (slot, renewal) = leases.begin(fp, subject, cost, self.now());
        let lease_ns = leases.config.time().as_nanos().min(u128::from(u64::MAX)) as u64;
        // A caller that drops this future mid-call must not leave the
        // renewal in flight forever.
        let mut guard = renewal.is_some().then(|| RenewGuard {
            slot: &slot,
            lease_ns,
            store: self,
        });
        let (want, back_size, back_unused) = renewal
            .as_ref()
            .map_or((0, 0, 0), |r| (r.want, r.back_size, r.back_unused));
        let key = self.key(&encode_segment(subject), &quota.state_ids()[0]);
        let ledger = ledger_key(&key);
        // The ledger outlives leases (4 lease times, at least 1 s): one that
        // expires early only lets fewer refused requests through.
        let ledger_ms = (lease_ns / 1_000_000).saturating_mul(4).max(1_000);
        let int = |v: u64| Value::Integer(v.min(i64::MAX as u64) as i64);
        let reply: Result<Vec<i64>, StoreError> = self
            .eval(&i.lease_sha, LEASE_LUA, || {
                let keys = vec![Key::from(key.as_str()), Key::from(ledger.as_str())];
                let args = vec![
                    cost_arg(cost),
                    t.clone(),
                    tau.clone(),
                    int(want),
                    int(back_size),
                    int(back_unused),
                    int(ledger_ms),
                ];
                (keys, args)
            })
            .await;
        let parsed = reply.and_then(|r| parse_lease(&r));
        let (code, ns, granted) = match parsed {
            Ok(p) => p,
            // The guard ends the renewal with nothing granted.
            Err(e) => return Err(e),
        };
        if let Some(g) = guard.take() {
            std::mem::forget(g);
        }
        let d = match code {
            1 => {
                let mut status = gcra.admitted(ns);
                if renewal.is_some() {
                    Leases::finish(
                        &slot,
                        Some((granted, ns, status.remaining)),
                        lease_ns,
                        self.now(),
                    );
                }
                status.remaining = status.remaining.saturating_add(granted);
                gcra_decision_of(true, status, None)
            }
            2 => gcra_decision_of(
                true,
                LimitStatus {
                    remaining: 0,
                    reset_after: Duration::from_nanos(ns),
                    allowed: true,
                },
                None,
            ),
            _ => {
                let (status, retry) = gcra.refused(ns, cost);
                gcra_decision_of(false, status, retry)
            }
        };
        if code != 1 && renewal.is_some() {
            // The old lease went back; nothing new was granted.
            Leases::finish(&slot, Some((0, 0, 0)), lease_ns, self.now());
        }
        if d.allowed {
            Leases::count(&slot, cost);
        }
        Ok(d)
    }
}

/// A quota's limits as the decision scripts take them, formatted once per
/// quota and shared by every call.
pub(crate) struct LimitArgs {
    /// Four per limit, for the generic script (`redis.lua`).
    generic: Box<[Value]>,
    /// For a quota of one GCRA limit: its parameters, and T and tau for
    /// the single-limit script (`redis_gcra.lua`).
    gcra: Option<(Gcra, Value, Value)>,
}

impl LimitArgs {
    pub(crate) fn of(params: &[Params]) -> Self {
        let mut generic = Vec::with_capacity(4 * params.len());
        for p in params {
            let (kind, a, b) = match p {
                Params::Gcra(g) => ("g", micros(g.t), micros(g.tau)),
                Params::Sliding(s) => ("s", micros(s.w), s.max.to_string()),
                Params::Concurrency { max, lease } => {
                    ("c", max.to_string(), lease.as_micros().to_string())
                }
            };
            generic.extend([
                Value::from_static_str(kind),
                Value::from(a),
                Value::from(b),
                Value::from_static_str(""),
            ]);
        }
        let gcra = match params {
            [Params::Gcra(g)] => Some((*g, generic[1].clone(), generic[2].clone())),
            _ => None,
        };
        LimitArgs {
            generic: generic.into(),
            gcra,
        }
    }
}

/// A cost as a script argument: the usual ones as static strings (the
/// client formats nothing for them).
fn cost_arg(cost: u64) -> Value {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(cost as usize) {
        Some(s) => Value::from_static_str(s),
        None => Value::Integer(cost as i64),
    }
}

/// The decision the single-limit script's reply stands for (see
/// `redis_gcra.lua`).
fn gcra_decision(gcra: &Gcra, reply: i64, cost: u64) -> Decision {
    if reply >= 0 {
        gcra_decision_of(true, gcra.admitted(reply as u64), None)
    } else {
        // -1 - used, so `used` is at most i64::MAX: no overflow.
        let (status, retry) = gcra.refused((-1 - reply) as u64, cost);
        gcra_decision_of(false, status, retry)
    }
}

fn gcra_decision_of(allowed: bool, status: LimitStatus, retry: Option<u64>) -> Decision {
    Decision {
        allowed,
        retry_after: retry.map(Duration::from_nanos),
        statuses: smallvec::smallvec![status],
        source: DecisionSource::Store,
        lease: None,
        applied: None,
    }
}

fn micros(ns: u64) -> String {
    // Microseconds with the nanosecond remainder, so no precision is lost.
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

fn fred_error(e: FredError, timeout: Duration) -> StoreError {
    if !cog_core::redis::is_outage(&e) {
        // Redis answered, but not with a decision (a script error, a reply
        // we cannot read): a bug to surface, not an outage to paper over.
        return StoreError::Protocol(e.to_string());
    }
    // The server or the path to it is down, busy or moving — or Redis
    // answered "cannot serve now" (out of memory, a replica, loading …),
    // whatever kind fred gave it: the failure policy applies.
    if e.kind() == &fred::error::ErrorKind::Timeout
        && !cog_core::redis::is_unavailable_reply(e.details())
    {
        StoreError::Timeout(timeout)
    } else {
        StoreError::unavailable(e)
    }
}

fn parse_decision(reply: &[i64], limits: usize) -> Result<Decision, StoreError> {
    if reply.len() != 2 + 3 * limits {
        return Err(StoreError::Protocol(format!(
            "decision reply of {} integers for {limits} limits",
            reply.len()
        )));
    }
    let allowed = reply[0] == 1;
    let retry = reply[1];
    let statuses: Statuses = reply[2..]
        .chunks_exact(3)
        .map(|c| LimitStatus {
            allowed: c[0] == 1,
            remaining: c[1].max(0) as u64,
            reset_after: Duration::from_micros(c[2].max(0) as u64),
        })
        .collect();
    Ok(Decision {
        allowed,
        retry_after: (!allowed && retry >= 0).then(|| Duration::from_micros(retry as u64)),
        statuses,
        source: DecisionSource::Store,
        lease: None,
        applied: None,
    })
}

#[derive(Clone)]
struct Settings {
    prefix: String,
    timeout: Duration,
    retry_interval: Duration,
    policy: FailurePolicy,
    local_deny: bool,
    deny_capacity: usize,
    leasing: Option<Leasing>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            prefix: "cog:rl:".to_owned(),
            timeout: Duration::from_millis(50),
            retry_interval: Duration::from_secs(1),
            policy: FailurePolicy::FailOpen,
            local_deny: true,
            deny_capacity: 65_536,
            leasing: None,
        }
    }
}

/// Denials remembered until their retry time, per (quota, subject): at
/// most `capacity` of them (least recently useful first out), O(1) work
/// per call, no lock shared by all subjects.
struct DenyCache {
    map: quick_cache::sync::Cache<(u64, Box<str>), Denied>,
}

#[derive(Clone)]
struct Denied {
    until: u64,
    at: u64,
    cost: u64,
    statuses: Statuses,
}

impl DenyCache {
    fn new(capacity: usize) -> Self {
        DenyCache {
            map: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    fn get(&self, fp: u64, subject: &str, cost: u64, now: u64) -> Option<Decision> {
        if self.map.is_empty() {
            return None;
        }
        let d = self.map.get(&KeyRef(fp, subject))?;
        if now >= d.until || cost < d.cost {
            return None;
        }
        // `now` may predate a denial another task just recorded.
        let elapsed = Duration::from_nanos(now.saturating_sub(d.at));
        Some(Decision {
            allowed: false,
            retry_after: Some(Duration::from_nanos(d.until - now)),
            statuses: d
                .statuses
                .iter()
                .map(|s| LimitStatus {
                    reset_after: s.reset_after.saturating_sub(elapsed),
                    ..*s
                })
                .collect(),
            source: DecisionSource::LocalDeny,
            lease: None,
            applied: None,
        })
    }

    fn put(&self, fp: u64, subject: &str, d: Denied) {
        self.map.insert((fp, subject.into()), d);
    }

    fn remove(&self, fp: u64, subject: &str) {
        self.map.remove(&KeyRef(fp, subject));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

impl Store for RedisStore {
    /// A live lease's units, or a cached denial: decided without I/O.
    fn try_check_now(
        &self,
        subject: &str,
        quota: &Quota,
        cost: u64,
    ) -> Option<Result<Decision, StoreError>> {
        if let Err(e) = check_cost(cost) {
            return Some(Err(e));
        }
        let fp = quota.fingerprint();
        if let Some(leases) = &self.inner.leases
            && quota.redis_args().gcra.is_some()
            && let Some(d) = leases.spend(fp, subject, cost, self.now())
        {
            return Some(Ok(d));
        }
        if self.inner.local_deny
            && let Some(d) = self.inner.denied.get(fp, subject, cost, self.now())
        {
            return Some(Ok(d));
        }
        None
    }

    async fn check(&self, subject: &str, quota: &Quota, cost: u64) -> Result<Decision, StoreError> {
        check_cost(cost)?;
        let fp = quota.fingerprint();
        let leased = self
            .inner
            .leases
            .as_ref()
            .zip(quota.redis_args().gcra.as_ref());
        if let Some((leases, _)) = leased
            && let Some(d) = leases.spend(fp, subject, cost, self.now())
        {
            return Ok(d);
        }
        if self.inner.local_deny
            && let Some(d) = self.inner.denied.get(fp, subject, cost, self.now())
        {
            return Ok(d);
        }
        if !self.inner.breaker.allow().may_call() {
            let err = StoreError::unavailable("breaker open after a recent failure");
            return self.on_failure_decision(subject, quota, cost, err);
        }
        let decided = match leased {
            Some((leases, gcra)) => self.decide_leased(leases, gcra, subject, quota, cost).await,
            None => self.decide(subject, quota, cost, true).await,
        };
        match decided {
            Ok(d) => {
                self.record_success();
                if self.inner.local_deny
                    && !d.allowed
                    && let Some(retry) = d.retry_after
                    && !retry.is_zero()
                    && !quota.has_concurrency()
                {
                    let now = self.now();
                    self.inner.denied.put(
                        fp,
                        subject,
                        Denied {
                            until: now
                                .saturating_add(retry.as_nanos().min(u128::from(u64::MAX)) as u64),
                            at: now,
                            cost,
                            statuses: d.statuses.clone(),
                        },
                    );
                }
                Ok(d)
            }
            Err(StoreError::Protocol(e)) => {
                // Redis answered: it is up, but the reply is unusable.
                self.record_success();
                Err(StoreError::Protocol(e))
            }
            Err(e) => {
                self.record_failure(&e);
                self.on_failure_decision(subject, quota, cost, e)
            }
        }
    }

    async fn inspect(&self, subject: &str, quota: &Quota) -> Result<Decision, StoreError> {
        self.decide(subject, quota, 0, false).await
    }

    async fn reset(&self, subject: &str, quota: &Quota) -> Result<(), StoreError> {
        self.inner.denied.remove(quota.fingerprint(), subject);
        if let Some(leases) = &self.inner.leases {
            leases.remove(quota.fingerprint(), subject);
        }
        let keys = self.all_keys(subject, quota);
        let opts = Options {
            timeout: Some(self.inner.timeout),
            fail_fast: true,
            ..Default::default()
        };
        self.inner
            .client
            .with_options(&opts)
            .del::<i64, _>(keys)
            .await
            .map_err(|e| {
                self.inner
                    .demotion
                    .after_error(&self.inner.client, e.details());
                fred_error(e, self.inner.timeout)
            })?;
        Ok(())
    }

    fn release(&self, lease: Lease) {
        let LeaseKind::Redis(lease) = lease.kind else {
            // A fallback (memory) lease gives its slots back on drop.
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            // No runtime to release on: the lease expires on its own.
            return;
        };
        let store = self.clone();
        handle.spawn(async move {
            let i = &store.inner;
            let call = || {
                let keys = lease.keys.iter().map(|k| Key::from(k.as_str())).collect();
                (keys, vec![Value::from(lease.member.as_str())])
            };
            if let Err(e) = store.eval::<i64>(&i.release_sha, RELEASE_LUA, call).await {
                tracing::debug!(target: "cog_ratelimit", error = %e,
                    "releasing a concurrency lease failed; it expires on its own");
            }
        });
    }
}

/// Connects a `fred` client suited to rate limiting: 2 s connection
/// timeout, one attempt per command (a decision is never silently
/// repeated), and reconnection every 100 ms for as long as Redis is away.
///
/// `url` is any URL `fred` accepts: `redis://host:port`,
/// `redis-cluster://host:port?node=host:port`, `redis-sentinel://…`.
///
/// # Errors
/// [`StoreError::Unavailable`] when the URL is invalid or the first
/// connection fails; fred's error is its [`source`](std::error::Error::source).
pub async fn connect(url: &str) -> Result<Client, StoreError> {
    use fred::prelude::{Builder, Config, ReconnectPolicy};
    let config = Config::from_url(url).map_err(StoreError::unavailable)?;
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.max_command_attempts = 1;
        })
        .set_policy(ReconnectPolicy::new_constant(0, 100))
        .build()
        .map_err(StoreError::unavailable)?;
    client.init().await.map_err(StoreError::unavailable)?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fred::error::ErrorKind;

    fn denied(until: u64, cost: u64) -> Denied {
        Denied {
            until,
            at: 1,
            cost,
            statuses: Statuses::new(),
        }
    }

    #[test]
    fn the_single_limit_reply_reads_to_the_nanosecond() {
        let gcra = Gcra::new(1_000, Duration::from_secs(1), 1_000);
        let d = gcra_decision(&gcra, 5_000_000, 1);
        assert!(d.is_allowed());
        assert_eq!(d.statuses()[0].reset_after, Duration::from_nanos(5_000_000));
        assert_eq!(d.statuses()[0].remaining, 995);
        // Refused: -1 - used.
        let d = gcra_decision(&gcra, -1 - 999_500_000, 1);
        assert!(!d.is_allowed());
        assert_eq!(
            d.statuses()[0].reset_after,
            Duration::from_nanos(999_500_000)
        );
        assert_eq!(d.retry_after(), Some(Duration::from_nanos(500_000)));
        assert_eq!(d.statuses()[0].remaining, 0);
    }

    #[test]
    fn lease_replies_out_of_range_are_protocol_errors() {
        assert_eq!(parse_lease(&[1, 5, 3]).unwrap(), (1, 5, 3));
        for bad in [
            &[3, 5, 3][..],
            &[-1, 5, 3],
            &[1, -5, 3],
            &[1, 5, -3],
            &[1, 5],
            &[1, 5, 3, 4],
        ] {
            assert!(
                matches!(parse_lease(bad), Err(StoreError::Protocol(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_deny_cache_is_bounded_under_a_million_subjects() {
        let cache = DenyCache::new(10_000);
        for i in 0..1_000_000u32 {
            cache.put(7, &format!("subject-{i}"), denied(u64::MAX, 1));
            assert!(cache.len() <= 10_000 + 64);
        }
        assert!(cache.len() >= 5_000, "{}", cache.len());
    }

    #[test]
    fn the_deny_cache_answers_until_the_retry_time_and_for_larger_costs() {
        let cache = DenyCache::new(100);
        cache.put(7, "s", denied(1_000, 2));
        let d = cache.get(7, "s", 2, 400).unwrap();
        assert_eq!(d.retry_after(), Some(Duration::from_nanos(600)));
        assert_eq!(d.source(), DecisionSource::LocalDeny);
        assert!(cache.get(7, "s", 3, 999).is_some());
        // A smaller cost may fit: ask Redis.
        assert!(cache.get(7, "s", 1, 400).is_none());
        // At the retry time, and for another quota or subject: ask Redis.
        assert!(cache.get(7, "s", 2, 1_000).is_none());
        assert!(cache.get(8, "s", 2, 400).is_none());
        assert!(cache.get(7, "t", 2, 400).is_none());
        cache.remove(7, "s");
        assert!(cache.get(7, "s", 2, 400).is_none());
        // A clock read before another task recorded the denial.
        cache.put(7, "u", denied(1_000, 1));
        assert!(cache.get(7, "u", 1, 0).is_some());
    }

    #[test]
    fn client_side_failures_are_outages_and_replies_are_not() {
        let t = Duration::from_millis(1);
        let kind = |kind, text: &str| fred_error(FredError::new(kind, text.to_owned()), t);
        for text in [
            "Failed to route command.",
            "Missing expected connection.",
            "LOADING Redis is loading",
            "BUSY script",
            "OOM command not allowed when used memory > 'maxmemory'.",
            "MISCONF Redis is configured to save RDB snapshots",
            "READONLY You can't write against a read only replica.",
            "MASTERDOWN Link with MASTER is down",
            "TRYAGAIN Multiple keys request during rehashing of slot",
        ] {
            assert!(
                matches!(
                    kind(ErrorKind::Unknown, text),
                    StoreError::Unavailable { .. }
                ),
                "{text}"
            );
        }
        assert!(matches!(
            kind(ErrorKind::Unknown, "ERR Error running script"),
            StoreError::Protocol(_)
        ));
        // fred gives CLUSTERDOWN its own kind; it is still an outage.
        assert!(matches!(
            kind(ErrorKind::Cluster, "CLUSTERDOWN The cluster is down"),
            StoreError::Unavailable { .. }
        ));
        assert!(matches!(
            kind(ErrorKind::IO, "Connection closed."),
            StoreError::Unavailable { .. }
        ));
        assert!(matches!(
            kind(ErrorKind::Timeout, "t"),
            StoreError::Timeout(_)
        ));
        // The cause stays reachable through `source()`, not flattened into
        // a string.
        let oom = kind(ErrorKind::Unknown, "OOM command not allowed");
        let cause = std::error::Error::source(&oom).expect("a source");
        assert!(
            cause.to_string().contains("OOM command not allowed"),
            "{cause}"
        );
        assert_eq!(oom.to_string(), "rate-limit store unavailable");
    }
}
