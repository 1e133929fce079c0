//! Global limits across three regions: three real redis-servers, the
//! links between regions through proxies adding 1 / 40 / 80 ms and cut
//! for partitions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cog_ratelimit::region::{GlobalStore, RegionSet};
use cog_ratelimit::store::{RedisStore, Store};
use cog_ratelimit::{Limit, Quota};
use cog_testkit::Regions;

use crate::support::{client, command};

const NAMES: [&str; 3] = ["eu", "us", "ap"];
const ROUND: Duration = Duration::from_millis(250);

struct World {
    regions: Regions,
    stores: Vec<GlobalStore>,
}

async fn world() -> World {
    let regions = Regions::start(3, Regions::one_forty_eighty).await.unwrap();
    let mut stores = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let local = client(&regions.url(i)).await;
        let mut set = RegionSet::new(*name, local.clone()).sync_interval(ROUND);
        for j in (0..3).filter(|&j| j != i) {
            set = set.region(NAMES[j], client(&regions.link_url(i, j)).await);
        }
        let local_store = RedisStore::new(local)
            .timeout(Duration::from_millis(200))
            .local_deny(false);
        stores.push(GlobalStore::new(set, local_store));
    }
    World { regions, stores }
}

/// Sends requests from region `r` at `rate` per second until `until`,
/// counting admissions.
fn drive(
    store: GlobalStore,
    quota: Quota,
    rate: f64,
    until: Instant,
    admitted: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let gap = Duration::from_secs_f64(1.0 / rate);
        let mut due = Instant::now();
        while Instant::now() < until {
            if store.check("tenant", &quota, 1).await.unwrap().is_allowed() {
                admitted.fetch_add(1, Ordering::Relaxed);
            }
            due += gap;
            tokio::time::sleep_until(due.into()).await;
        }
    })
}

fn counters() -> Vec<Arc<AtomicU64>> {
    (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect()
}

fn take(c: &[Arc<AtomicU64>]) -> Vec<u64> {
    c.iter().map(|a| a.swap(0, Ordering::Relaxed)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_global_limit_with_shares_by_demand_then_a_partition_then_healing() {
    let w = world().await;
    // 300/s, burst 30, for the whole fleet.
    let quota = Quota::single(Limit::per_second(300).burst(30)).unwrap();
    let admitted = counters();
    let start = Instant::now();
    let end = start + Duration::from_secs(11);
    // Demand: eu 400/s, us 200/s, ap 100/s (700/s against a limit of 300).
    let tasks: Vec<_> = [400.0, 200.0, 100.0]
        .iter()
        .enumerate()
        .map(|(i, &rate)| {
            drive(
                w.stores[i].clone(),
                quota.clone(),
                rate,
                end,
                admitted[i].clone(),
            )
        })
        .collect();

    // Before any demand: an equal split.
    assert!((w.stores[0].share("nobody", &quota) - 1.0 / 3.0).abs() < 1e-9);

    // Links up: after two rounds the shares follow demand and sum to a
    // whole; the fleet admits the limit's rate, not more.
    tokio::time::sleep(ROUND * 4).await;
    assert!(w.stores.iter().all(|s| s.rounds() >= 2), "sync rounds ran");
    let shares: Vec<f64> = w.stores.iter().map(|s| s.share("tenant", &quota)).collect();
    assert!(shares.iter().sum::<f64>() <= 1.0 + 1e-6, "{shares:?}");
    assert!(shares[0] > shares[1] && shares[1] > shares[2], "{shares:?}");
    take(&admitted);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = take(&admitted);
    let secs = t.elapsed().as_secs_f64();
    let total: u64 = got.iter().sum();
    // At most the rate plus a burst; the floor of ap's share it does not
    // use in full is the only slack below it.
    assert!(
        total as f64 <= 300.0 * secs + 30.0,
        "{got:?} in {secs:.2} s"
    );
    assert!(total as f64 >= 0.7 * 300.0 * secs, "{got:?} in {secs:.2} s");

    // ap cut off: each side admits at most its own shares of the limit.
    w.regions.isolate(2, true);
    tokio::time::sleep(ROUND * 4).await;
    let cut: Vec<f64> = w.stores.iter().map(|s| s.share("tenant", &quota)).collect();
    // eu and us count ap as idle, ap counts them as idle.
    assert!(cut[2] > 0.8, "{cut:?}");
    assert!(cut[0] + cut[1] > 0.9, "{cut:?}");
    take(&admitted);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = take(&admitted);
    let secs = t.elapsed().as_secs_f64();
    let side = |share: f64| share * 300.0 * secs + 30.0;
    assert!(
        (got[0] + got[1]) as f64 <= side(cut[0] + cut[1]),
        "{got:?} {cut:?}"
    );
    assert!(got[2] as f64 <= side(cut[2]), "{got:?} {cut:?}");
    assert!(
        (got.iter().sum::<u64>() as f64) <= 3.0 * 300.0 * secs + 90.0,
        "{got:?}"
    );

    // Healed: the regions agree again (their shares, each computed apart,
    // add up to a whole) within a few rounds — the clients' reconnection
    // to the restored links included.
    w.regions.isolate(2, false);
    let healed_at = Instant::now();
    let mut rounds = 0;
    loop {
        tokio::time::sleep(ROUND).await;
        rounds += 1;
        let healed: Vec<f64> = w.stores.iter().map(|s| s.share("tenant", &quota)).collect();
        let sum: f64 = healed.iter().sum();
        if (sum - 1.0).abs() < 0.01 && healed[2] < 0.5 {
            break;
        }
        assert!(
            rounds < 8,
            "not converged after {rounds} rounds: {healed:?}"
        );
    }
    eprintln!(
        "converged {:?} ({rounds} rounds) after the links came back",
        healed_at.elapsed()
    );
    for t in tasks {
        t.await.unwrap();
    }
}

/// One region's view before any sync: an equal share of each limit,
/// remaining counts in the quota's units, inspect and reset on the local
/// deployment, concurrency limits regional (not shared out), leases
/// released.
#[tokio::test]
async fn a_region_decides_its_share_in_the_quotas_units() {
    let regions = Regions::start(3, |_, _| Duration::ZERO).await.unwrap();
    let local = client(&regions.url(0)).await;
    let set = RegionSet::new("eu", local.clone())
        .region("us", client(&regions.link_url(0, 1)).await)
        .region("ap", client(&regions.link_url(0, 2)).await)
        .sync_interval(Duration::from_secs(3600));
    let store = GlobalStore::new(set, RedisStore::new(local).local_deny(false));

    // 300 a day for the fleet: a third here, 100.
    let quota = Quota::single(Limit::per_day(300)).unwrap();
    let d = store.check("acme", &quota, 1).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.statuses()[0].remaining, 99);
    let d = store.check("acme", &quota, 9).await.unwrap();
    assert_eq!(d.statuses()[0].remaining, 90);
    assert_eq!(
        store.inspect("acme", &quota).await.unwrap().statuses()[0].remaining,
        90
    );
    assert_eq!(
        store.inspect("acme", &quota).await.unwrap().statuses()[0].remaining,
        90
    );
    // The share's end: 90 more, then refused.
    assert!(store.check("acme", &quota, 90).await.unwrap().is_allowed());
    assert!(!store.check("acme", &quota, 1).await.unwrap().is_allowed());
    store.reset("acme", &quota).await.unwrap();
    assert_eq!(
        store.inspect("acme", &quota).await.unwrap().statuses()[0].remaining,
        100
    );

    // Concurrency is per region, as given.
    let slots = Quota::single(Limit::concurrency(2)).unwrap();
    let mut a = store.check("acme", &slots, 1).await.unwrap();
    let _b = store.check("acme", &slots, 1).await.unwrap();
    assert!(a.is_allowed() && _b.is_allowed());
    assert!(!store.check("acme", &slots, 1).await.unwrap().is_allowed());
    assert_eq!(
        store.inspect("acme", &slots).await.unwrap().statuses()[0].remaining,
        0
    );
    store.release(a.take_lease().unwrap());
    let mut freed = false;
    for _ in 0..100 {
        if store.check("acme", &slots, 1).await.unwrap().is_allowed() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(freed, "the released slot is free again");
    store.reset("acme", &slots).await.unwrap();
    assert!(store.check("acme", &slots, 1).await.unwrap().is_allowed());
}

/// The one regional ledger on `client`'s server.
async fn ledger(client: &fred::clients::Client) -> Option<String> {
    let keys: Vec<String> = command(client, &["KEYS", "cog:rg:*"])
        .await
        .convert()
        .unwrap();
    assert!(keys.len() <= 1, "one subject, one ledger: {keys:?}");
    keys.into_iter().next()
}

/// The round of `region`'s sealed entry in `ledger` (`round:units:before`).
async fn sealed_round(client: &fred::clients::Client, ledger: &str, region: &str) -> u64 {
    let entry: String = command(client, &["HGET", ledger, region])
        .await
        .convert()
        .unwrap();
    entry.split(':').next().unwrap().parse().unwrap()
}

/// The sync task does one round per interval (no more, however fast its
/// Redis answers), seals a subject's entry every round while the subject
/// is asked for, and stops three rounds after its last request: an idle
/// subject costs no Redis call.
#[tokio::test]
async fn one_round_per_interval_and_idle_subjects_cost_nothing() {
    let regions = Regions::start(2, |_, _| Duration::ZERO).await.unwrap();
    let local = client(&regions.url(0)).await;
    let round = Duration::from_millis(100);
    let set = RegionSet::new("eu", local.clone())
        .region("us", client(&regions.link_url(0, 1)).await)
        .sync_interval(round);
    let start = Instant::now();
    let store = GlobalStore::new(set, RedisStore::new(local.clone()).local_deny(false));
    let quota = Quota::single(Limit::per_second(1_000)).unwrap();

    // Asked for during about eight rounds.
    let asking = start + round * 8;
    while Instant::now() < asking {
        assert!(store.check("acme", &quota, 1).await.unwrap().is_allowed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ledger = ledger(&local).await.expect("the subject's ledger");
    let while_asked = sealed_round(&local, &ledger, "eu").await;
    tokio::time::sleep(round * 3).await;
    let later = sealed_round(&local, &ledger, "eu").await;
    assert!(
        later > while_asked,
        "sealed every round while active: {while_asked} then {later}"
    );

    // Idle: at most three more seals, then none.
    tokio::time::sleep(round * 4).await;
    let idle = sealed_round(&local, &ledger, "eu").await;
    tokio::time::sleep(round * 5).await;
    assert_eq!(
        sealed_round(&local, &ledger, "eu").await,
        idle,
        "an idle subject is sealed no more"
    );

    // One round per interval: never more rounds than boundaries passed.
    let boundaries = (start.elapsed().as_millis() / round.as_millis()) as u32 + 1;
    let rounds = store.rounds();
    assert!(
        (1..=boundaries).contains(&rounds),
        "{rounds} rounds in {boundaries} intervals"
    );
}

/// A ledger lives ten rounds (and at least 10 s) past its last seal, so a
/// long sync interval does not lose the entries between two rounds.
#[tokio::test]
async fn the_ledger_outlives_ten_rounds() {
    let server = cog_testkit::RedisServer::start().unwrap();
    let local = client(&server.url()).await;
    let round = Duration::from_secs(2);
    let store = GlobalStore::new(
        RegionSet::new("eu", local.clone()).sync_interval(round),
        RedisStore::new(local.clone()).local_deny(false),
    );
    let quota = Quota::single(Limit::per_minute(100)).unwrap();
    assert!(store.check("acme", &quota, 1).await.unwrap().is_allowed());
    let deadline = Instant::now() + round * 3;
    let ledger = loop {
        if let Some(l) = ledger(&local).await {
            break l;
        }
        assert!(Instant::now() < deadline, "no seal within three rounds");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ttl: i64 = command(&local, &["PTTL", &ledger]).await.convert().unwrap();
    // 20 s when sealed, read within a few seconds of it.
    assert!((15_000..=20_000).contains(&ttl), "ledger lifetime {ttl} ms");
}

/// What a region set and a global store show of themselves: the regions'
/// names and the interval, never a connection.
#[tokio::test]
async fn debug_shows_the_regions_not_their_connections() {
    let server = cog_testkit::RedisServer::start().unwrap();
    let local = client(&server.url()).await;
    let set = RegionSet::new("eu", local.clone())
        .region("us", local.clone())
        .sync_interval(Duration::from_millis(1500));
    let shown = format!("{set:?}");
    for part in ["eu", "us", "1.5s"] {
        assert!(shown.contains(part), "{part} in {shown}");
    }
    let store = GlobalStore::new(set, RedisStore::new(local));
    let shown = format!("{store:?}");
    assert!(shown.contains("\"us\""), "{shown}");
    assert!(!shown.contains(&server.url()), "{shown}");
    assert!(!shown.contains("redis://"), "{shown}");
}

/// The region's counter for `region` in `ledger`.
async fn counted(client: &fred::clients::Client, ledger: &str, region: &str) -> u64 {
    let c: Option<u64> = command(client, &["HGET", ledger, &format!("c:{region}")])
        .await
        .convert()
        .unwrap();
    c.unwrap_or(0)
}

/// Asks for `units` (in checks of cost 1 and 3) over about `time`.
async fn ask(store: &GlobalStore, quota: &Quota, units: u64, time: Duration) {
    let checks = units / 4;
    for _ in 0..checks {
        store.check("acme", quota, 1).await.unwrap();
        store.check("acme", quota, 3).await.unwrap();
        tokio::time::sleep(time / checks as u32).await;
    }
}

/// A seal Redis applied but whose answer came too late, and a seal Redis
/// refused (out of memory), are both sent again — and each unit is
/// counted once: the region's counter ends at exactly what was asked.
/// Before, a late answer put the units back to be added a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seal_whose_answer_is_lost_counts_once() {
    // The ledgers on one server (through a proxy), decisions on another.
    let ledgers = cog_testkit::RedisServer::start().unwrap();
    let decisions = cog_testkit::RedisServer::start().unwrap();
    let direct = client(&ledgers.url()).await;
    let proxy = cog_testkit::Proxy::start(&ledgers.addr().to_string())
        .await
        .unwrap();
    let round = Duration::from_millis(100);
    let store = GlobalStore::new(
        RegionSet::new("eu", client(&proxy.redis_url()).await).sync_interval(round),
        RedisStore::new(client(&decisions.url()).await).local_deny(false),
    );
    let quota = Quota::single(Limit::per_second(1_000_000)).unwrap();

    // Answers take 80 ms, past the seal's 50 ms: applied, not confirmed.
    proxy.set_latency(Duration::from_millis(40));
    ask(&store, &quota, 200, round * 5).await;
    let ledger = ledger(&direct).await.expect("seals reach Redis");
    assert!(
        counted(&direct, &ledger, "eu").await > 0,
        "applied while late"
    );
    proxy.set_latency(Duration::ZERO);
    // Out of memory: refused.
    let _ = command(&direct, &["CONFIG", "SET", "maxmemory", "1"]).await;
    tokio::time::sleep(round * 2).await;
    let before = counted(&direct, &ledger, "eu").await;
    ask(&store, &quota, 100, round * 3).await;
    assert_eq!(counted(&direct, &ledger, "eu").await, before, "refused");
    let _ = command(&direct, &["CONFIG", "SET", "maxmemory", "0"]).await;
    ask(&store, &quota, 20, round * 2).await;
    // Sealed again once answers come back in time.
    tokio::time::sleep(round * 3).await;
    assert_eq!(counted(&direct, &ledger, "eu").await, 320);
}

/// The marks of instances quiet for ten rounds go (the exact rule is the
/// seal script's unit test); a live instance's stays.
#[tokio::test]
async fn marks_of_quiet_instances_go() {
    let server = cog_testkit::RedisServer::start().unwrap();
    let local = client(&server.url()).await;
    let round = Duration::from_millis(50);
    let store = GlobalStore::new(
        RegionSet::new("eu", local.clone()).sync_interval(round),
        RedisStore::new(local.clone()).local_deny(false),
    );
    let quota = Quota::single(Limit::per_second(1_000_000)).unwrap();
    store.check("acme", &quota, 1).await.unwrap();
    tokio::time::sleep(round * 3).await;
    let ledger = ledger(&local).await.expect("the subject's ledger");
    let now = sealed_round(&local, &ledger, "eu").await;
    // Another instance's mark, eleven rounds old; one from far ahead.
    let (old, ahead) = (format!("7:{}", now - 11), format!("7:{}", now + 1000));
    let _ = command(
        &local,
        &["HSET", &ledger, "i:gone", &old, "i:ahead", &ahead],
    )
    .await;
    ask(&store, &quota, 100, round * 12).await;
    tokio::time::sleep(round * 2).await;
    let fields: Vec<String> = command(&local, &["HKEYS", &ledger])
        .await
        .convert()
        .unwrap();
    let marks: Vec<&String> = fields.iter().filter(|f| f.starts_with("i:")).collect();
    assert_eq!(
        marks.len(),
        2,
        "this instance's mark and i:ahead: {fields:?}"
    );
    assert!(marks.iter().any(|m| *m == "i:ahead"), "{fields:?}");
    assert_eq!(counted(&local, &ledger, "eu").await, 101);
}

/// A region's entry far ahead of every clock (garbage, or an instance whose
/// clock was off) is replaced by the next seal in its own region and the
/// next push everywhere else. Before, it stood for ever: the larger entry
/// wins, each seal renewed the ledger's lifetime, and that region's demand
/// counted 0 in every region, holding its share at the floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_from_the_far_future_is_replaced() {
    let regions = Regions::start(2, |_, _| Duration::ZERO).await.unwrap();
    let round = Duration::from_millis(100);
    let mut stores = Vec::new();
    let mut locals = Vec::new();
    for i in 0..2 {
        let local = client(&regions.url(i)).await;
        let set = RegionSet::new(NAMES[i], local.clone())
            .region(NAMES[1 - i], client(&regions.link_url(i, 1 - i)).await)
            .sync_interval(round);
        let store = RedisStore::new(local.clone()).local_deny(false);
        stores.push(GlobalStore::new(set, store));
        locals.push(local);
    }
    let quota = Quota::single(Limit::per_second(1_000_000)).unwrap();
    for store in &stores {
        store.check("tenant", &quota, 1).await.unwrap();
    }
    let deadline = Instant::now() + round * 10;
    let mut ledgers = Vec::new();
    for local in &locals {
        let ledger = loop {
            if let Some(l) = ledger(local).await {
                break l;
            }
            assert!(Instant::now() < deadline, "no ledger within ten rounds");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        ledgers.push(ledger);
    }
    // eu's entry, a billion rounds ahead, in both regions.
    for (local, ledger) in locals.iter().zip(&ledgers) {
        let _ = command(local, &["HSET", ledger, "eu", "1000000000000:0:0"]).await;
    }

    // eu asks ten times as much as us: it should get most of the limit.
    let until = Instant::now() + round * 30;
    let (eu, us) = (counters(), counters());
    let driving = [
        drive(
            stores[0].clone(),
            quota.clone(),
            500.0,
            until,
            eu[0].clone(),
        ),
        drive(stores[1].clone(), quota.clone(), 50.0, until, us[0].clone()),
    ];
    let mut seen = (0.0, 0.0);
    while Instant::now() < until {
        seen = (
            stores[0].share("tenant", &quota),
            stores[1].share("tenant", &quota),
        );
        if seen.0 > 0.6 && seen.1 < 0.4 {
            break;
        }
        tokio::time::sleep(round).await;
    }
    for d in driving {
        d.abort();
    }
    assert!(
        seen.0 > 0.6 && seen.1 < 0.4,
        "eu's share as eu sees it, and us's as us sees it: {seen:?}"
    );
    for (local, ledger) in locals.iter().zip(&ledgers) {
        assert!(sealed_round(local, ledger, "eu").await < 1_000_000_000_000);
    }
}

/// Behind Sentinel, a failover that leaves the old primaries up (they
/// answer writes `READONLY`): the sync task's own connections — the local
/// region's and a remote region's, neither a store's — reconnect to the
/// new primaries, and seals and pushes go on there, each unit counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_follows_a_sentinel_failover_of_each_region() {
    use cog_testkit::RedisSentinel;
    let (eu, us) = (
        RedisSentinel::start().unwrap(),
        RedisSentinel::start().unwrap(),
    );
    let decisions = cog_testkit::RedisServer::start().unwrap();
    let round = Duration::from_millis(100);
    let store = GlobalStore::new(
        RegionSet::new("eu", client(&eu.url()).await)
            .region("us", client(&us.url()).await)
            .sync_interval(round),
        RedisStore::new(client(&decisions.url()).await).local_deny(false),
    );
    let quota = Quota::single(Limit::per_second(1_000_000)).unwrap();
    ask(&store, &quota, 200, round * 5).await;
    tokio::time::sleep(round * 3).await;
    let (eu, us) = (eu.failed_over().await, us.failed_over().await);
    ask(&store, &quota, 100, round * 5).await;
    // Fresh connections find the new primaries.
    let (on_eu, on_us) = (client(&eu.url()).await, client(&us.url()).await);
    let ledger = ledger(&on_eu).await.expect("the subject's ledger");
    let started = Instant::now();
    loop {
        let sealed = counted(&on_eu, &ledger, "eu").await;
        let pushed: Option<String> = command(&on_us, &["HGET", &ledger, "eu"])
            .await
            .convert()
            .unwrap();
        let pushed: Option<u64> = pushed.and_then(|e| e.split(':').nth(1)?.parse().ok());
        if sealed == 300 && pushed == Some(300) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "after the failovers: {sealed} sealed in eu, {pushed:?} pushed to us (of 300)"
        );
        tokio::time::sleep(round).await;
    }
}
