//! The admin API's read endpoints at 10 000 tenants on a real Redis store:
//! one tenant, a page of 100, the first read after a write through the
//! same API (which keeps the state it wrote), and after a write by another
//! process (which makes it reload the whole document). Prints p50/p99 of each over 2000 calls
//! besides criterion's figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use cog_control::admin::Admin;
use cog_control::store::RedisStore;
use cog_control::{Control, Scope, Tenant};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

const TENANTS: usize = 10_000;

async fn get(router: &Router, token: &str, path: &str) {
    let req = Request::get(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    assert!(res.status().is_success(), "{path}: {}", res.status());
    let _ = res.into_body().collect().await.unwrap();
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = cog_testkit::RedisServer::start().unwrap();
    let (router, control, token) = rt.block_on(async {
        let store = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
        let control = Control::new(store);
        control
            .update(|s| {
                s.spec.plans.insert(
                    "free".into(),
                    cog_control::Plan {
                        limits: vec![cog_control::LimitSpec::parse("rps=10/1s,burst=20").unwrap()],
                        ..Default::default()
                    },
                );
                for i in 0..TENANTS {
                    let mut t = Tenant::new("free");
                    t.display_name = format!("Tenant {i}");
                    t.metadata.insert("region".into(), "eu".into());
                    s.spec.tenants.insert(format!("t{i:05}"), t);
                }
                Ok(())
            })
            .await
            .unwrap();
        let token = control.create_token("bench", Scope::Write).await.unwrap();
        (Admin::new(control.clone()).router(), control, token.secret)
    });
    // Another process's handle on the same store (the CLI, another
    // instance of the API): its writes make the API reload the document.
    let foreign = rt.block_on(async {
        Control::new(Arc::new(RedisStore::connect(&server.url()).await.unwrap()))
    });
    let mut g = c.benchmark_group("admin_read");
    g.bench_function("tenant_get", |b| {
        b.to_async(&rt)
            .iter(|| get(&router, &token, "/v1/tenants/t04242"));
    });
    g.bench_function("tenants_page_100", |b| {
        b.to_async(&rt)
            .iter(|| get(&router, &token, "/v1/tenants?limit=100&cursor=t05000"));
    });
    g.sample_size(20);
    g.bench_function("tenant_get_after_write", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (router, control, token) = (router.clone(), control.clone(), token.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    control
                        .set_status("t00001", cog_control::Status::Active)
                        .await
                        .unwrap();
                    let t = Instant::now();
                    get(&router, &token, "/v1/tenants/t04242").await;
                    total += t.elapsed();
                }
                total
            }
        });
    });
    g.bench_function("tenant_get_after_foreign_write", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (router, control, token) = (router.clone(), foreign.clone(), token.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    control
                        .set_status("t00001", cog_control::Status::Active)
                        .await
                        .unwrap();
                    let t = Instant::now();
                    get(&router, &token, "/v1/tenants/t04242").await;
                    total += t.elapsed();
                }
                total
            }
        });
    });
    g.finish();

    // p50 / p99 over 2000 calls each (the read-after-write one: 200).
    rt.block_on(async {
        for (name, path, n, writer) in [
            ("tenant_get", "/v1/tenants/t04242", 2000, None),
            (
                "tenants_page_100",
                "/v1/tenants?limit=100&cursor=t05000",
                2000,
                None,
            ),
            (
                "tenant_get_after_write",
                "/v1/tenants/t04242",
                200,
                Some(&control),
            ),
            (
                "tenant_get_after_foreign_write",
                "/v1/tenants/t04242",
                200,
                Some(&foreign),
            ),
        ] {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                if let Some(control) = writer {
                    control
                        .set_status("t00001", cog_control::Status::Active)
                        .await
                        .unwrap();
                }
                let t = Instant::now();
                get(&router, &token, path).await;
                v.push(t.elapsed());
            }
            let (p50, p99) = percentiles(v);
            eprintln!("admin_read/{name}: p50 {p50:?} p99 {p99:?} ({TENANTS} tenants, Redis)");
        }
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
