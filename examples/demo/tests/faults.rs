//! The fault suite: two demo instances against one real Redis, and what
//! happens to them when Redis dies, comes back, or freezes, and when a
//! tenant installs a plugin that never returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cog_testkit::RedisServer;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use example_demo::app;

struct Instance {
    addr: SocketAddr,
    demo: Arc<app::Demo>,
}

async fn start(url: &str) -> Instance {
    let config = app::Config {
        redis_url: Some(url.to_owned()),
        store: String::new(),
        upstream: Duration::from_millis(20),
        database: Duration::from_millis(1),
        poll: Duration::from_millis(200),
        redis_timeout: Duration::from_millis(100),
        python: None,
        control_url: None,
        instances: 2,
        lease: None,
        ..app::Config::default()
    };
    let demo = Arc::new(app::build(&config).await.expect("the demo builds"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = demo.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Instance { addr, demo }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One request; a request that does not answer within 10 s fails the
/// test (a hang, not a slow answer).
async fn send(
    c: &HttpClient,
    to: &Instance,
    method: Method,
    path: &str,
    key: &str,
    body: &str,
) -> (StatusCode, String, String) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", to.addr))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), c.request(req))
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer within 10 s"))
        .unwrap();
    let status = res.status();
    let cache = res
        .headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, cache, String::from_utf8_lossy(&body).into_owned())
}

async fn complete(
    c: &HttpClient,
    to: &Instance,
    key: &str,
    prompt: &str,
) -> (StatusCode, String, String) {
    send(
        c,
        to,
        Method::POST,
        "/v1/complete",
        key,
        &format!("{{\"prompt\": \"{prompt}\"}}"),
    )
    .await
}

/// A tenant on a plan of 20 a minute, and its key.
async fn tight_tenant(a: &Instance, id: &str) -> String {
    let c = &a.demo.control;
    let _ = c
        .create_plan(
            "tight",
            cog_control::Plan {
                limits: vec![cog_control::LimitSpec::parse("requests=20/1m").unwrap()],
                ..Default::default()
            },
        )
        .await;
    c.create_tenant(id, cog_control::Tenant::new("tight"))
        .await
        .unwrap();
    c.create_key(id, None).await.unwrap().secret
}

async fn wait_for_key(instances: &[&Instance], key: &str) {
    for _ in 0..100 {
        if instances
            .iter()
            .all(|i| i.demo.directory.authenticate(key).is_ok())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the new key did not reach every instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load() {
    let server = RedisServer::start().unwrap();
    let a = start(&server.url()).await;
    let b = start(&server.url()).await;
    let http = client();
    let key = tight_tenant(&a, "acme").await;
    wait_for_key(&[&a, &b], &key).await;

    // Shared state: the limit holds across both instances, and a
    // completion computed on one is found by the other (L2).
    let mut ok = 0;
    for i in 0..40 {
        let to = if i % 2 == 0 { &a } else { &b };
        let (status, _, _) =
            send(&http, to, Method::GET, &format!("/v1/items/{i}"), &key, "").await;
        assert!(
            status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS,
            "{status}"
        );
        ok += usize::from(status == StatusCode::OK);
    }
    // 20 a minute refills one every 3 s: a slow run may see one more.
    assert!(
        (20..=21).contains(&ok),
        "one shared budget of 20 across both instances, not 2 × 20: {ok}"
    );
    let other = tight_tenant(&a, "bigco").await;
    wait_for_key(&[&a, &b], &other).await;
    let (s, cache, answer) = complete(&http, &a, &other, "hello").await;
    assert_eq!(
        (s, cache.as_str()),
        (StatusCode::OK, "cog; fwd=miss; stored")
    );
    let (s, cache, again) = complete(&http, &b, &other, "hello").await;
    assert_eq!(
        (s, cache.as_str(), &again),
        (StatusCode::OK, "cog; hit", &answer),
        "L2 hit on the other instance"
    );
    assert_eq!(
        b.demo
            .counters
            .model_calls
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // Redis dies.
    server.kill().unwrap();
    let mut statuses = Vec::new();
    for i in 0..30 {
        let to = if i % 2 == 0 { &a } else { &b };
        let (s, cache, body) = complete(&http, to, &other, "hello").await;
        statuses.push(s);
        if s == StatusCode::OK {
            assert_eq!(body, answer, "the cached answer is still served");
            assert_eq!(cache, "cog; hit");
        }
    }
    assert!(
        statuses.iter().all(|s| !s.is_server_error()),
        "no 5xx: {statuses:?}"
    );
    // The local fallback enforces each instance's share (20 / 2 = 10 a
    // minute): the tenant's 31 requests cannot all pass.
    let passed = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert!(passed >= 2, "requests still served: {statuses:?}");
    assert!(passed <= 22, "limits still enforced: {statuses:?}");
    // A prompt never seen: L1 misses, L2 is gone, the model answers.
    let (s, cache, _) = complete(&http, &a, &other, "while redis is down").await;
    assert!(
        s == StatusCode::OK || s == StatusCode::TOO_MANY_REQUESTS,
        "{s}"
    );
    if s == StatusCode::OK {
        assert_eq!(cache, "cog; fwd=miss; stored");
    }

    // Redis is back (empty: no persistence): the instances use it again
    // without a restart — a new answer computed on one is found by the
    // other through L2.
    server.restart().unwrap();
    let third = tight_tenant(&a, "carol").await;
    wait_for_key(&[&a, &b], &third).await;
    let mut shared = false;
    for attempt in 0..50 {
        let prompt = format!("after restart {attempt}");
        let (s, _, _) = complete(&http, &a, &third, &prompt).await;
        assert_eq!(s, StatusCode::OK);
        let (s, cache, _) = complete(&http, &b, &third, &prompt).await;
        assert_eq!(s, StatusCode::OK);
        if cache == "cog; hit" {
            shared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(shared, "L2 never shared again after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_bounds_latency_instead_of_hanging() {
    let server = RedisServer::start().unwrap();
    let a = start(&server.url()).await;
    let http = client();
    let key = a.demo.demo_key.clone().expect("a fresh store is seeded");
    let (s, _, _) = complete(&http, &a, &key, "warm").await;
    assert_eq!(s, StatusCode::OK);

    server.pause().unwrap();
    // Every request answers while Redis is still frozen: bounded by the
    // configured timeouts and the circuit breaker, never by Redis.
    let started = std::time::Instant::now();
    for i in 0..10 {
        let (s, _, _) = complete(&http, &a, &key, &format!("p{}", i % 3)).await;
        assert!(!s.is_server_error(), "{s}");
    }
    let (s, _, _) = send(&http, &a, Method::GET, "/v1/items/1", &key, "").await;
    assert!(!s.is_server_error(), "{s}");
    let frozen_for = started.elapsed();
    server.resume().unwrap();
    eprintln!("11 requests answered in {frozen_for:?} with Redis frozen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_never_returns_affects_only_its_tenant() {
    let server = RedisServer::start().unwrap();
    let a = start(&server.url()).await;
    let http = client();
    let victim = tight_tenant(&a, "spinner").await;
    let bystander = a.demo.demo_key.clone().unwrap();
    let spin = wat::parse_str(
        r#"(module
             (memory (export "memory") 1)
             (func (export "cog_abi_version") (result i32) i32.const 1)
             (func (export "cog_on_request") (result i32) (loop $l (br $l)) i32.const 0))"#,
    )
    .unwrap();
    // Installed mid-load.
    let load = {
        let (http, key) = (http.clone(), bystander.clone());
        let a = Instance {
            addr: a.addr,
            demo: a.demo.clone(),
        };
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..15 {
                statuses.push(
                    send(&http, &a, Method::GET, &format!("/v1/items/{i}"), &key, "")
                        .await
                        .0,
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            statuses
        })
    };
    a.demo
        .control
        .install_plugin(
            "spin",
            &spin,
            cog_control::PluginSpec {
                attach: cog_control::Attach {
                    tenants: vec!["spinner".into()],
                    plans: vec![],
                },
                limits: Some(cog_control::PluginLimits {
                    fuel: Some(u64::MAX / 2),
                    memory_bytes: None,
                    deadline: Some(cog_control::Window(Duration::from_millis(30))),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let revision = a.demo.control.state().await.unwrap().revision;
    for _ in 0..100 {
        if a.demo.directory.revision() >= revision {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(a.demo.directory.revision() >= revision);
    // The spinner's plugin is resolved for its requests …
    let mut parts = Request::get("/").body(()).unwrap().into_parts().0;
    parts
        .extensions
        .insert(a.demo.directory.tenant("spinner").unwrap());
    let resolved = cog_sandbox::layer::PluginResolver::resolve(&a.demo.directory, &parts);
    assert_eq!(resolved.plugins.len(), 1);
    // … never returns on its own, and the deadline ends it: the request is
    // answered (the plugin's changes dropped, the default policy) instead
    // of hanging past the 10 s bound.
    for i in 0..3 {
        let (s, _, _) = send(
            &http,
            &a,
            Method::GET,
            &format!("/v1/items/s{i}"),
            &victim,
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    // … and everyone else is served as before.
    let statuses = load.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
}
