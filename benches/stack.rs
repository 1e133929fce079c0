//! The whole stack, in process: `stack/bare` is the demo's item handler
//! with no cog layers; `stack/cog` is the same request through every layer
//! (trace, API-key authentication, plan rate limit, plugin resolution,
//! HTTP cache — an L1 hit), in-memory backends.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tower::ServiceExt;

#[path = "../examples/demo/app.rs"]
mod app;

fn stack(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (demo, key) = rt.block_on(async {
        let config = app::Config {
            redis_url: None,
            store: format!("file:{}", dir.path().join("state.json").display()),
            upstream: Duration::ZERO,
            database: Duration::ZERO,
            poll: Duration::from_secs(3600),
            redis_timeout: Duration::from_millis(100),
        };
        let demo = app::build(&config).await.unwrap();
        let key = demo.demo_key.clone().unwrap();
        // A plan that never limits, so every request runs the whole path.
        demo.control
            .create_plan(
                "bench",
                cog_control::Plan {
                    limits: vec![cog_control::LimitSpec::parse("requests=1000000000/1s").unwrap()],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        demo.control
            .update_tenant("demo", |t| t.plan = "bench".into())
            .await
            .unwrap();
        demo.directory.refresh().await.unwrap();
        (demo, key)
    });
    let auth = format!("Bearer {key}");
    let request = |auth: Option<&str>| {
        let mut b = Request::get("/v1/items/1");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(axum::body::Body::empty()).unwrap()
    };
    // Warm the HTTP cache.
    let res = rt
        .block_on(demo.router.clone().oneshot(request(Some(&auth))))
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = rt
        .block_on(demo.router.clone().oneshot(request(Some(&auth))))
        .unwrap();
    assert!(
        res.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("hit")
    );

    let bare = app::bare();
    let mut g = c.benchmark_group("stack");
    g.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| async {
            let res = bare.clone().oneshot(request(None)).await.unwrap();
            assert_eq!(res.status(), 200);
        })
    });
    g.bench_function("cog", |b| {
        b.to_async(&rt).iter(|| async {
            let res = demo
                .router
                .clone()
                .oneshot(request(Some(&auth)))
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        })
    });
    g.finish();
}

criterion_group!(benches, stack);
criterion_main!(benches);
