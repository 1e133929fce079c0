//! The whole stack, in process: `stack/bare` is the demo's item handler
//! with no cog layers; `stack/cog` is the same request through every layer
//! (trace, API-key authentication, plan rate limit, plugin resolution,
//! HTTP cache — an L1 hit), in-memory backends, with no tracer or meter
//! provider installed; `stack/cog_sampled` is `stack/cog` as an operator
//! runs it: a real SDK tracer provider sampling every request (its batch
//! processor feeding an exporter that drops the spans) and the demo's
//! real meter provider (`cog_trace::prometheus`).
//!
//! For instruction counts (callgrind), `COG_STACK_COUNT=<what>:<n>` runs
//! `n` requests and exits instead of benchmarking: `bare`, `cog`
//! (`/v1/items/1` through every layer) or `healthz` (the demo's `/healthz`,
//! the trace layer only — the bare route of `scripts/bench-stack`).

use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter};

use criterion::{Criterion, criterion_group};
use http::Request;
use tower::ServiceExt;

use example_demo::app;

/// Takes every batch and drops it: the SDK does all its work, nothing is
/// sent.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        drop(batch);
        std::future::ready(Ok(()))
    }
}

/// The demo on in-memory backends, warmed: its key's plan never limits,
/// and `/v1/items/1` is in the HTTP cache.
fn warm_demo(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> (app::Demo, String) {
    let (demo, key) = rt.block_on(async {
        let config = app::Config {
            redis_url: None,
            store: format!("file:{}", dir.join("state.json").display()),
            upstream: Duration::ZERO,
            database: Duration::ZERO,
            poll: Duration::from_secs(3600),
            redis_timeout: Duration::from_millis(100),
            python: None,
            control_url: None,
            instances: 2,
            lease: None,
            ..app::Config::default()
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
    (demo, auth)
}

fn request(auth: Option<&str>) -> Request<axum::body::Body> {
    let mut b = Request::get("/v1/items/1");
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    b.body(axum::body::Body::empty()).unwrap()
}

/// `COG_STACK_COUNT=<what>:<n>`: `n` requests, no criterion.
fn count(spec: &str) {
    let (what, n) = spec.split_once(':').expect("COG_STACK_COUNT=<what>:<n>");
    let n: u64 = n.parse().expect("a request count");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (demo, auth) = warm_demo(&rt, dir.path());
    let bare = app::bare();
    rt.block_on(async {
        for _ in 0..n {
            let res = match what {
                "bare" => bare.clone().oneshot(request(None)).await,
                "cog" => demo.router.clone().oneshot(request(Some(&auth))).await,
                "healthz" => {
                    let req = Request::get("/healthz")
                        .body(axum::body::Body::empty())
                        .unwrap();
                    demo.router.clone().oneshot(req).await
                }
                other => panic!("no {other}: bare, cog or healthz"),
            };
            assert_eq!(res.unwrap().status(), 200);
        }
    });
}

fn stack(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Built before any provider is installed: layers bind to the globals
    // as they are when built.
    let (demo, auth) = warm_demo(&rt, dir.path());

    let sampled_dir = tempfile::tempdir().unwrap();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(Discard).build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let metrics = cog_trace::prometheus::Prometheus::new();
    metrics.install_global();
    let (sampled, sampled_auth) = warm_demo(&rt, sampled_dir.path());
    let res = rt
        .block_on(sampled.router.clone().oneshot(request(Some(&sampled_auth))))
        .unwrap();
    assert!(res.headers().contains_key("traceparent"), "sampled");

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
    g.bench_function("cog_sampled", |b| {
        b.to_async(&rt).iter(|| async {
            let res = sampled
                .router
                .clone()
                .oneshot(request(Some(&sampled_auth)))
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        })
    });
    g.finish();
    // Something was measured: the histogram holds the sampled requests.
    assert!(
        metrics
            .render()
            .contains("http_server_request_duration_seconds")
    );
    let _ = provider.shutdown();
}

criterion_group!(benches, stack);

fn main() {
    if let Ok(spec) = std::env::var("COG_STACK_COUNT") {
        count(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
