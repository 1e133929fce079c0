//! Tenants placed on two real Redis deployments by partition, and a
//! partition moved under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cog_core::placement::{Placement, partition};
use cog_ratelimit::store::{PlacedStore, RedisStore, Store};
use cog_ratelimit::{Limit, Quota};
use cog_testkit::RedisServer;

use crate::support::client;

async fn placed(main: &RedisServer, big: &RedisServer, placement: Placement) -> PlacedStore {
    let store = |url: String| async move {
        RedisStore::new(client(&url).await)
            .timeout(Duration::from_millis(500))
            .local_deny(false)
    };
    PlacedStore::new(
        placement,
        [
            ("main", store(main.url()).await),
            ("big", store(big.url()).await),
        ],
    )
    .unwrap()
}

async fn keys(server: &RedisServer) -> usize {
    use fred::interfaces::ClientLike;
    let c = client(&server.url()).await;
    let n: u64 = c
        .custom(fred::cmd!("DBSIZE"), Vec::<String>::new())
        .await
        .unwrap();
    n as usize
}

#[tokio::test]
async fn each_tenant_is_decided_on_its_partitions_deployment() {
    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let placement = Placement::new(["main", "big"])
        .unwrap()
        .moved(partition("acme"), "big")
        .unwrap();
    let store = placed(&main, &big, placement).await;
    let quota = Quota::single(Limit::per_day(10)).unwrap();
    store.check("acme", &quota, 1).await.unwrap();
    assert_eq!((keys(&main).await, keys(&big).await), (0, 1));
    // Another tenant, in another partition.
    let other = cog_testkit::placement::elsewhere("acme");
    store.check(&other, &quota, 1).await.unwrap();
    assert_eq!((keys(&main).await, keys(&big).await), (1, 1));
    // A partition on a deployment without a store is refused; stale
    // placements are ignored.
    let p = store.placement();
    let elsewhere =
        Placement::from_parts(9, ["main", "elsewhere"], [(partition("acme"), "elsewhere")]);
    assert!(store.set_placement(elsewhere.unwrap()).is_err());
    assert_eq!(store.placement(), p);
    store
        .set_placement(Placement::new(["main", "big"]).unwrap())
        .unwrap();
    assert_eq!(store.placement(), p);
}

/// Three instances on one tenant (400 a day); its partition moves from
/// `main` to `big` half-way, the instances learning it 30 ms apart. The
/// state follows: the fleet admits the limit plus at most what the
/// instances still on the old placement admitted after the first one
/// moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moved_under_load_keeps_its_limiter_state() {
    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let before = Placement::new(["main", "big"]).unwrap();
    let after = before.moved(partition("acme"), "big").unwrap();
    let quota = Quota::single(Limit::per_day(400)).unwrap();
    let admitted = Arc::new(AtomicU64::new(0));
    // Admissions by instances not yet moved while another has.
    let lagging = Arc::new(AtomicU64::new(0));
    let first_moved = Arc::new(AtomicBool::new(false));
    let mut stores = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let store = placed(&main, &big, before.clone()).await;
        stores.push(store.clone());
        let (quota, admitted, lagging, first_moved) = (
            quota.clone(),
            admitted.clone(),
            lagging.clone(),
            first_moved.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for _ in 0..250 {
                let on_old = store.placement().revision() == 1;
                if store.check("acme", &quota, 1).await.unwrap().is_allowed() {
                    admitted.fetch_add(1, Ordering::Relaxed);
                    if on_old && first_moved.load(Ordering::Relaxed) {
                        lagging.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }));
    }
    // Half-way through the budget, move, one instance at a time.
    while admitted.load(Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for s in &stores {
        s.set_placement(after.clone()).unwrap();
        first_moved.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (admitted, lagging) = (
        admitted.load(Ordering::Relaxed),
        lagging.load(Ordering::Relaxed),
    );
    // Without the copy, `big` would start afresh: up to 400 more.
    assert!(
        admitted <= 400 + lagging,
        "{admitted} admitted, {lagging} lagging"
    );
    assert!(admitted >= 400, "{admitted}");
    assert!(keys(&big).await >= 1);
}

/// What a placed store shows of itself: its deployments, the placement's
/// revision and the copy window (24 h unless set), never a connection.
#[tokio::test]
async fn debug_shows_the_deployments_and_the_copy_window() {
    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let store = placed(&main, &big, Placement::new(["main", "big"]).unwrap()).await;
    let shown = format!("{store:?}");
    for part in ["\"main\"", "\"big\"", "revision", "copy_window: 86400s"] {
        assert!(shown.contains(part), "{part} in {shown}");
    }
    assert!(!shown.contains("redis://"), "{shown}");
    let shown = format!("{:?}", store.copy_window(Duration::from_secs(90)));
    assert!(shown.contains("copy_window: 90s"), "{shown}");
}

/// acme (4 a day) spends one unit at home, moves to `big` and spends two
/// there, then the placement becomes `then(away)`: how many of five more
/// it is admitted.
async fn admitted_after(then: impl FnOnce(&Placement) -> Placement) -> usize {
    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let home = Placement::new(["main", "big"]).unwrap();
    let away = home.moved(partition("acme"), "big").unwrap();
    let last = then(&away);
    let store = placed(&main, &big, home).await;
    let quota = Quota::single(Limit::per_day(4)).unwrap();
    let admitted = |n| crate::support::admitted(&store, "acme", &quota, n, 1);
    assert_eq!(admitted(1).await, 1);
    store.set_placement(away).unwrap();
    assert_eq!(admitted(2).await, 2, "carried on from home's state");
    store.set_placement(last).unwrap();
    admitted(5).await
}

/// A partition moved and moved back within the copy window: its state
/// follows it both ways — moved back, the state it left at home is older
/// than the one it brings, and is replaced.
#[tokio::test]
async fn a_partition_moved_back_takes_its_state_back() {
    let back = admitted_after(|away| away.moved(partition("acme"), "main").unwrap()).await;
    assert_eq!(back, 1, "three of four spent, at home again");
}

/// Moved away, back and away again within the copy window: each move is a
/// new one — the marker the first move left on `big` does not stop the
/// third from bringing home's newer state.
#[tokio::test]
async fn a_partition_moved_away_again_takes_its_state_again() {
    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let home = Placement::new(["main", "big"]).unwrap();
    let acme = partition("acme");
    let away = home.moved(acme, "big").unwrap();
    let back = away.moved(acme, "main").unwrap();
    let again = back.moved(acme, "big").unwrap();
    let store = placed(&main, &big, home).await;
    let quota = Quota::single(Limit::per_day(6)).unwrap();
    let admitted = |n| crate::support::admitted(&store, "acme", &quota, n, 1);
    assert_eq!(admitted(1).await, 1);
    store.set_placement(away).unwrap();
    assert_eq!(admitted(2).await, 2);
    store.set_placement(back).unwrap();
    assert_eq!(admitted(1).await, 1);
    store.set_placement(again).unwrap();
    assert_eq!(admitted(5).await, 2, "four of six spent, away again");
}

/// Another partition's move is not this one's: decisions made on the new
/// home since this partition moved are not replaced by a second copy from
/// its old home when an unrelated partition moves (a new placement
/// revision) within the copy window.
#[tokio::test]
async fn another_partitions_move_does_not_copy_this_one_again() {
    let other = cog_testkit::placement::elsewhere("acme");
    let later = admitted_after(|away| away.moved(partition(&other), "big").unwrap()).await;
    assert_eq!(later, 1, "three of four spent, whatever else moved");
}

/// An instance that skipped the move's revision (two moves landed in one
/// poll: this partition's, then another's) names the move by a wider
/// range: whichever instance copies first, the other does not copy again
/// over what was decided since.
#[tokio::test]
async fn an_instance_that_skipped_the_moves_revision_does_not_copy_again() {
    for skipper_first in [false, true] {
        let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
        let [home, away, later] = cog_testkit::placement::two_moves("acme");
        let every = placed(&main, &big, home.clone()).await;
        let skipper = placed(&main, &big, home).await;
        let quota = Quota::single(Limit::per_day(4)).unwrap();
        assert_eq!(
            crate::support::admitted(&every, "acme", &quota, 1, 1).await,
            1
        );
        every.set_placement(away).unwrap();
        every.set_placement(later.clone()).unwrap();
        skipper.set_placement(later).unwrap();
        let (first, second) = if skipper_first {
            (&skipper, &every)
        } else {
            (&every, &skipper)
        };
        assert_eq!(
            crate::support::admitted(first, "acme", &quota, 2, 1).await,
            2
        );
        assert_eq!(
            crate::support::admitted(second, "acme", &quota, 5, 1).await,
            1,
            "the second instance goes on from the first's decisions (skipper first: {skipper_first})"
        );
    }
}

/// Leased mode: the ledger of units leased out follows a move with the
/// limit's state, so budget parked on another instance still does not
/// refuse a request on the new home (as on one deployment: at most a
/// lease more, never less than the limit).
#[tokio::test]
async fn the_lease_ledger_follows_a_move() {
    use cog_ratelimit::store::Leasing;
    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let home = Placement::new(["main", "big"]).unwrap();
    let leased = |leasing: Leasing| {
        let (main, big) = (main.url(), big.url());
        async move {
            let store = |url: String, leasing: Leasing| async move {
                RedisStore::new(client(&url).await)
                    .timeout(Duration::from_millis(500))
                    .local_deny(false)
                    .leased(leasing)
            };
            PlacedStore::new(
                Placement::new(["main", "big"]).unwrap(),
                [
                    ("main", store(main, leasing).await),
                    ("big", store(big, leasing).await),
                ],
            )
            .unwrap()
        }
    };
    let fast = leased(Leasing::new().lease_time(Duration::from_secs(60))).await;
    let other = leased(Leasing::new()).await;
    let quota = Quota::single(Limit::per_day(100)).unwrap();
    // `fast` builds up a lease at home, then stops spending it.
    for _ in 0..40 {
        assert!(fast.check("s", &quota, 1).await.unwrap().is_allowed());
    }
    let away = home.moved(partition("s"), "big").unwrap();
    fast.set_placement(away.clone()).unwrap();
    other.set_placement(away).unwrap();
    // `other` spends the rest on `big`, one by one, until refused.
    let mut admitted = 40;
    while other.check("s", &quota, 1).await.unwrap().is_allowed() {
        admitted += 1;
    }
    assert!((100..=125).contains(&admitted), "{admitted}");
}

/// A reset clears the subject on every deployment: a copy after a move
/// cannot bring the old state back.
#[tokio::test]
async fn a_reset_is_not_undone_by_a_later_copy() {
    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let home = Placement::new(["main", "big"]).unwrap();
    let store = placed(&main, &big, home.clone()).await;
    let quota = Quota::single(Limit::per_day(3)).unwrap();
    assert_eq!(
        crate::support::admitted(&store, "acme", &quota, 3, 1).await,
        3
    );
    store
        .set_placement(home.moved(partition("acme"), "big").unwrap())
        .unwrap();
    // Reset before the first decision on `big`, which copies from `main`.
    store.reset("acme", &quota).await.unwrap();
    assert_eq!(
        crate::support::admitted(&store, "acme", &quota, 5, 1).await,
        3,
        "a whole budget after the reset"
    );
}

/// A concurrency slot taken through a placed store is freed by releasing
/// its lease there.
#[tokio::test]
async fn a_released_slot_is_free_again() {
    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let store = placed(&main, &big, Placement::new(["main", "big"]).unwrap()).await;
    let slots = Quota::single(Limit::concurrency(1)).unwrap();
    let mut held = store.check("acme", &slots, 1).await.unwrap();
    assert!(held.is_allowed());
    assert!(!store.check("acme", &slots, 1).await.unwrap().is_allowed());
    store.release(held.take_lease().expect("a slot's lease"));
    let mut freed = false;
    for _ in 0..100 {
        let mut d = store.check("acme", &slots, 1).await.unwrap();
        if d.is_allowed() {
            freed = true;
            store.release(d.take_lease().unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(freed, "the released slot is free again");
}

/// After a move the first instance to decide for a subject copies its
/// state; another instance's first decision does not copy it again over
/// what the first has decided since.
#[tokio::test]
async fn one_copy_per_move_across_instances() {
    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let home = Placement::new(["main", "big"]).unwrap();
    let away = home.moved(partition("acme"), "big").unwrap();
    let a = placed(&main, &big, home.clone()).await;
    let b = placed(&main, &big, home).await;
    let quota = Quota::single(Limit::per_day(4)).unwrap();
    assert_eq!(crate::support::admitted(&a, "acme", &quota, 1, 1).await, 1);
    a.set_placement(away.clone()).unwrap();
    b.set_placement(away).unwrap();
    assert_eq!(crate::support::admitted(&a, "acme", &quota, 2, 1).await, 2);
    assert_eq!(
        crate::support::admitted(&b, "acme", &quota, 5, 1).await,
        1,
        "b goes on from a's decisions"
    );
    // Each instance reads the old home once for the subject, however many
    // decisions follow: the copy is remembered, not tried again.
    let dumps = match main.command(&["INFO", "commandstats"]).unwrap().as_text() {
        Some(info) => info
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_dump:calls="))
            .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .unwrap_or(0),
        None => 0,
    };
    assert_eq!(dumps, 2, "one read of the old home per instance");
}
