//! The demo across regions and across placement deployments, configured
//! as an operator would (`COG_REGION`/`COG_REGIONS`, `COG_DEPLOYMENTS`),
//! against real redis-servers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cog_core::placement::partition;
use cog_testkit::{RedisServer, Regions, Reply};
use example_demo::app;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

async fn serve(demo: &app::Demo) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = demo.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// `n` item reads as `key` (distinct ids: no cache hit); how many were
/// admitted.
async fn admitted(addr: SocketAddr, key: &str, n: usize, from: usize) -> usize {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut ok = 0;
    for i in from..from + n {
        let req = http::Request::get(format!("http://{addr}/v1/items/{i}"))
            .header("authorization", format!("Bearer {key}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = client.request(req).await.unwrap();
        ok += usize::from(res.status() == 200);
        let _ = res.into_body().collect().await;
    }
    ok
}

fn base() -> app::Config {
    app::Config {
        upstream: Duration::from_millis(1),
        database: Duration::ZERO,
        poll: Duration::from_millis(100),
        redis_timeout: Duration::from_millis(500),
        ..app::Config::default()
    }
}

/// Two regions, one instance each, a tenant on `free` (burst 20): its
/// limit is global — the two instances together admit the burst once, not
/// once per region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_limit_is_global_across_regions() {
    let regions = Regions::start(2, |_, _| Duration::from_millis(5))
        .await
        .unwrap();
    let names = ["eu", "us"];
    let config = |i: usize| app::Config {
        redis_url: Some(regions.url(i)),
        control_url: Some(if i == 0 {
            regions.url(0)
        } else {
            regions.link_url(1, 0)
        }),
        region: Some(names[i].into()),
        regions: (0..2)
            .map(|j| {
                let url = if j == i {
                    regions.url(i)
                } else {
                    regions.link_url(i, j)
                };
                (names[j].to_owned(), url)
            })
            .collect(),
        region_sync: Duration::from_millis(100),
        ..base()
    };
    let eu = app::build(&config(0)).await.unwrap();
    let key = eu.demo_key.clone().unwrap();
    let us = app::build(&config(1)).await.unwrap();
    us.directory.refresh().await.unwrap();
    let (a, b) = (serve(&eu).await, serve(&us).await);
    // Both regions see demand; shares settle within a few rounds (100 ms).
    admitted(a, &key, 1, 0).await;
    admitted(b, &key, 1, 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (x, y) = (
        admitted(a, &key, 40, 100).await,
        admitted(b, &key, 40, 200).await,
    );
    // Two regions deciding alone would admit 2 × 20 (+ refills).
    assert!(
        x + y <= 20 + 10,
        "eu {x} + us {y}: the burst admitted twice"
    );
    assert!(
        x > 0 && y > 0,
        "each region admits its share: eu {x}, us {y}"
    );
}

fn keys_with(server: &RedisServer, pattern: &str) -> usize {
    match server.command(&["KEYS", pattern]).unwrap() {
        Reply::Array(Some(keys)) => keys.len(),
        other => panic!("{other:?}"),
    }
}

/// Two deployments: the demo tenant's limiter state lives on its
/// partition's deployment, and follows a `move_partition` made while the
/// instance runs — the burst spent before the move stays spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_follows_its_partition_across_deployments() {
    let (d0, d1) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let config = app::Config {
        redis_url: Some(d0.url()),
        deployments: vec![("d0".into(), d0.url()), ("d1".into(), d1.url())],
        ..base()
    };
    let demo = Arc::new(app::build(&config).await.unwrap());
    let key = demo.demo_key.clone().unwrap();
    demo.control.add_deployment("d0").await.unwrap();
    demo.control.add_deployment("d1").await.unwrap();
    demo.directory.refresh().await.unwrap();
    let addr = serve(&demo).await;

    assert_eq!(admitted(addr, &key, 15, 0).await, 15);
    let limiter_keys = "cog:rl:*";
    assert!(keys_with(&d0, limiter_keys) > 0);
    assert_eq!(keys_with(&d1, limiter_keys), 0);

    let moved = demo
        .control
        .move_partition(partition("demo"), "d1")
        .await
        .unwrap();
    demo.directory.refresh().await.unwrap();
    assert_eq!(
        demo.directory.placement().unwrap().revision(),
        moved.revision
    );
    // 5 of the burst of 20 left (plus what refilled: 10/s).
    let after = admitted(addr, &key, 15, 100).await;
    assert!(after <= 5 + 3, "the move reset the limit: {after} admitted");
    assert!(keys_with(&d1, limiter_keys) > 0, "state on d1 now");
    // The HTTP cache's entries went to d1 too.
    assert!(keys_with(&d1, "cog:pages:*") > 0);
}
