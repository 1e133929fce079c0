//! The in-memory store under real thread contention.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cog_ratelimit::store::MemoryStore;
use cog_ratelimit::{Limit, Quota};

fn hammer(quota: Quota, threads: usize, attempts: usize) -> u64 {
    let store = Arc::new(MemoryStore::new());
    let admitted = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (store, quota, admitted) = (store.clone(), quota.clone(), admitted.clone());
            std::thread::spawn(move || {
                for _ in 0..attempts {
                    if store.check_now("hot", &quota, 1).unwrap().is_allowed() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    admitted.load(Ordering::Relaxed)
}

#[test]
fn threads_hammering_one_key_never_exceed_the_limit() {
    // Single GCRA limit: the compare-and-swap path.
    assert_eq!(
        hammer(Quota::single(Limit::per_day(1000)).unwrap(), 8, 2000),
        1000
    );
    // Several limits: the locked all-or-nothing path.
    let multi = Quota::new([
        Limit::per_day(700),
        Limit::sliding_window(800, Duration::from_secs(3600)),
    ])
    .unwrap();
    assert_eq!(hammer(multi, 8, 2000), 700);
    let window = Quota::single(Limit::sliding_window(500, Duration::from_secs(3600))).unwrap();
    assert_eq!(hammer(window, 8, 2000), 500);
}

/// `Store::reset` forgets the subject for that quota only: a whole budget
/// again, other subjects and quotas untouched.
#[tokio::test]
async fn reset_gives_back_the_whole_budget_of_one_subject() {
    use cog_ratelimit::store::Store;
    let store = MemoryStore::new();
    let day = Quota::single(Limit::per_day(2)).unwrap();
    let hour = Quota::single(Limit::per_hour(2)).unwrap();
    for (subject, quota) in [("a", &day), ("b", &day), ("a", &hour)] {
        for _ in 0..2 {
            assert!(store.check(subject, quota, 1).await.unwrap().is_allowed());
        }
    }
    store.reset("a", &day).await.unwrap();
    assert!(store.check("a", &day, 2).await.unwrap().is_allowed());
    assert!(!store.check("b", &day, 1).await.unwrap().is_allowed());
    assert!(!store.check("a", &hour, 1).await.unwrap().is_allowed());
    assert!(
        !store.is_remote(),
        "decided in process: no span per decision"
    );
}
