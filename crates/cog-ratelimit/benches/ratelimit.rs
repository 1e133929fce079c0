//! cog-ratelimit's hot paths, side by side with `governor`.
//!
//! - `ratelimit_memory/{cog,governor}`: one hot key, same quota (10⁹/s, so
//!   every check is admitted and both take their common path).
//! - `ratelimit_memory_many_keys/{cog,governor}`: 10 000 keys round-robin.
//! - `ratelimit_redis/cog`: one decision against a local redis-server
//!   (one round trip, sequential).
//! - `ratelimit_redis/cog_32_tasks`: decisions from 32 concurrent tasks on
//!   one client; the throughput to compare with the server's own limit
//!   (`scripts/bench-redis-decisions` runs it next to redis-benchmark).
//! - `ratelimit_redis_leased/cog`: one hot key under its limit through the
//!   leased mode (`RedisStore::leased`), leases of up to 4 096 units: most
//!   decisions spend a local lease, one in 4 097 is a Redis round trip that
//!   renews it. `ratelimit_redis_leased/cog_256`: the default 256 units.
//! - `ratelimit_redis/fred_32_tasks`: the same, calling fred directly with
//!   the same script and arguments: the floor cog's client side sits on.

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cog_ratelimit::store::{Leasing, MemoryStore, RedisStore, Store};
use cog_ratelimit::{Limit, Quota};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const RATE: u32 = 1_000_000_000;

fn quotas() -> (Quota, governor::Quota) {
    (
        Quota::single(Limit::per_second(RATE as u64)).unwrap(),
        governor::Quota::per_second(NonZeroU32::new(RATE).unwrap()),
    )
}

fn memory(c: &mut Criterion) {
    let (cog_q, gov_q) = quotas();
    let mut g = c.benchmark_group("ratelimit_memory");
    g.throughput(Throughput::Elements(1));

    let store = MemoryStore::new();
    let key = "tenant-42";
    g.bench_function("cog", |b| {
        b.iter(|| {
            black_box(
                store
                    .check_now(black_box(key), &cog_q, 1)
                    .unwrap()
                    .is_allowed(),
            )
        })
    });

    let gov = governor::RateLimiter::keyed(gov_q);
    let gkey = key.to_owned();
    g.bench_function("governor", |b| {
        b.iter(|| black_box(gov.check_key(black_box(&gkey)).is_ok()))
    });
    g.finish();
}

fn memory_many_keys(c: &mut Criterion) {
    let (cog_q, gov_q) = quotas();
    let keys: Vec<String> = (0..10_000).map(|i| format!("tenant-{i}")).collect();
    let mut g = c.benchmark_group("ratelimit_memory_many_keys");
    g.throughput(Throughput::Elements(1));

    let store = MemoryStore::new();
    let mut i = 0;
    g.bench_function("cog", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(store.check_now(&keys[i], &cog_q, 1).unwrap().is_allowed())
        })
    });

    let gov = governor::RateLimiter::keyed(gov_q);
    let mut i = 0;
    g.bench_function("governor", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(gov.check_key(&keys[i]).is_ok())
        })
    });
    g.finish();
}

/// A local redis-server, a runtime and a store on it; `None` (the group
/// skipped) without redis-server.
fn redis_setup(
    group: &str,
) -> Option<(
    cog_testkit::RedisServer,
    tokio::runtime::Runtime,
    RedisStore,
)> {
    let server = match cog_testkit::RedisServer::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping {group}: {e}");
            return None;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        // One client thread against the server's one, as redis-benchmark
        // runs: on this 2-core machine a second worker only fights
        // redis-server for its core (cross-thread wakeups; 75 k/s instead
        // of 114 k/s on 2026-12-05).
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(async {
        let client = cog_ratelimit::store::connect(&server.url()).await.unwrap();
        RedisStore::new(client).timeout(Duration::from_secs(5))
    });
    Some((server, rt, store))
}

fn redis(c: &mut Criterion) {
    let Some((_server, rt, store)) = redis_setup("ratelimit_redis") else {
        return;
    };
    let store = Arc::new(store.local_deny(false));
    let quota = Quota::new([Limit::per_second(RATE as u64)]).unwrap();
    let mut g = c.benchmark_group("ratelimit_redis");
    g.throughput(Throughput::Elements(1));
    g.bench_function("cog", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                store
                    .check("tenant-42", &quota, 1)
                    .await
                    .unwrap()
                    .is_allowed(),
            )
        })
    });
    g.bench_function("cog_32_tasks", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (store, quota) = (store.clone(), quota.clone());
            async move {
                let per_task = iters.div_ceil(32);
                let start = Instant::now();
                let tasks: Vec<_> = (0..32)
                    .map(|t| {
                        let (store, quota) = (store.clone(), quota.clone());
                        tokio::spawn(async move {
                            let key = format!("tenant-{t}");
                            for _ in 0..per_task {
                                black_box(store.check(&key, &quota, 1).await.unwrap());
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed()
            }
        })
    });
    let client = store.client().clone();
    let sha: String = rt.block_on(async {
        use fred::interfaces::LuaInterface;
        client
            .script_load(include_str!("../src/store/redis_gcra.lua"))
            .await
            .unwrap()
    });
    g.bench_function("fred_32_tasks", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (client, sha) = (client.clone(), sha.clone());
            async move {
                use fred::interfaces::LuaInterface;
                let per_task = iters.div_ceil(32);
                let start = Instant::now();
                let tasks: Vec<_> = (0..32)
                    .map(|t| {
                        let (client, sha) = (client.clone(), sha.clone());
                        tokio::spawn(async move {
                            let key =
                                format!("cog:rl:{{tenant-{t}}}:g1000000000/1000000000b1000000000");
                            for _ in 0..per_task {
                                let r: i64 = client
                                    .evalsha(
                                        &sha,
                                        vec![key.as_str()],
                                        vec!["1", "0.001", "1000000.000"],
                                    )
                                    .await
                                    .unwrap();
                                black_box(r);
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed()
            }
        })
    });
    g.finish();
}

fn redis_leased(c: &mut Criterion) {
    let Some((_server, rt, store)) = redis_setup("ratelimit_redis_leased") else {
        return;
    };
    let quota = Quota::single(Limit::per_second(RATE as u64)).unwrap();
    let mut g = c.benchmark_group("ratelimit_redis_leased");
    g.throughput(Throughput::Elements(1));
    // `cog`: leases of up to 4 096 units (a hot key's: one round trip per
    // 4 097 decisions); `cog_256`: the default 256 (one per 257).
    for (id, units) in [("cog", 4_096), ("cog_256", 256)] {
        let store = store.clone().leased(Leasing::new().max_units(units));
        // Every call through the store's API. The future is polled once in
        // place (a leased decision is ready then); a renewal goes on to the
        // runtime.
        g.bench_function(id, |b| {
            let _guard = rt.enter();
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            b.iter(|| {
                let mut f = std::pin::pin!(store.check(black_box("tenant-42"), &quota, 1));
                let d = match f.as_mut().poll(&mut cx) {
                    std::task::Poll::Ready(d) => d,
                    std::task::Poll::Pending => rt.block_on(f),
                };
                black_box(d.unwrap().is_allowed())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, memory, memory_many_keys, redis, redis_leased);
criterion_main!(benches);
