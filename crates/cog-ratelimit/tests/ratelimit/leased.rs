//! The leased mode against real Redis: decisions without round trips, the
//! over-admission bound on random fleets (Redis paused mid-lease too), no
//! refusal while budget sits unspent on another instance, headers, failure
//! policies, Redis Cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cog_ratelimit::store::{FailurePolicy, Leasing, RedisStore, Store, StoreError};
use cog_ratelimit::{DecisionSource, Limit, Quota};
use cog_testkit::{RedisCluster, RedisServer};
use proptest::prelude::*;

use crate::support::client;

async fn leased(url: &str, leasing: Leasing) -> RedisStore {
    RedisStore::new(client(url).await)
        .timeout(Duration::from_millis(200))
        .local_deny(false)
        .leased(leasing)
}

async fn command(server: &RedisServer, args: &[&str]) -> fred::types::Value {
    crate::support::command(&client(&server.url()).await, args).await
}

/// Scripts the server has run (`EVALSHA`s that found the script, and
/// `EVAL`s after a `NOSCRIPT`).
async fn script_calls(server: &RedisServer) -> u64 {
    let out = command(server, &["INFO", "commandstats"]).await;
    let out = out.as_string().unwrap_or_default();
    let field = |cmd: &str, name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:")))
            .and_then(|l| {
                l.split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                    .map(|n| n.parse().unwrap())
            })
            .unwrap_or(0)
    };
    field("evalsha", "calls") - field("evalsha", "failed_calls") + field("eval", "calls")
}

#[tokio::test]
async fn a_hot_key_is_decided_locally_with_one_call_per_lease() {
    let server = RedisServer::start().unwrap();
    let store = leased(&server.url(), Leasing::new().max_units(256)).await;
    let quota = Quota::single(Limit::per_second(1_000_000)).unwrap();
    let before = script_calls(&server).await;
    let mut local = 0;
    for _ in 0..20_000 {
        let d = store.check("hot", &quota, 1).await.unwrap();
        assert!(d.is_allowed());
        if d.source() == DecisionSource::Lease {
            local += 1;
        }
    }
    let calls = script_calls(&server).await - before;
    // Leases grow 4, 20, 84, 256: then one call per 257 decisions.
    assert!(local >= 19_800, "{local} of 20 000 local");
    assert!(calls <= 100, "{calls} calls for 20 000 decisions");
    assert_eq!(local + calls, 20_000, "every decision is local or one call");
}

#[tokio::test]
async fn headers_show_what_this_instance_knows() {
    let server = RedisServer::start().unwrap();
    let store = leased(&server.url(), Leasing::new()).await;
    let quota = Quota::single(Limit::per_day(10_000)).unwrap();
    let mut last = u64::MAX;
    let mut seen_local = false;
    for _ in 0..200 {
        let d = store.check("s", &quota, 1).await.unwrap();
        let remaining = d.statuses()[0].remaining;
        // Never more than Redis had, and down by one per request.
        assert!(remaining < 10_000);
        if last != u64::MAX {
            assert_eq!(remaining, last - 1, "{:?}", d.source());
        }
        seen_local |= d.source() == DecisionSource::Lease;
        last = remaining;
    }
    assert!(seen_local);
    assert_eq!(last, 10_000 - 200);
}

#[tokio::test]
async fn budget_parked_on_another_instance_does_not_refuse_a_request() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let quota = Quota::single(Limit::per_day(100)).unwrap();
    let fast = leased(&url, Leasing::new().lease_time(Duration::from_secs(60))).await;
    let other = leased(&url, Leasing::new()).await;
    // `fast` builds up a lease, then stops spending it.
    let mut admitted = 0;
    while admitted < 40 {
        assert!(fast.check("s", &quota, 1).await.unwrap().is_allowed());
        admitted += 1;
    }
    // Everything but what `fast` holds is spent by `other`, one by one…
    loop {
        let d = other.check("s", &quota, 1).await.unwrap();
        if !d.is_allowed() {
            break;
        }
        admitted += 1;
    }
    // … and it is refused only when the whole budget is admitted: the units
    // `fast` holds go to `other`'s refused requests. Redis does not know
    // how many of them `fast` spent already: at most its lease (a quarter
    // of the budget) more.
    assert!((100..=125).contains(&admitted), "{admitted}");
}

/// One fleet: `instances` stores on one key, each sending `requests`
/// requests `gap` apart, leases of at most `max_units` for `lease_ms`.
#[derive(Debug, Clone)]
struct Fleet {
    instances: usize,
    requests: Vec<u64>,
    gaps_us: Vec<u64>,
    max_units: u64,
    lease_ms: u64,
    burst: u64,
    pause_after_ms: Option<u64>,
}

fn fleet() -> impl Strategy<Value = Fleet> {
    (1usize..5).prop_flat_map(|n| {
        (
            proptest::collection::vec(20u64..300, n),
            proptest::collection::vec(0u64..2_000, n),
            1u64..64,
            5u64..200,
            20u64..400,
            proptest::option::weighted(0.4, 10u64..150),
        )
            .prop_map(
                move |(requests, gaps_us, max_units, lease_ms, burst, pause)| Fleet {
                    instances: n,
                    requests,
                    gaps_us,
                    max_units,
                    lease_ms,
                    burst,
                    pause_after_ms: pause,
                },
            )
    })
}

/// Runs a fleet on `quota` (per day: nothing refills during a run) and
/// returns (admitted, refused by Redis).
async fn run(server: &Arc<RedisServer>, f: &Fleet, quota: &Quota, subject: &str) -> (u64, u64) {
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..f.instances {
        let store = leased(
            &server.url(),
            Leasing::new()
                .max_units(f.max_units)
                .lease_time(Duration::from_millis(f.lease_ms)),
        )
        .await
        .on_failure(FailurePolicy::FailClosed)
        .retry_interval(Duration::from_millis(20));
        let (quota, subject) = (quota.clone(), subject.to_owned());
        let (admitted, refused) = (admitted.clone(), refused.clone());
        let (n, gap) = (f.requests[i], f.gaps_us[i]);
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                match store.check(&subject, &quota, 1).await {
                    Ok(d) if d.is_allowed() => {
                        assert_ne!(d.source(), DecisionSource::FailOpen);
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    // Redis paused: fail-closed.
                    Err(StoreError::Unavailable { .. } | StoreError::Timeout(_)) => {}
                    Err(e) => panic!("{e}"),
                }
                if gap > 0 {
                    tokio::time::sleep(Duration::from_micros(gap)).await;
                }
            }
        }));
    }
    if let Some(ms) = f.pause_after_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        server.pause().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.resume().unwrap();
    }
    for t in tasks {
        t.await.unwrap();
    }
    (
        admitted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    )
}

#[test]
fn random_fleets_stay_within_the_bound_and_use_the_whole_budget() {
    let server = Arc::new(RedisServer::start().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let subjects = AtomicU64::new(0);
    let config = ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest::test_runner::TestRunner::new(config)
        .run(&fleet(), |f| {
            let quota = Quota::single(Limit::per_day(f.burst)).unwrap();
            let subject = format!("s{}", subjects.fetch_add(1, Ordering::Relaxed));
            let (admitted, refused) = rt.block_on(run(&server, &f, &quota, &subject));
            let bound = Leasing::new()
                .max_units(f.max_units)
                .bound(f.instances as u64, f.burst);
            prop_assert!(
                admitted <= f.burst + bound,
                "{admitted} admitted, limit {} + bound {bound}",
                f.burst
            );
            // Without a pause (no call lost half-way), a refusal means the
            // budget was spent: no request refused while units sat unspent
            // on another instance.
            if f.pause_after_ms.is_none() && refused > 0 {
                prop_assert!(
                    admitted + 1 >= f.burst,
                    "{admitted} admitted of {} with {refused} refused",
                    f.burst
                );
            }
            Ok(())
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refilling_limit_admits_at_most_its_rate_plus_the_bound() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    // 2 000/s, burst 200, for ~1 s: at most 200 + 2 000·t + 2·N·S.
    let quota = Quota::single(Limit::per_second(2_000).burst(200)).unwrap();
    let leasing = Leasing::new()
        .max_units(32)
        .lease_time(Duration::from_millis(50));
    let admitted = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let store = Arc::new(leased(&url, leasing).await);
        for _ in 0..4 {
            let (store, quota, admitted) = (store.clone(), quota.clone(), admitted.clone());
            tasks.push(tokio::spawn(async move {
                let end = std::time::Instant::now() + Duration::from_secs(1);
                while std::time::Instant::now() < end {
                    if store.check("hot", &quota, 1).await.unwrap().is_allowed() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let admitted = admitted.load(Ordering::Relaxed);
    let bound = leasing.bound(3, 200);
    let most = 200 + (2_000.0 * secs).ceil() as u64 + bound;
    assert!(
        admitted <= most,
        "{admitted} admitted in {secs:.2} s, most {most}"
    );
    // And the demand (far above the rate) gets close to all of it.
    assert!(
        admitted as f64 >= 2_000.0 * secs * 0.8,
        "{admitted} admitted in {secs:.2} s"
    );
}

#[tokio::test]
async fn a_live_lease_is_spent_while_redis_is_away_then_the_policy_applies() {
    let server = RedisServer::start().unwrap();
    let store = leased(
        &server.url(),
        Leasing::new().lease_time(Duration::from_secs(30)),
    )
    .await
    .on_failure(FailurePolicy::FailClosed);
    let quota = Quota::single(Limit::per_second(1_000_000)).unwrap();
    // Build a lease up.
    for _ in 0..200 {
        store.check("s", &quota, 1).await.unwrap();
    }
    server.kill().unwrap();
    let mut local = 0;
    loop {
        match store.check("s", &quota, 1).await {
            Ok(d) => {
                assert_eq!(d.source(), DecisionSource::Lease);
                local += 1;
            }
            Err(StoreError::Unavailable { .. } | StoreError::Timeout(_)) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(local <= 256, "more than a lease spent without Redis");
    }
    assert!(local > 0);
    // Fail-open admits by policy once the lease is gone.
    let open = store.clone().on_failure(FailurePolicy::FailOpen);
    let d = open.check("s", &quota, 1).await.unwrap();
    assert_eq!(d.source(), DecisionSource::FailOpen);
}

#[tokio::test]
async fn reset_forgets_leases_here_and_in_redis() {
    let server = RedisServer::start().unwrap();
    let leasing = Leasing::new().lease_time(Duration::from_secs(60));
    let store = leased(&server.url(), leasing).await;
    assert_eq!(store.leasing(), Some(leasing));
    assert_eq!(RedisStore::new(client(&server.url()).await).leasing(), None);
    let quota = Quota::single(Limit::per_day(50)).unwrap();
    // Spent to the end; then, after a reset, a lease with units left.
    while store.check("s", &quota, 1).await.unwrap().is_allowed() {}
    store.reset("s", &quota).await.unwrap();
    let keys = command(&server, &["KEYS", "*"]).await;
    assert_eq!(keys.array_len(), Some(0), "{keys:?}");
    let d = store.check("s", &quota, 1).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.source(), DecisionSource::Store);
    while store.check("s", &quota, 1).await.unwrap().source() != DecisionSource::Lease {}
    // The lease held here is forgotten with the reset.
    store.reset("s", &quota).await.unwrap();
    let d = store.check("s", &quota, 1).await.unwrap();
    assert_eq!(d.source(), DecisionSource::Store);
    assert_eq!(d.statuses()[0].remaining, 49);
}

/// A dead Redis fails a call at once (the client does not queue it until
/// a reconnection): well inside the configured timeout.
#[tokio::test]
async fn a_dead_redis_fails_a_lease_call_at_once() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::new(client(&server.url()).await)
        .timeout(Duration::from_secs(2))
        .on_failure(FailurePolicy::FailClosed)
        .leased(Leasing::new());
    let quota = Quota::single(Limit::per_second(10)).unwrap();
    store.check("s", &quota, 1).await.unwrap();
    server.kill().unwrap();
    let t = std::time::Instant::now();
    let err = store.check("s", &quota, 5).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_mode_on_a_cluster() {
    let cluster = RedisCluster::start().unwrap();
    let url = cluster.url();
    let quota = Quota::single(Limit::per_day(300)).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let store = Arc::new(leased(&url, Leasing::new().max_units(16)).await);
        for subject in ["a", "b{x}", "c d"] {
            let (store, quota) = (store.clone(), quota.clone());
            tasks.push(tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..150 {
                    if store.check(subject, &quota, 1).await.unwrap().is_allowed() {
                        ok += 1;
                    }
                }
                (subject, ok)
            }));
        }
    }
    let mut per_subject = std::collections::HashMap::new();
    for t in tasks {
        let (s, ok) = t.await.unwrap();
        *per_subject.entry(s).or_insert(0u64) += ok;
    }
    let bound = Leasing::new().max_units(16).bound(3, 300);
    for (s, ok) in per_subject {
        assert!((299..=300 + bound).contains(&ok), "{s}: {ok}");
    }
}

#[tokio::test]
async fn a_call_dropped_half_way_does_not_stop_leasing() {
    let server = RedisServer::start().unwrap();
    let store = leased(&server.url(), Leasing::new()).await;
    let quota = Quota::single(Limit::per_second(1_000_000)).unwrap();
    // Each is polled once (the renewal starts) and dropped.
    for _ in 0..5 {
        assert!(futures_util::FutureExt::now_or_never(store.check("s", &quota, 1)).is_none());
    }
    let mut local = 0;
    for _ in 0..2_000 {
        if store.check("s", &quota, 1).await.unwrap().source() == DecisionSource::Lease {
            local += 1;
        }
    }
    assert!(local >= 1_900, "{local} of 2 000 local");
}

#[tokio::test]
async fn a_lease_is_not_spent_past_its_lease_time() {
    let server = RedisServer::start().unwrap();
    let store = leased(
        &server.url(),
        Leasing::new().lease_time(Duration::from_millis(50)),
    )
    .await;
    let quota = Quota::single(Limit::per_second(1_000_000)).unwrap();
    for _ in 0..50 {
        store.check("s", &quota, 1).await.unwrap();
    }
    assert_eq!(
        store.check("s", &quota, 1).await.unwrap().source(),
        DecisionSource::Lease
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        store.check("s", &quota, 1).await.unwrap().source(),
        DecisionSource::Store
    );
}

#[tokio::test]
async fn the_ledger_lives_four_lease_times_at_least_a_second() {
    let server = RedisServer::start().unwrap();
    for (lease, most) in [(2_000u64, 8_000i64), (10, 1_000)] {
        let store = leased(
            &server.url(),
            Leasing::new().lease_time(Duration::from_millis(lease)),
        )
        .await;
        let quota = Quota::single(Limit::per_second(1_000_000)).unwrap();
        let subject = format!("s{lease}");
        // Until a lease is granted (the ledger is written then).
        for _ in 0..10 {
            store.check(&subject, &quota, 1).await.unwrap();
        }
        let ledger = format!("{}:lease", store.keys(&subject, &quota)[0]);
        let ttl = command(&server, &["PTTL", &ledger]).await;
        let ttl = ttl.as_i64().unwrap();
        assert!(ttl > most / 2 && ttl <= most, "{lease} ms: {ttl}");
    }
}
