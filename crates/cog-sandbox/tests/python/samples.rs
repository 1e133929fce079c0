//! The sample plugins of `examples/plugins`: each Python one passes the
//! same tests as its Rust twin (run here on both).

use std::sync::Arc;

use bytes::Bytes;
use cog_sandbox::{Exchange, KvScope, Limits, MemoryKv, Phase, Plugin, Runtime};

use crate::support::{exchange, python, root};

fn runtime(kv: Arc<MemoryKv>) -> Runtime {
    Runtime::new()
        .kv(kv)
        .artifact_dir(root().join("target/cog-artifacts"))
        .artifact_key(b"cog-sandbox tests")
        .python(python())
}

/// The Rust build and the Python source of sample `name`.
fn both(rt: &Runtime, name: &str) -> [Plugin; 2] {
    let wasm = std::fs::read(root().join(format!("examples/plugins/dist/{name}.wasm"))).unwrap();
    let py = std::fs::read(root().join(format!("examples/plugins/python/{name}.py"))).unwrap();
    [
        rt.load(name, &wasm, Limits::default()).unwrap(),
        rt.load_python(name, &py, Limits::python()).unwrap(),
    ]
}

#[test]
fn headers_plugin_adds_and_strips() {
    let rt = runtime(Arc::default());
    for p in both(&rt, "headers") {
        let p = p.with_config(
            "request add x-served-by: edge-1\nrequest strip x-internal-\nresponse add x-powered-by: cog\nresponse strip server",
        );
        let mut ex = exchange("acme");
        ex.request_headers
            .insert("x-internal-token", "t".parse().unwrap());
        ex.request_headers
            .insert("x-internal-user", "u".parse().unwrap());
        p.call(Phase::Request, &mut ex).unwrap();
        assert_eq!(ex.request_headers["x-served-by"], "edge-1");
        assert!(
            !ex.request_headers
                .keys()
                .any(|k| k.as_str().starts_with("x-internal-"))
        );
        assert_eq!(ex.request_headers["user-agent"], "test/1");
        ex.status = Some(http::StatusCode::OK);
        ex.response_headers
            .insert("server", "nginx".parse().unwrap());
        p.call(Phase::Response, &mut ex).unwrap();
        assert_eq!(ex.response_headers["x-powered-by"], "cog");
        assert!(ex.response_headers.get("server").is_none());
    }
}

#[test]
fn redact_plugin_cleans_json_bodies() {
    let rt = runtime(Arc::default());
    for p in both(&rt, "redact") {
        for (body, clean) in [
            (
                &br#"{"user":"jane@example.com","card":"4111 1111 1111 1111","order":12345}"#[..],
                &br#"{"user":"[email]","card":"[card]","order":12345}"#[..],
            ),
            (
                b"pay 4111-1111-1111-1111 now, mail bob@example.com.",
                b"pay [card] now, mail [email].",
            ),
            (
                b"4111111111111112 order 123456789012 @handle a@b x@y.z1",
                b"4111111111111112 order 123456789012 @handle a@b x@y.z1",
            ),
        ] {
            let mut ex = exchange("acme");
            ex.status = Some(http::StatusCode::OK);
            ex.response_body = Some(Bytes::from_static(body));
            p.call(Phase::Response, &mut ex).unwrap();
            assert_eq!(ex.response_body.as_deref(), Some(clean));
        }
    }
}

#[test]
fn blocklist_plugin_is_per_tenant() {
    let kv = Arc::new(MemoryKv::new());
    let rt = runtime(kv.clone());
    kv.put(
        &KvScope {
            tenant: "acme".into(),
            plugin: "blocklist".into(),
        },
        "block:mallory",
        "banned for abuse",
    );
    for p in both(&rt, "blocklist") {
        let call = |tenant: &str, user: &str| -> Exchange {
            let mut ex = exchange(tenant);
            ex.request_headers
                .insert("x-user-id", user.parse().unwrap());
            p.call(Phase::Request, &mut ex).unwrap();
            ex
        };
        let blocked = call("acme", "mallory").rejected.expect("blocked at acme");
        assert_eq!(blocked.status, 403);
        assert_eq!(blocked.body, "banned for abuse");
        assert!(call("acme", "alice").rejected.is_none());
        assert!(
            call("globex", "mallory").rejected.is_none(),
            "acme's list does not apply to globex"
        );
    }
}
