//! `MemoryStore`'s GCRA against `governor` on random request traces: the
//! same quota must admit and deny the same requests.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use governor::{Quota as GovernorQuota, RateLimiter};
use proptest::prelude::*;

use super::memory::MemoryStore;
use crate::quota::{Limit, Quota};

/// One request: after `wait` nanoseconds, ask for `cost` units.
#[derive(Debug, Clone, Copy)]
struct Request {
    wait: u64,
    cost: u32,
}

fn trace(t: u64) -> impl Strategy<Value = Vec<Request>> {
    // Waits around the emission interval, with exact multiples of it (the
    // boundaries) as likely as anything in between.
    let wait = prop_oneof![
        3 => 0..3 * t,
        1 => (0u64..4).prop_map(move |k| k * t),
        1 => Just(0u64),
    ];
    proptest::collection::vec(
        (wait, 1u32..4).prop_map(|(wait, cost)| Request { wait, cost }),
        1..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn memory_store_admits_what_governor_admits(
        (t, burst, requests) in (1_000u64..50_000_000, 1u32..8)
            .prop_flat_map(|(t, burst)| (Just(t), Just(burst), trace(t)))
    ) {
        let (clock, mock) = quanta::Clock::mock();
        let store = MemoryStore::with_clock(clock);
        // One unit per `t` nanoseconds, `burst` at once.
        let count = 1_000;
        let quota = Quota::single(
            Limit::gcra(count, Duration::from_nanos(t * count)).burst(u64::from(burst)),
        )
        .unwrap();
        let fake = FakeRelativeClock::default();
        let governor = RateLimiter::direct_with_clock(
            GovernorQuota::with_period(Duration::from_nanos(t))
                .unwrap()
                .allow_burst(NonZeroU32::new(burst).unwrap()),
            fake.clone(),
        );
        for (i, r) in requests.iter().enumerate() {
            mock.increment(Duration::from_nanos(r.wait));
            fake.advance(Duration::from_nanos(r.wait));
            let ours = store.check_now("s", &quota, u64::from(r.cost)).unwrap().is_allowed();
            let theirs = matches!(governor.check_n(NonZeroU32::new(r.cost).unwrap()), Ok(Ok(())));
            prop_assert_eq!(ours, theirs, "request {} of {:?}", i, &requests[..=i]);
        }
    }
}
