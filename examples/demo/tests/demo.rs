//! The demo as an operator sees it: one request is one trace from the
//! server span down to each Redis call, and a SIGTERM — what systemd,
//! Docker and Kubernetes send — drains requests in flight and exports
//! their spans before the process exits.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cog_testkit::{OtlpReceiver, ReceivedSpan, RedisServer};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use example_demo::{app, metrics, serve};

const CHILD: &str = "COG_DEMO_TEST_CHILD";

async fn post(addr: SocketAddr, path: &str, key: &str, body: &str) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let res = client.request(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::get(format!("http://{addr}{path}"))
        .body(Full::default())
        .unwrap();
    let res = client.request(req).await.unwrap();
    let status = res.status();
    let ctype = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8_lossy(&body).into_owned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The demo process: started as an orchestrator starts it, then stopped
/// with SIGTERM while a slow request is in flight.
#[test]
fn sigterm_drains_requests_in_flight_and_exports_their_spans() {
    if std::env::var_os(CHILD).is_some() {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(serve::run())
            .unwrap();
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = rt.block_on(OtlpReceiver::start()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "sigterm_drains_requests_in_flight_and_exports_their_spans",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("COG_LISTEN", addr.to_string())
        .env("COG_STORE", dir.path().join("state.json"))
        .env_remove("COG_REDIS_URL")
        .env("COG_DEMO_UPSTREAM_MS", "500")
        .env("COG_DRAIN_MS", "2000")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint())
        .env("OTEL_SERVICE_NAME", "demo-under-test")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // The demo prints the new tenant's key on stdout.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let key = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no key printed");
        if line.starts_with("cog_") {
            break line.trim().to_owned();
        }
    };
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut half = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut half, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    let (status, body) = rt.block_on(async {
        let slow = tokio::spawn({
            let key = key.clone();
            async move { post(addr, "/v1/complete", &key, r#"{"prompt":"hi"}"#).await }
        });
        // `/metrics` as Prometheus scrapes it.
        let (status, ctype, metrics) = get(addr, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype, metrics::CONTENT_TYPE);
        let families =
            cog_testkit::openmetrics::parse(&metrics).unwrap_or_else(|e| panic!("{e}\n{metrics}"));
        assert!(
            families.iter().any(|f| f.name == "demo_model_calls"),
            "{metrics}"
        );
        // In flight (the model takes 500 ms) when the signal arrives.
        tokio::time::sleep(Duration::from_millis(150)).await;
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        slow.await.unwrap()
    });
    assert_eq!(status, StatusCode::OK, "drained, not cut: {body}");
    let started = Instant::now();
    // A client that sent half a request before the stop: it held the
    // stop for as long as it stayed (hyper finishes a request it began
    // reading); now the drain (2 s here) bounds it.
    let _half_sent = half;
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the demo did not exit after SIGTERM: a half-sent request held the stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
    // Exported before the process ended: nothing is waited for now.
    let spans = receiver.spans();
    let span = spans
        .iter()
        .find(|s| s.name() == "POST /v1/complete")
        .unwrap_or_else(|| {
            panic!(
                "no span for the drained request: {:?}",
                spans.iter().map(|s| s.name()).collect::<Vec<_>>()
            )
        });
    assert_eq!(span.attr("http.route").as_deref(), Some("/v1/complete"));
    assert_eq!(
        span.attr("http.response.status_code").as_deref(),
        Some("200")
    );
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans.iter().find(|s| s.name() == name).unwrap_or_else(|| {
        panic!(
            "no span {name} in {:?}",
            spans.iter().map(|s| s.name()).collect::<Vec<_>>()
        )
    })
}

fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.parent_span_id() == parent.span_id())
        .collect()
}

/// A demo request against real Redis, exported over OTLP: the server
/// span, under it the limiter decision, the cache lookup and the plugin
/// call, and under those the Redis client spans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_request_is_one_trace_down_to_redis() {
    let server = RedisServer::start().unwrap();
    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = cog_trace::TraceConfig::from_vars(|k| match k {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(receiver.http_endpoint()),
        "OTEL_SERVICE_NAME" => Some("demo-under-test".into()),
        _ => None,
    })
    .unwrap()
    .build()
    .unwrap();
    opentelemetry::global::set_tracer_provider(guard.provider().unwrap().clone());
    let metrics = metrics::Metrics::install();

    let config = app::Config {
        redis_url: Some(server.url()),
        store: String::new(),
        upstream: Duration::from_millis(5),
        database: Duration::from_millis(1),
        poll: Duration::from_millis(100),
        redis_timeout: Duration::from_millis(500),
        python: None,
        control_url: None,
        instances: 2,
        lease: None,
        ..app::Config::default()
    };
    let demo = Arc::new(app::build(&config).await.unwrap());
    metrics.observe(&demo.counters);
    let key = demo.demo_key.clone().unwrap();
    let noop = wat::parse_str(
        r#"(module
             (memory (export "memory") 1)
             (func (export "cog_abi_version") (result i32) i32.const 1)
             (func (export "cog_on_request") (result i32) i32.const 0))"#,
    )
    .unwrap();
    demo.control
        .install_plugin(
            "noop",
            &noop,
            cog_control::PluginSpec {
                attach: cog_control::Attach {
                    tenants: vec!["demo".into()],
                    plans: vec![],
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let revision = demo.control.state().await.unwrap().revision;
    for _ in 0..100 {
        if demo.directory.revision() >= revision {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Served as `serve` serves it: with the peer's address.
    let addr = cog_testkit::peer::serve_with_peers(demo.router.clone()).await;

    let (status, body) = post(addr, "/v1/complete", &key, r#"{"prompt":"trace me"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    guard.shutdown_async().await;

    // The other in-process tests of this binary serve requests through
    // the global tracer provider too, while this one is installed: only
    // this request's trace is read. Its root is the only `POST
    // /v1/complete`, and every call to this test's Redis is in it.
    let all = receiver.spans();
    let root = named(&all, "POST /v1/complete").clone();
    assert_eq!(root.span.kind, 2, "SPAN_KIND_SERVER");
    assert!(
        root.parent_span_id().is_empty(),
        "the request starts the trace"
    );
    assert_eq!(root.attr("client.address").as_deref(), Some("127.0.0.1"));
    let port = server.port().to_string();
    let to_redis: Vec<_> = all
        .iter()
        .filter(|s| s.attr("server.port").as_deref() == Some(port.as_str()))
        .collect();
    assert!(!to_redis.is_empty());
    assert!(to_redis.iter().all(|s| s.trace_id() == root.trace_id()));
    let spans: Vec<ReceivedSpan> = all
        .into_iter()
        .filter(|s| s.trace_id() == root.trace_id())
        .collect();
    let root = &root;

    let decide = named(&spans, "ratelimit.decide");
    let lookup = named(&spans, "cache.lookup");
    let plugin = named(&spans, "plugin.call");
    for step in [decide, lookup, plugin] {
        assert_eq!(step.parent_span_id(), root.span_id(), "{}", step.name());
        assert_eq!(step.span.kind, 1, "SPAN_KIND_INTERNAL");
    }
    assert_eq!(plugin.attr("cog.plugin.name").as_deref(), Some("noop"));

    let redis_under = |parent: &ReceivedSpan| -> Vec<String> {
        children(&spans, parent)
            .into_iter()
            .map(|s| {
                assert_eq!(s.span.kind, 3, "SPAN_KIND_CLIENT: {}", s.name());
                assert_eq!(s.attr("db.system.name").as_deref(), Some("redis"));
                assert_eq!(s.attr("db.operation.name").as_deref(), Some(s.name()));
                assert_eq!(s.attr("server.address").as_deref(), Some("127.0.0.1"));
                assert_eq!(s.attr("server.port").as_deref(), Some(port.as_str()));
                s.name().to_owned()
            })
            .collect()
    };
    assert_eq!(redis_under(decide), ["EVALSHA"]);
    let cache_calls = redis_under(lookup);
    // A miss: read L2, take the lease, write the value, give the lease back.
    assert!(cache_calls.contains(&"GET".to_owned()), "{cache_calls:?}");
    assert!(cache_calls.contains(&"SET".to_owned()), "{cache_calls:?}");

    // The same request is on /metrics, with its route.
    let families = cog_testkit::openmetrics::parse(&metrics.render()).unwrap();
    let duration = families
        .iter()
        .find(|f| f.name == "http_server_request_duration_seconds")
        .unwrap();
    assert!(
        duration
            .sample(
                "http_server_request_duration_seconds_count",
                &[
                    ("http_route", "/v1/complete"),
                    ("http_request_method", "POST")
                ]
            )
            .is_some_and(|s| s.value == 1.0),
        "{duration:#?}"
    );
    let model = families
        .iter()
        .find(|f| f.name == "demo_model_calls")
        .unwrap();
    assert_eq!(model.samples[0].value, 1.0);
}

/// A demo in this process, its state in a file in `dir`, no Redis, fast
/// upstreams.
fn in_memory(dir: &tempfile::TempDir) -> app::Config {
    app::Config {
        redis_url: None,
        control_url: None,
        store: format!("file:{}", dir.path().join("state.json").display()),
        upstream: Duration::from_millis(5),
        database: Duration::from_millis(1),
        poll: Duration::from_millis(100),
        python: None,
        lease: None,
        ..app::Config::default()
    }
}

/// Serves the demo's router on a loopback port.
async fn serve_router(demo: &app::Demo) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = demo.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// `GET /v1/items/7` with `key`: a 200, and its headers.
async fn item(addr: SocketAddr, key: &str) -> http::HeaderMap {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::get(format!("http://{addr}/v1/items/7"))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::default())
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.headers().clone()
}

/// The `pro` plan runs the sample Python plugin on the request path: its
/// tenants' responses carry the header it adds, `free` tenants' do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pro_plan_runs_the_sample_python_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let python = std::env::var_os("COG_PYTHON_WASI")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/python-wasi")
        });
    let config = app::Config {
        redis_timeout: Duration::from_millis(500),
        python: Some(python),
        instances: 2,
        ..in_memory(&dir)
    };
    let demo = app::build(&config).await.unwrap();
    let free_key = demo.demo_key.clone().unwrap();
    demo.control
        .create_tenant("bigco", cog_control::Tenant::new("pro"))
        .await
        .unwrap();
    let pro_key = demo.control.create_key("bigco", None).await.unwrap().secret;
    demo.directory.refresh().await.unwrap();
    let addr = serve_router(&demo).await;

    let plan_header = |key: String| async move {
        let headers = item(addr, &key).await;
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        (
            header("x-cog-plan"),
            header("cache-status").unwrap_or_default(),
        )
    };
    let (plan, cache) = plan_header(pro_key.clone()).await;
    assert_eq!(plan.as_deref(), Some("pro"));
    assert_eq!(cache, "cog; fwd=uri-miss; stored");
    // Answered by the HTTP cache, inside the plugins: they still run.
    let (plan, cache) = plan_header(pro_key).await;
    assert_eq!(plan.as_deref(), Some("pro"), "warm");
    assert!(cache.starts_with("cog; hit; ttl="), "{cache}");
    assert_eq!(plan_header(free_key).await.0, None);
}

/// A plan's cache budget caps what its tenants keep in the demo's caches
/// (it used to cap nothing): a tenant on a plan with a budget too small
/// for one answer is served, but every request misses, while the demo
/// tenant (no budget: the demo's 16 MiB) is answered from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plans_cache_budget_caps_its_tenants_entries() {
    let dir = tempfile::tempdir().unwrap();
    let demo = app::build(&in_memory(&dir)).await.unwrap();
    let free_key = demo.demo_key.clone().unwrap();
    demo.control
        .create_plan(
            "tiny",
            cog_control::Plan {
                limits: vec![cog_control::LimitSpec::parse("rps=100/1s").unwrap()],
                cache_budget_bytes: Some(16),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    demo.control
        .create_tenant("tinyco", cog_control::Tenant::new("tiny"))
        .await
        .unwrap();
    let tiny_key = demo
        .control
        .create_key("tinyco", None)
        .await
        .unwrap()
        .secret;
    demo.directory.refresh().await.unwrap();
    let addr = serve_router(&demo).await;

    let cache_status = |key: String| async move {
        item(addr, &key).await["cache-status"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    for _ in 0..2 {
        let cache = cache_status(tiny_key.clone()).await;
        assert!(cache.starts_with("cog; fwd=uri-miss"), "{cache}");
    }
    cache_status(free_key.clone()).await;
    let cache = cache_status(free_key).await;
    assert!(cache.starts_with("cog; hit"), "{cache}");
}

/// `method path` as `key`: the status and the `cache-status` header.
async fn call(addr: SocketAddr, method: Method, path: &str, key: &str) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"prompt": "hi"}"#)))
        .unwrap();
    let res = client.request(req).await.unwrap();
    let cache = res
        .headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (res.status(), cache)
}

/// The demo in `dir` (and on Redis at `redis`), with plan `tight`
/// limiting to `limit`, served on a loopback port.
async fn with_tight_plan(
    dir: &tempfile::TempDir,
    redis: Option<String>,
    limit: &str,
) -> (app::Demo, SocketAddr) {
    let config = app::Config {
        redis_url: redis,
        redis_timeout: Duration::from_millis(500),
        ..in_memory(dir)
    };
    let demo = app::build(&config).await.unwrap();
    let tight = cog_control::Plan {
        limits: vec![cog_control::LimitSpec::parse(limit).unwrap()],
        ..Default::default()
    };
    demo.control.create_plan("tight", tight).await.unwrap();
    let addr = serve_router(&demo).await;
    (demo, addr)
}

/// A removed tenant's limiter counters Redis would not reset (here: an ACL
/// without `DEL`) are reset once it allows it, in the background: the
/// tenant created again meanwhile is refused on the old one's counters,
/// then counts afresh — not for the rest of the window (an hour here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_tenants_limits_are_reset_once_redis_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start().unwrap();
    server
        .command(&["ACL", "SETUSER", "demo", "on", ">pw", "~*", "&*", "+@all"])
        .unwrap();
    let redis = server.url().replace("redis://", "redis://demo:pw@");
    let (demo, addr) = with_tight_plan(&dir, Some(redis), "rps=2/1h").await;
    let item = |key: String| async move { call(addr, Method::GET, "/v1/items/7", &key).await.0 };
    let acme = || async {
        demo.control
            .create_tenant("acme", cog_control::Tenant::new("tight"))
            .await
            .unwrap();
        let key = demo.control.create_key("acme", None).await.unwrap().secret;
        demo.directory.refresh().await.unwrap();
        key
    };

    let key = acme().await;
    for _ in 0..2 {
        assert_eq!(item(key.clone()).await, StatusCode::OK);
    }
    assert_eq!(item(key).await, StatusCode::TOO_MANY_REQUESTS);
    server.command(&["ACL", "SETUSER", "demo", "-del"]).unwrap();
    demo.control.delete_tenant("acme").await.unwrap();
    demo.directory.refresh().await.unwrap();
    let key = acme().await;
    assert_eq!(
        item(key.clone()).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the reset was refused"
    );
    server.command(&["ACL", "SETUSER", "demo", "+del"]).unwrap();
    // Retried at most every 5 s (`RESET_RETRY_MAX`).
    let allowed = Instant::now();
    while item(key.clone()).await != StatusCode::OK {
        assert!(
            allowed.elapsed() < Duration::from_secs(7),
            "not reset 7 s after Redis allowed it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(item(key.clone()).await, StatusCode::OK, "counting afresh");
    assert_eq!(item(key).await, StatusCode::TOO_MANY_REQUESTS);
}

/// A tenant deleted and created again under the same id — another
/// customer, perhaps — starts empty: none of the old one's cached pages or
/// completions (in L1 and in Redis), none of its spent limit. Both used to
/// carry over until their TTLs and windows ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_created_again_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start().unwrap();
    for redis in [None, Some(server.url())] {
        let (demo, addr) = with_tight_plan(&dir, redis.clone(), "rps=3/1h").await;
        let calls = || {
            demo.counters
                .model_calls
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let complete =
            |key: String| async move { call(addr, Method::POST, "/v1/complete", &key).await.0 };
        let item = |key: String| async move { call(addr, Method::GET, "/v1/items/7", &key).await };

        for round in 0..2 {
            let what = format!("{redis:?}, round {round}");
            if round == 1 {
                demo.control.delete_tenant("acme").await.unwrap();
                demo.directory.refresh().await.unwrap();
            }
            demo.control
                .create_tenant("acme", cog_control::Tenant::new("tight"))
                .await
                .unwrap();
            let key = demo.control.create_key("acme", None).await.unwrap().secret;
            demo.directory.refresh().await.unwrap();
            let (status, cache) = item(key.clone()).await;
            assert_eq!(status, StatusCode::OK, "{what}");
            assert_eq!(cache, "cog; fwd=uri-miss; stored", "{what}");
            let before = calls();
            assert_eq!(complete(key.clone()).await, StatusCode::OK, "{what}");
            assert_eq!(calls(), before + 1, "{what}: a completion of its own");
            let (status, cache) = item(key.clone()).await;
            assert_eq!(status, StatusCode::OK, "{what}");
            assert!(cache.starts_with("cog; hit"), "{what}: {cache}");
            assert_eq!(item(key).await.0, StatusCode::TOO_MANY_REQUESTS, "{what}");
        }
    }
}
