//! Plugin KV data in a real redis-server: scoping, quotas, and Redis going
//! away under a running plugin.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cog_sandbox::{KvQuota, KvScope, KvStore, Limits, Phase, RedisKv, Runtime};
use cog_testkit::RedisServer;

use crate::support::{exchange, on_request};

use cog_testkit::fred_client as client;

/// A quota of `n` entries and no byte limit.
fn entries(n: usize) -> KvQuota {
    KvQuota {
        entries: n,
        bytes: usize::MAX,
    }
}

fn scope(tenant: &str) -> KvScope {
    KvScope {
        tenant: tenant.into(),
        plugin: "blocklist".into(),
    }
}

/// Runs the request hook on a blocking thread, as the layer does.
async fn call(plugin: &cog_sandbox::Plugin, tenant: &str, user: &str) -> cog_sandbox::Exchange {
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
async fn the_blocklist_sample_keeps_its_list_in_redis_per_tenant() {
    let server = RedisServer::start().unwrap();
    let kv = RedisKv::new(client(&server.url()).await).timeout(Duration::from_millis(500));
    {
        let kv = kv.clone();
        tokio::task::spawn_blocking(move || {
            kv.set(
                &scope("acme"),
                b"block:mallory",
                b"banned",
                entries(usize::MAX),
            )
            .unwrap();
        })
        .await
        .unwrap();
    }
    // Stored where the docs say, one hash per scope, tenant as hash tag.
    let raw = server
        .command(&["HGET", &kv.key(&scope("acme")), "block:mallory"])
        .unwrap();
    assert_eq!(raw, cog_testkit::Reply::Bulk(Some(b"banned".to_vec())));
    assert!(kv.key(&scope("acme")).contains("{acme}"));

    let wasm = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/plugins/dist/blocklist.wasm"),
    )
    .unwrap();
    let rt = Runtime::new().kv(Arc::new(kv.clone()));
    let plugin = rt.load("blocklist", &wasm, Limits::default()).unwrap();
    let ex = call(&plugin, "acme", "mallory").await;
    assert_eq!(ex.rejected.unwrap().body, "banned");
    assert!(call(&plugin, "globex", "mallory").await.rejected.is_none());
    assert!(call(&plugin, "acme", "alice").await.rejected.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_in_redis_and_a_dead_redis_is_unavailable_not_a_hang() {
    let server = RedisServer::start().unwrap();
    let kv = RedisKv::new(client(&server.url()).await)
        .prefix("t:")
        .timeout(Duration::from_millis(200));
    let rt = Runtime::new().kv(Arc::new(kv.clone()));
    // Writes keys 0, 1, 2, … until the host refuses.
    let many = on_request(
        "(local $i i32)
         (loop $l
           (i32.store (i32.const 0) (local.get $i))
           (drop (call $kv_set (i32.const 0) (i32.const 4) (i32.const 0) (i32.const 4)))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br $l))",
    );
    let plugin = rt
        .load(
            "writer",
            &many,
            Limits::default()
                .max_kv_entries(20)
                .deadline(Duration::from_secs(5)),
        )
        .unwrap();
    let p = plugin.clone();
    let r = tokio::task::spawn_blocking(move || p.call(Phase::Request, &mut exchange("acme")))
        .await
        .unwrap();
    assert_eq!(r, Err(cog_sandbox::PluginError::KvLimit("scope full")));
    let scope = KvScope {
        tenant: "acme".into(),
        plugin: "writer".into(),
    };
    let hlen = server.command(&["HLEN", &kv.key(&scope)]).unwrap();
    assert_eq!(hlen, cog_testkit::Reply::Int(20));

    // Redis gone: `kv_get` answers UNAVAILABLE (−4) within the timeout; the
    // plugin reports it through a header and the call completes.
    server.kill().unwrap();
    let probe = crate::support::module(
        r#"(data (i32.const 0) "k") (data (i32.const 16) "x-kv") (data (i32.const 32) "down")
           (func (export "cog_on_request") (result i32)
             (if (i32.eq (call $kv_get (i32.const 0) (i32.const 1) (i32.const 64) (i32.const 64)) (i32.const -4))
               (then (drop (call $header_set (i32.const 0) (i32.const 16) (i32.const 4) (i32.const 32) (i32.const 4)))))
             i32.const 0)"#,
    );
    let plugin = rt
        .load(
            "probe",
            &probe,
            Limits::default().deadline(Duration::from_secs(5)),
        )
        .unwrap();
    let started = Instant::now();
    let ex = tokio::task::spawn_blocking(move || {
        let mut ex = exchange("acme");
        plugin.call(Phase::Request, &mut ex).map(|()| ex)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(ex.request_headers["x-kv"], "down");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // The host sees why: the client's error, as the source — for reads,
    // deletes and writes alike.
    let errs = tokio::task::spawn_blocking(move || {
        use cog_sandbox::KvStore as _;
        [
            kv.get(&scope, b"k").unwrap_err(),
            kv.delete(&scope, b"k").unwrap_err(),
            kv.set(&scope, b"k", b"v", entries(100)).unwrap_err(),
        ]
    })
    .await
    .unwrap();
    for err in errs {
        assert!(
            matches!(err, cog_sandbox::KvError::Unavailable(_)),
            "{err:?}"
        );
        assert!(std::error::Error::source(&err).is_some(), "{err:?}");
    }
}

/// A scope's bytes (keys and values, by length) are held under
/// `max_kv_bytes` in Redis, exactly; a replacement counts what it leaves;
/// a delete frees; a scope over a lowered limit may shrink. The count is a
/// cache: evicted, garbled or left behind by an evicted hash, it is
/// counted again and the limit holds the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_limit_holds_in_redis_whatever_happens_to_its_count() {
    use cog_sandbox::KvError::BytesFull;
    use cog_testkit::Reply;
    let server = Arc::new(RedisServer::start().unwrap());
    let kv = RedisKv::new(client(&server.url()).await).timeout(Duration::from_millis(500));
    let s = scope("acme");
    let (hash, size) = (kv.key(&s), kv.size_key(&s));
    assert!(size.contains("{acme}"), "same slot as the hash: {size}");
    let quota = |bytes| KvQuota {
        entries: 100,
        bytes,
    };
    let srv = server.clone();
    tokio::task::spawn_blocking(move || {
        let count = || srv.command(&["GET", &size]).unwrap();
        // Five entries of 2 + 10 bytes: 60 of 65.
        for k in ["k0", "k1", "k2", "k3", "k4"] {
            kv.set(&s, k.as_bytes(), b"0123456789", quota(65)).unwrap();
        }
        assert_eq!(count(), Reply::Bulk(Some(b"60".to_vec())));
        assert_eq!(kv.set(&s, b"k5", b"0123", quota(65)), Err(BytesFull));
        kv.set(&s, b"k5", b"012", quota(65)).unwrap();
        assert_eq!(kv.set(&s, b"k0", b"01234567890", quota(65)), Err(BytesFull));
        kv.set(&s, b"k0", b"", quota(65)).unwrap();
        assert!(kv.delete(&s, b"k1").unwrap());
        assert!(!kv.delete(&s, b"k1").unwrap());
        // 65 − 10 (k0 emptied) − 12 (k1 gone) = 43.
        assert_eq!(count(), Reply::Bulk(Some(b"43".to_vec())));

        // The count evicted, or garbled (not a number, not a string):
        // counted again from the hash.
        let garbles = [
            &["DEL", &size][..],
            &["SET", &size, "lots"][..],
            &["HSET", &size, "f", "v"][..],
        ];
        for garble in garbles {
            srv.command(&["DEL", &size]).unwrap();
            srv.command(garble).unwrap();
            assert_eq!(
                kv.set(&s, b"k9", b"0123456789012345678901", quota(66)),
                Err(BytesFull)
            );
            assert_eq!(count(), Reply::Bulk(Some(b"43".to_vec())), "{garble:?}");
        }
        // A delete while it is garbled drops it; the next set counts again.
        for garble in &garbles[1..] {
            srv.command(&["DEL", &size]).unwrap();
            srv.command(garble).unwrap();
            assert!(kv.delete(&s, b"k5").unwrap(), "{garble:?}");
            assert_eq!(srv.command(&["EXISTS", &size]).unwrap(), Reply::Int(0));
            kv.set(&s, b"k5", b"012", quota(65)).unwrap();
            assert_eq!(count(), Reply::Bulk(Some(b"43".to_vec())), "{garble:?}");
        }
        kv.set(&s, b"k9", b"012345678901234567890", quota(66))
            .unwrap();
        assert_eq!(count(), Reply::Bulk(Some(b"66".to_vec())));
        // The hash evicted, its count left: the scope is empty again.
        srv.command(&["DEL", &hash]).unwrap();
        kv.set(&s, b"k0", b"0123456789", quota(12)).unwrap();
        assert_eq!(count(), Reply::Bulk(Some(b"12".to_vec())));
        // Over a lowered limit: it may shrink, not grow.
        assert_eq!(kv.set(&s, b"k0", b"012345678", quota(10)), Ok(()));
        assert_eq!(kv.set(&s, b"k0", b"876543210", quota(10)), Ok(()));
        assert_eq!(kv.set(&s, b"k1", b"", quota(10)), Err(BytesFull));
        // Its last entry deleted: no hash, no count.
        assert!(kv.delete(&s, b"k0").unwrap());
        assert_eq!(
            srv.command(&["EXISTS", &hash, &size]).unwrap(),
            Reply::Int(0)
        );
    })
    .await
    .unwrap();
}

/// Garbage under a scope's key (anything but a hash) holds no entry, and
/// the scope's next write replaces it. It used to refuse every call of the
/// scope (`WRONGTYPE`, answered `UNAVAILABLE`) for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_under_a_scope_is_no_data_and_the_next_write_replaces_it() {
    let server = RedisServer::start().unwrap();
    let kv = RedisKv::new(client(&server.url()).await).timeout(Duration::from_millis(500));
    for (tenant, garbage) in [
        ("string", &["SET", "garbage"][..]),
        ("list", &["RPUSH", "garbage"][..]),
    ] {
        let key = kv.key(&scope(tenant));
        server
            .command(&[&garbage[..1], &[key.as_str()], &garbage[1..]].concat())
            .unwrap();
        let kv = kv.clone();
        let tenant = tenant.to_owned();
        tokio::task::spawn_blocking(move || {
            let s = scope(&tenant);
            assert_eq!(kv.get(&s, b"k"), Ok(None), "{tenant}");
            assert_eq!(kv.delete(&s, b"k"), Ok(false), "{tenant}");
            kv.set(&s, b"k", b"v", entries(10)).unwrap();
            assert_eq!(kv.get(&s, b"k"), Ok(Some(b"v".to_vec())), "{tenant}");
        })
        .await
        .unwrap();
    }
}

/// Clearing a scope takes its hash and its byte count (a new scope under
/// the same names starts empty and counted from zero), garbage too, and
/// nothing of another scope; a dead Redis is `Unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_a_scope_takes_all_it_holds_and_nothing_else() {
    let server = RedisServer::start().unwrap();
    let kv = RedisKv::new(client(&server.url()).await).timeout(Duration::from_millis(500));
    let (acme, other) = (scope("acme"), scope("other"));
    let quota = KvQuota {
        entries: 100,
        bytes: 20,
    };
    let k = kv.clone();
    let (a, o) = (acme.clone(), other.clone());
    tokio::task::spawn_blocking(move || {
        k.set(&a, b"k1", b"0123456789", quota).unwrap();
        k.set(&a, b"k2", b"v", quota).unwrap();
        k.set(&o, b"k1", b"v", quota).unwrap();
        assert_eq!(k.clear(&a), Ok(true));
        assert_eq!(k.clear(&a), Ok(false));
        assert_eq!(k.get(&a, b"k1"), Ok(None));
        assert_eq!(k.get(&o, b"k1"), Ok(Some(b"v".to_vec())));
        // Counted from zero: 18 bytes fit in 20 again.
        k.set(&a, b"k3", b"0123456789012345", quota).unwrap();
    })
    .await
    .unwrap();
    let exists = |key: &str| server.command(&["EXISTS", key]).unwrap();
    assert_eq!(exists(&kv.size_key(&other)), cog_testkit::Reply::Int(1));
    let clear = || {
        let (k, a) = (kv.clone(), acme.clone());
        tokio::task::spawn_blocking(move || k.clear(&a))
    };
    assert_eq!(clear().await.unwrap(), Ok(true));
    assert_eq!(exists(&kv.key(&acme)), cog_testkit::Reply::Int(0));
    assert_eq!(exists(&kv.size_key(&acme)), cog_testkit::Reply::Int(0));
    server.command(&["SET", &kv.key(&acme), "garbage"]).unwrap();
    assert_eq!(clear().await.unwrap(), Ok(true));
    assert_eq!(exists(&kv.key(&acme)), cog_testkit::Reply::Int(0));
    server.pause().unwrap();
    let r = clear().await;
    server.resume().unwrap();
    assert!(matches!(
        r.unwrap(),
        Err(cog_sandbox::KvError::Unavailable(_))
    ));
}

/// Many scopes are cleared in pipelined batches — on a Cluster too, where
/// they fall on every node: each scope that held data cleared and counted,
/// nothing else touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_scopes_are_cleared_in_batches_on_a_cluster_too() {
    let single = RedisServer::start().unwrap();
    let cluster = cog_testkit::RedisCluster::start().unwrap();
    for url in [single.url(), cluster.url()] {
        let kv = RedisKv::new(client(&url).await).timeout(Duration::from_secs(2));
        tokio::task::spawn_blocking(move || {
            let scopes: Vec<KvScope> = (0..300).map(|i| scope(&format!("t{i}"))).collect();
            for s in scopes.iter().step_by(3) {
                kv.set(s, b"k", b"v", entries(10)).unwrap();
            }
            let kept = scope("kept");
            kv.set(&kept, b"k", b"v", entries(10)).unwrap();
            assert_eq!(kv.clear_all(&scopes), Ok(100), "{url}");
            assert!(scopes.iter().all(|s| kv.get(s, b"k") == Ok(None)), "{url}");
            assert_eq!(kv.clear_all(&scopes), Ok(0), "{url}");
            kv.set(&scopes[7], b"k", b"v", entries(10)).unwrap();
            assert_eq!(kv.clear_all(&scopes[7..8]), Ok(1), "{url}");
            assert_eq!(kv.get(&kept, b"k"), Ok(Some(b"v".to_vec())), "{url}");
        })
        .await
        .unwrap();
    }
}

/// In a sampled trace, a plugin call is a `plugin.call` span and each of
/// its KV round trips a Redis client span under it — also when the call
/// runs on a blocking thread, as the layer runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_kv_calls_are_redis_spans_under_the_plugin_call() {
    use opentelemetry::trace::{SpanKind, TraceContextExt as _};
    let capture = cog_testkit::SpanCapture::install();
    let server = RedisServer::start().unwrap();
    let kv = RedisKv::new(client(&server.url()).await).timeout(Duration::from_millis(500));
    let wasm = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/plugins/dist/blocklist.wasm"),
    )
    .unwrap();
    let rt = Runtime::new().kv(Arc::new(kv));
    let plugin = rt.load("blocklist", &wasm, Limits::default()).unwrap();
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
        assert_eq!(
            cog_testkit::span_attr(s, "db.system.name").map(|v| v.to_string()),
            Some("redis".into())
        );
    }
}

/// Two instances (each its own router), two deployments: a tenant's KV
/// scopes live on its partition's deployment and follow it when it moves —
/// every entry written before the move is there after it; an unreachable
/// old deployment makes the scope unavailable (and retried), never empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_data_follows_its_tenants_partition() {
    use cog_core::placement::{Placement, Router, partition};
    use cog_sandbox::{KvError, PlacedKv};

    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let kv_on = async |s: &RedisServer| {
        RedisKv::new(client(&s.url()).await).timeout(Duration::from_millis(500))
    };
    let mut instances = Vec::new();
    for _ in 0..2 {
        let placement = Placement::new(["main", "big"]).unwrap();
        let router = Arc::new(Router::new(["main", "big"], placement).unwrap());
        let kv = PlacedKv::new(
            router.clone(),
            [("main", kv_on(&main).await), ("big", kv_on(&big).await)],
        )
        .unwrap();
        instances.push((kv, router));
    }
    let hash = RedisKv::new(client(&main.url()).await).key(&scope("acme"));
    let hlen = |s: &RedisServer| match s.command(&["HLEN", &hash]).unwrap() {
        cog_testkit::Reply::Int(n) => n,
        other => panic!("{other:?}"),
    };
    let blocking = |f: Box<dyn FnOnce() + Send>| tokio::task::spawn_blocking(f);

    let (a, b) = (instances[0].0.clone(), instances[1].0.clone());
    blocking(Box::new(move || {
        for i in 0..10 {
            a.set(
                &scope("acme"),
                format!("k{i}").as_bytes(),
                b"v",
                entries(100),
            )
            .unwrap();
        }
    }))
    .await
    .unwrap();
    assert_eq!((hlen(&main), hlen(&big)), (10, 0));

    let moved = instances[0]
        .1
        .placement()
        .moved(partition("acme"), "big")
        .unwrap();
    for (_, router) in &instances {
        router.set_placement(moved.clone()).unwrap();
    }
    // The first touch copies the scope; the second instance finds it there
    // and its own write lands next to the others.
    blocking(Box::new(move || {
        assert_eq!(
            b.get(&scope("acme"), b"k3").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        b.set(&scope("acme"), b"after", b"w", entries(100)).unwrap();
    }))
    .await
    .unwrap();
    assert_eq!(hlen(&big), 11);
    let a = instances[0].0.clone();
    blocking(Box::new(move || {
        assert!(a.delete(&scope("acme"), b"k0").unwrap());
        assert_eq!(
            a.get(&scope("acme"), b"after").unwrap().as_deref(),
            Some(&b"w"[..])
        );
    }))
    .await
    .unwrap();
    assert_eq!(hlen(&big), 10);

    // Another tenant moves while main is away: unavailable, then copied
    // once main is back.
    let other = cog_testkit::placement::elsewhere("acme");
    let a = instances[0].0.clone();
    let o = other.clone();
    blocking(Box::new(move || {
        a.set(&scope(&o), b"x", b"1", entries(100)).unwrap()
    }))
    .await
    .unwrap();
    let moved = moved.moved(partition(&other), "big").unwrap();
    instances[0].1.set_placement(moved).unwrap();
    main.pause().unwrap();
    let a = instances[0].0.clone();
    let o = other.clone();
    let r = blocking(Box::new(move || {
        assert!(matches!(
            a.get(&scope(&o), b"x"),
            Err(KvError::Unavailable(_))
        ));
    }))
    .await;
    main.resume().unwrap();
    r.unwrap();
    let a = instances[0].0.clone();
    blocking(Box::new(move || {
        assert_eq!(
            a.get(&scope(&other), b"x").unwrap().as_deref(),
            Some(&b"1"[..])
        );
    }))
    .await
    .unwrap();
}

/// Past its window a placed KV no longer copies: the moved tenant starts
/// empty on the new deployment (what a window of zero means).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_window_a_move_copies_nothing() {
    use cog_core::placement::{Placement, Router, partition};
    use cog_sandbox::PlacedKv;

    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let router =
        Arc::new(Router::new(["main", "big"], Placement::new(["main", "big"]).unwrap()).unwrap());
    let kv = PlacedKv::new(
        router.clone(),
        [
            ("main", RedisKv::new(client(&main.url()).await)),
            ("big", RedisKv::new(client(&big.url()).await)),
        ],
    )
    .unwrap()
    .window(Duration::ZERO);
    let k = kv.clone();
    tokio::task::spawn_blocking(move || k.set(&scope("acme"), b"x", b"1", entries(10)).unwrap())
        .await
        .unwrap();
    let moved = router.placement().moved(partition("acme"), "big").unwrap();
    router.set_placement(moved).unwrap();
    let got = tokio::task::spawn_blocking(move || kv.get(&scope("acme"), b"x").unwrap())
        .await
        .unwrap();
    assert_eq!(got, None);
}

/// A partition moved away and back within the window: a scope used while
/// away comes back with what was written there (not the older copy left
/// at home); a scope not used while away keeps what it has at home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_data_moved_back_is_the_newest() {
    use cog_core::placement::partition;
    use cog_sandbox::PlacedKv;

    let (_servers, home, router, kv) = placed_kv().await;
    let idle = KvScope {
        tenant: "acme".into(),
        plugin: "other".into(),
    };
    let used = scope("acme");
    let on = |kv: &PlacedKv, f: Box<dyn FnOnce(&PlacedKv) + Send>| {
        let kv = kv.clone();
        tokio::task::spawn_blocking(move || f(&kv))
    };
    let (u, i) = (used.clone(), idle.clone());
    on(
        &kv,
        Box::new(move |kv| {
            kv.set(&u, b"k", b"home", entries(10)).unwrap();
            kv.set(&i, b"k", b"home", entries(10)).unwrap();
        }),
    )
    .await
    .unwrap();
    let away = home.moved(partition("acme"), "big").unwrap();
    router.set_placement(away.clone()).unwrap();
    let u = used.clone();
    on(
        &kv,
        Box::new(move |kv| kv.set(&u, b"k", b"away", entries(10)).unwrap()),
    )
    .await
    .unwrap();
    router
        .set_placement(away.moved(partition("acme"), "main").unwrap())
        .unwrap();
    on(
        &kv,
        Box::new(move |kv| {
            assert_eq!(kv.get(&used, b"k").unwrap().as_deref(), Some(&b"away"[..]));
            assert_eq!(kv.get(&idle, b"k").unwrap().as_deref(), Some(&b"home"[..]));
        }),
    )
    .await
    .unwrap();
}

/// A scope copied over after a move is counted from what was copied, not
/// from the count its new home kept of the older data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_scope_is_counted_afresh() {
    use cog_core::placement::partition;

    let (_servers, home, router, kv) = placed_kv().await;
    let s = scope("acme");
    let quota = KvQuota {
        entries: 100,
        bytes: 70,
    };
    let on = |f: Box<dyn FnOnce(&cog_sandbox::PlacedKv) + Send>| {
        let kv = kv.clone();
        tokio::task::spawn_blocking(move || f(&kv))
    };
    // At home: five entries of 12 bytes (60 counted).
    let sc = s.clone();
    on(Box::new(move |kv| {
        for k in ["k0", "k1", "k2", "k3", "k4"] {
            kv.set(&sc, k.as_bytes(), b"0123456789", quota).unwrap();
        }
    }))
    .await
    .unwrap();
    // Away, four of them deleted; back home, the copy holds one (12).
    let away = home.moved(partition("acme"), "big").unwrap();
    router.set_placement(away.clone()).unwrap();
    let sc = s.clone();
    on(Box::new(move |kv| {
        for k in ["k1", "k2", "k3", "k4"] {
            assert!(kv.delete(&sc, k.as_bytes()).unwrap());
        }
    }))
    .await
    .unwrap();
    router
        .set_placement(away.moved(partition("acme"), "main").unwrap())
        .unwrap();
    on(Box::new(move |kv| {
        assert_eq!(kv.get(&s, b"k1").unwrap(), None);
        // 12 + 4 × 12 = 60 fit under 70; a fifth does not.
        for k in ["n1", "n2", "n3", "n4"] {
            kv.set(&s, k.as_bytes(), b"0123456789", quota).unwrap();
        }
        assert_eq!(
            kv.set(&s, b"n5", b"0123456789", quota),
            Err(cog_sandbox::KvError::BytesFull)
        );
    }))
    .await
    .unwrap();
}

/// A placed scope is cleared on every deployment: within a move's window,
/// the copy left on the old home does not come back on the next use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_scope_is_cleared_everywhere() {
    use cog_core::placement::partition;

    let (servers, home, router, kv) = placed_kv().await;
    let (s, other) = (scope("acme"), scope("initech"));
    let (k, sc, o) = (kv.clone(), s.clone(), other.clone());
    tokio::task::spawn_blocking(move || {
        k.set(&sc, b"k", b"v", entries(10)).unwrap();
        k.set(&o, b"k", b"v", entries(10)).unwrap();
    })
    .await
    .unwrap();
    // Moved, and not used since: the data is still only on main.
    router
        .set_placement(home.moved(partition("acme"), "big").unwrap())
        .unwrap();
    let (k, sc) = (kv.clone(), s.clone());
    tokio::task::spawn_blocking(move || {
        assert_eq!(k.clear(&sc), Ok(true));
        assert_eq!(k.get(&sc, b"k"), Ok(None));
        assert_eq!(k.clear(&sc), Ok(false));
    })
    .await
    .unwrap();
    // Many at once, the same way.
    let (k, sc, o) = (kv.clone(), s.clone(), other.clone());
    tokio::task::spawn_blocking(move || assert_eq!(k.clear_all(&[sc, o]), Ok(1)))
        .await
        .unwrap();
    let plain = RedisKv::new(client(&servers[0].url()).await);
    for server in &servers {
        for hash in [plain.key(&s), plain.key(&other)] {
            assert_eq!(
                server.command(&["EXISTS", &hash]).unwrap(),
                cog_testkit::Reply::Int(0)
            );
        }
    }
}

/// Copied ahead of first use (what the control plane does on a move):
/// every scope given, once — a second copy of the same move, or a first
/// use after it, leaves what was written since — and not to a deployment
/// the store has no connection to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_are_copied_ahead_once() {
    use cog_core::placement::partition;

    let (servers, home, router, kv) = placed_kv().await;
    let (s, other) = (scope("acme"), scope("initech"));
    let plain = RedisKv::new(client(&servers[0].url()).await);
    for sc in [&s, &other] {
        servers[0]
            .command(&["HSET", &plain.key(sc), "k", "old"])
            .unwrap();
    }
    let moved = home.moved(partition("acme"), "big").unwrap();
    let revision = moved.revision();
    let (k, sc, o) = (kv.clone(), s.clone(), other.clone());
    tokio::task::spawn_blocking(move || {
        assert_eq!(
            k.copy_moved("main", "main", revision, std::slice::from_ref(&sc)),
            Ok(())
        );
        assert!(matches!(
            k.copy_moved("main", "elsewhere", revision, std::slice::from_ref(&sc)),
            Err(cog_sandbox::KvError::Unavailable(_))
        ));
        k.copy_moved("main", "big", revision, &[sc, o]).unwrap();
    })
    .await
    .unwrap();
    let hget = |i: usize, sc: &KvScope| servers[i].command(&["HGET", &plain.key(sc), "k"]).unwrap();
    let old = cog_testkit::Reply::Bulk(Some(b"old".to_vec()));
    assert_eq!((hget(1, &s), hget(1, &other)), (old.clone(), old));
    // Written since: neither the same copy again nor a first use after
    // the move brings the old data back.
    servers[1]
        .command(&["HSET", &plain.key(&s), "k", "new"])
        .unwrap();
    router.set_placement(moved).unwrap();
    let (k, sc) = (kv.clone(), s.clone());
    let got = tokio::task::spawn_blocking(move || {
        k.copy_moved("main", "big", revision, std::slice::from_ref(&sc))
            .unwrap();
        k.get(&sc, b"k")
    })
    .await
    .unwrap();
    assert_eq!(got, Ok(Some(b"new".to_vec())));
}

/// Another partition's move is not this one's: what a plugin wrote on its
/// partition's new home is not replaced by a second copy from the old home
/// when an unrelated partition moves within the copy window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_partitions_move_does_not_copy_plugin_data_again() {
    use cog_sandbox::PlacedKv;

    let (_servers, _, router, kv) = placed_kv().await;
    let [_, away, later] = cog_testkit::placement::two_moves("acme");
    let used = scope("acme");
    let run = |f: Box<dyn FnOnce(&PlacedKv) + Send>| {
        let kv = kv.clone();
        tokio::task::spawn_blocking(move || f(&kv))
    };
    let u = used.clone();
    run(Box::new(move |kv| {
        kv.set(&u, b"k", b"home", entries(10)).unwrap()
    }))
    .await
    .unwrap();
    router.set_placement(away).unwrap();
    let u = used.clone();
    run(Box::new(move |kv| {
        kv.set(&u, b"k", b"away", entries(10)).unwrap()
    }))
    .await
    .unwrap();
    router.set_placement(later).unwrap();
    run(Box::new(move |kv| {
        assert_eq!(kv.get(&used, b"k").unwrap().as_deref(), Some(&b"away"[..]));
    }))
    .await
    .unwrap();
}

/// An instance that skipped the move's revision (this partition's move and
/// another's landed in one poll) does not copy the plugin's data again over
/// what another instance wrote on the new home since its copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_skipped_the_moves_revision_does_not_copy_again() {
    use cog_core::placement::Router;

    let (servers, home, router, kv) = placed_kv().await;
    let skipping = Arc::new(Router::new(["main", "big"], home.clone()).unwrap());
    let skipper = cog_sandbox::PlacedKv::new(
        skipping.clone(),
        [
            ("main", RedisKv::new(client(&servers[0].url()).await)),
            ("big", RedisKv::new(client(&servers[1].url()).await)),
        ],
    )
    .unwrap();
    let used = scope("acme");
    let [_, away, later] = cog_testkit::placement::two_moves("acme");
    tokio::task::spawn_blocking(move || {
        kv.set(&used, b"k", b"home", entries(10)).unwrap();
        router.set_placement(away).unwrap();
        kv.set(&used, b"k", b"away", entries(10)).unwrap();
        router.set_placement(later.clone()).unwrap();
        skipping.set_placement(later).unwrap();
        assert_eq!(
            skipper.get(&used, b"k").unwrap().as_deref(),
            Some(&b"away"[..])
        );
    })
    .await
    .unwrap();
}

/// A plugin KV placed over two real deployments, `main` and `big`, every
/// partition on `main`: the servers, that placement, its router and the KV.
async fn placed_kv() -> (
    [RedisServer; 2],
    cog_core::placement::Placement,
    Arc<cog_core::placement::Router>,
    cog_sandbox::PlacedKv,
) {
    use cog_core::placement::{Placement, Router};
    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let home = Placement::new(["main", "big"]).unwrap();
    let router = Arc::new(Router::new(["main", "big"], home.clone()).unwrap());
    let kv = cog_sandbox::PlacedKv::new(
        router.clone(),
        [
            ("main", RedisKv::new(client(&main.url()).await)),
            ("big", RedisKv::new(client(&big.url()).await)),
        ],
    )
    .unwrap();
    ([main, big], home, router, kv)
}

/// Behind Sentinel, a failover: what a plugin wrote is read from the new
/// master, and writes reach it within moments (the demoted server answers
/// `READONLY`; the client reconnects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_data_follows_a_sentinel_failover() {
    let sentinel = cog_testkit::RedisSentinel::start().unwrap();
    let kv = RedisKv::new(client(&sentinel.url()).await).timeout(Duration::from_millis(500));
    let s = scope("acme");
    let (k, sc) = (kv.clone(), s.clone());
    tokio::task::spawn_blocking(move || k.set(&sc, b"before", b"v", entries(10)).unwrap())
        .await
        .unwrap();
    let sentinel = sentinel.failed_over().await;
    let started = Instant::now();
    tokio::task::spawn_blocking(move || {
        while kv.set(&s, b"after", b"v", entries(10)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no write since the failover"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(kv.get(&s, b"before").unwrap().as_deref(), Some(&b"v"[..]));
    })
    .await
    .unwrap();
    drop(sentinel);
}
