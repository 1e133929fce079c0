//! The Redis store against the memory store on the same random traces: the
//! same admit/deny sequence and the same remaining counts.
//!
//! Limits are per day, so nothing refills while a trace runs and both
//! stores see the same state whatever their clocks say.

use std::time::Duration;

use cog_ratelimit::store::{MemoryStore, Store};
use cog_ratelimit::{Limit, Quota};
use cog_testkit::RedisServer;
use proptest::prelude::*;

use crate::support::store;

fn limit() -> impl Strategy<Value = Limit> {
    prop_oneof![
        (1u64..20, 1u64..20).prop_map(|(count, burst)| Limit::per_day(count).burst(burst)),
        (1u64..20).prop_map(|max| Limit::sliding_window(max, Duration::from_secs(86_400))),
    ]
}

fn case() -> impl Strategy<Value = (Vec<Limit>, Vec<u64>)> {
    (
        proptest::collection::vec(limit(), 1..4),
        proptest::collection::vec(0u64..6, 1..40),
    )
}

#[test]
fn redis_decides_what_memory_decides() {
    let server = RedisServer::start().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let redis = rt.block_on(store(&server.url())).local_deny(false);
    let subjects = std::sync::atomic::AtomicU64::new(0);
    let config = ProptestConfig::with_cases(64);
    proptest::test_runner::TestRunner::new(config)
        .run(&case(), |(limits, costs)| {
            let Ok(quota) = Quota::new(
                limits
                    .iter()
                    .enumerate()
                    .map(|(i, l)| l.clone().named(format!("l{i}"))),
            ) else {
                return Ok(());
            };
            let n = subjects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let subject = format!("s{n}");
            let memory = MemoryStore::new();
            for (i, &cost) in costs.iter().enumerate() {
                let ours = rt.block_on(redis.check(&subject, &quota, cost)).unwrap();
                let theirs = memory.check_now(&subject, &quota, cost).unwrap();
                prop_assert_eq!(
                    ours.is_allowed(),
                    theirs.is_allowed(),
                    "request {} ({:?})",
                    i,
                    &costs[..=i]
                );
                let remaining = |d: &cog_ratelimit::Decision| {
                    d.statuses().iter().map(|s| s.remaining).collect::<Vec<_>>()
                };
                prop_assert_eq!(
                    remaining(&ours),
                    remaining(&theirs),
                    "request {} ({:?})",
                    i,
                    &costs[..=i]
                );
            }
            Ok(())
        })
        .unwrap();
}
