//! cog-cache's hot paths, side by side with quick_cache and moka.
//!
//! - `cache_l1_hit/{cog,quick_cache,moka}`: a hit on one of 1 000 warm
//!   keys; values are 64-byte `String`s (cloned out by all three).
//!   `cog` is the read-through `get_or_load`; `cog_get_fresh` the
//!   synchronous L1 read; quick_cache is the raw `get`; moka is its future
//!   cache's `get_with`. A hit completes on its first poll, so the two
//!   async calls are polled once in place (`now_or_never`), as the sync
//!   ones are called: every id measures the call, not an executor.
//! - `cache_l2_hit/cog`: L1 miss, Redis hit (L1 TTL of 1 ns).
//! - `cache_http_hit/cog`: a cached 4 KB response through the tower layer.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use cog_cache::TieredCache;
use cog_cache::http::{HttpCacheLayer, StoredResponse};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt as _;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, ServiceExt, service_fn};

const KEYS: usize = 1000;

fn value() -> String {
    "v".repeat(64)
}

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("user:{i}")).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn l1_hit(c: &mut Criterion) {
    let rt = runtime();
    let keys = keys();
    let mut g = c.benchmark_group("cache_l1_hit");
    g.throughput(Throughput::Elements(1));

    let cog: TieredCache<String, String> = TieredCache::builder().build().unwrap();
    rt.block_on(async {
        for k in &keys {
            cog.insert(k.clone(), value()).await;
        }
    });
    let mut i = 0;
    g.bench_function("cog", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let hit = cog
                .get_or_load(&keys[i], || async { Ok::<_, ()>(value()) })
                .now_or_never()
                .expect("a hit completes at once");
            black_box(hit.unwrap())
        })
    });

    let mut i = 0;
    g.bench_function("cog_get_fresh", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(cog.get_fresh(&keys[i]).unwrap())
        })
    });

    let qc: quick_cache::sync::Cache<String, String> = quick_cache::sync::Cache::new(KEYS * 2);
    for k in &keys {
        qc.insert(k.clone(), value());
    }
    let mut i = 0;
    g.bench_function("quick_cache", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(qc.get(&keys[i]).unwrap())
        })
    });

    let moka: moka::future::Cache<String, String> = moka::future::Cache::new(KEYS as u64 * 2);
    rt.block_on(async {
        for k in &keys {
            moka.insert(k.clone(), value()).await;
        }
    });
    let mut i = 0;
    g.bench_function("moka", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let hit = moka
                .get_with(keys[i].clone(), async { value() })
                .now_or_never()
                .expect("a hit completes at once");
            black_box(hit)
        })
    });
    g.finish();
}

fn l2_hit(c: &mut Criterion) {
    let server = match cog_testkit::RedisServer::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping cache_l2_hit: {e}");
            return;
        }
    };
    let rt = runtime();
    let keys = keys();
    let cache: TieredCache<String, String> = rt.block_on(async {
        let client = fred::prelude::Builder::from_config(
            fred::prelude::Config::from_url(&server.url()).unwrap(),
        )
        .build()
        .unwrap();
        fred::prelude::ClientLike::init(&client).await.unwrap();
        let cache = TieredCache::builder()
            .redis(client)
            .schema("bench-v1")
            .redis_timeout(Duration::from_secs(5))
            .l1_ttl(Duration::from_nanos(1))
            .build()
            .unwrap();
        for k in &keys {
            cache.insert(k.clone(), value()).await;
        }
        cache
    });
    let mut g = c.benchmark_group("cache_l2_hit");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("cog", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % KEYS;
            let key = &keys[i];
            let cache = &cache;
            async move {
                black_box(
                    cache
                        .get_or_load(key, || async {
                            Err::<String, _>("L2 should have answered")
                        })
                        .await
                        .unwrap(),
                )
            }
        })
    });
    g.finish();
}

fn http_hit(c: &mut Criterion) {
    let rt = runtime();
    let cache: TieredCache<String, StoredResponse> = TieredCache::builder().build().unwrap();
    let body = Bytes::from("x".repeat(4096));
    let origin = service_fn(move |_req: Request<Full<Bytes>>| {
        let body = body.clone();
        async move {
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .header("cache-control", "max-age=3600")
                    .header("content-type", "text/plain")
                    .body(Full::new(body))
                    .unwrap(),
            )
        }
    });
    let svc = HttpCacheLayer::new(cache).layer(origin);
    let req = || {
        Request::get("/items/42")
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    rt.block_on(svc.clone().oneshot(req())).unwrap();
    let mut g = c.benchmark_group("cache_http_hit");
    g.throughput(Throughput::Elements(1));
    g.bench_function("cog", |b| {
        b.to_async(&rt).iter(|| {
            let svc = svc.clone();
            async move {
                let res = svc.oneshot(req()).await.unwrap();
                debug_assert!(
                    res.headers()["cache-status"]
                        .to_str()
                        .unwrap()
                        .contains("hit")
                );
                black_box(res)
            }
        })
    });
    g.finish();
}

criterion_group!(benches, l1_hit, l2_hit, http_hit);
criterion_main!(benches);
