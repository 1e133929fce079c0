//! Python plugins' KV data in a real redis-server: the blocklist twin per
//! tenant, Redis going away under a running plugin, KV calls as Redis
//! spans under the plugin call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cog_sandbox::{KvScope, KvStore, Limits, Phase, Plugin, RedisKv, Runtime};
use cog_testkit::RedisServer;
use cog_testkit::fred_client as client;

use crate::support::{exchange, python, root};

fn runtime(kv: RedisKv) -> Runtime {
    Runtime::new()
        .kv(Arc::new(kv))
        .artifact_dir(root().join("target/cog-artifacts"))
        .artifact_key(b"cog-sandbox tests")
        .python(python())
}

fn blocklist(rt: &Runtime) -> Plugin {
    let source = std::fs::read(root().join("examples/plugins/python/blocklist.py")).unwrap();
    // Room for the store's timeout inside the call's deadline.
    let limits = Limits::python().deadline(Duration::from_secs(2));
    rt.load_python("blocklist", &source, limits).unwrap()
}

/// Runs the request hook on a blocking thread, as the layer does.
async fn call(plugin: &Plugin, tenant: &str, user: &str) -> cog_sandbox::Exchange {
    let plugin = plugin.clone();
    let (tenant, user) = (tenant.to_owned(), user.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut ex = exchange(&tenant);
        ex.request_headers
            .insert("x-user-id", user.parse().unwrap());
        plugin.call(Phase::Request, &mut ex).map(|()| ex)
    })
    .await
    .unwrap()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_blocklist_keeps_its_list_in_redis_per_tenant_and_survives_redis_going_away() {
    let server = RedisServer::start().unwrap();
    let kv = RedisKv::new(client(&server.url()).await).timeout(Duration::from_millis(300));
    let scope = KvScope {
        tenant: "acme".into(),
        plugin: "blocklist".into(),
    };
    {
        let (kv, scope) = (kv.clone(), scope.clone());
        tokio::task::spawn_blocking(move || {
            kv.set(
                &scope,
                b"block:mallory",
                b"banned",
                cog_sandbox::KvQuota {
                    entries: usize::MAX,
                    bytes: usize::MAX,
                },
            )
            .unwrap()
        })
        .await
        .unwrap();
    }
    let rt = runtime(kv.clone());
    let plugin = blocklist(&rt);
    assert_eq!(
        call(&plugin, "acme", "mallory")
            .await
            .rejected
            .unwrap()
            .body,
        "banned"
    );
    assert!(call(&plugin, "globex", "mallory").await.rejected.is_none());
    assert!(call(&plugin, "acme", "alice").await.rejected.is_none());

    // Redis gone: the plugin's KV call raises cog.Unavailable within the
    // store's timeout; this plugin lets it through as an exception, a
    // typed error, and the call ends in time.
    server.kill().unwrap();
    let p = plugin.clone();
    let started = Instant::now();
    let r = tokio::task::spawn_blocking(move || {
        let mut ex = exchange("acme");
        ex.request_headers
            .insert("x-user-id", "mallory".parse().unwrap());
        p.call(Phase::Request, &mut ex)
    })
    .await
    .unwrap();
    match r {
        Err(cog_sandbox::PluginError::Exception(m)) => assert!(m.starts_with("Unavailable"), "{m}"),
        other => panic!("{other:?}"),
    }
    // One KV call: the store's 300 ms timeout, not the 2 s deadline.
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_kv_calls_are_redis_spans_under_the_plugin_call() {
    use opentelemetry::trace::{SpanKind, TraceContextExt as _};
    let capture = cog_testkit::SpanCapture::install();
    let server = RedisServer::start().unwrap();
    let kv = RedisKv::new(client(&server.url()).await).timeout(Duration::from_millis(500));
    let rt = runtime(kv);
    let plugin = blocklist(&rt);
    let root = capture.root("request");
    let request_span = root.span().span_context().span_id();
    {
        let plugin = plugin.clone();
        tokio::task::spawn_blocking(move || {
            let _attached = root.attach();
            let mut ex = exchange("acme");
            ex.request_headers
                .insert("x-user-id", "mallory".parse().unwrap());
            plugin.call(Phase::Request, &mut ex).unwrap();
        })
        .await
        .unwrap();
    }
    let spans = capture.spans();
    let call = cog_testkit::span_named(&spans, "plugin.call");
    assert_eq!(call.parent_span_id, request_span);
    let kv_calls = cog_testkit::span_children(&spans, call);
    assert!(!kv_calls.is_empty(), "no KV span under the call: {spans:?}");
    for s in kv_calls {
        assert_eq!(s.span_kind, SpanKind::Client);
    }
}
