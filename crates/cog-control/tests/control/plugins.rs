//! Tenant plugins resolved from the store, and following it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cog_control::auth::AuthenticateLayer;
use cog_control::store::FileStore;
use cog_control::{Attach, Control, Directory, PluginSpec, Tenant};
use cog_sandbox::Runtime;
use cog_sandbox::layer::{PluginLayer, PluginResolver};
use http::{Request, Response};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt, service_fn};

use crate::suite::plan;

const HEADERS_WASM: &[u8] = include_bytes!("../../../../examples/plugins/dist/headers.wasm");

type Svc = tower::util::BoxCloneService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

/// Authentication and the tenants' plugins from the store at `path`,
/// around a service answering "ok"; and the directory behind them.
async fn service(path: &std::path::Path) -> (Directory, Svc) {
    service_with(path, Runtime::new()).await
}

async fn service_with(path: &std::path::Path, runtime: Runtime) -> (Directory, Svc) {
    let d = Directory::start_with_plugins(
        Arc::new(FileStore::new(path)),
        Duration::from_millis(50),
        runtime,
    )
    .await
    .unwrap();
    let svc = ServiceBuilder::new()
        .layer(AuthenticateLayer::new(d.clone()))
        .layer(PluginLayer::new(d.clone()))
        .service(service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }));
    (d, tower::util::BoxCloneService::new(svc))
}

/// `GET /` with `key`.
async fn get(svc: &Svc, key: &str) -> Response<Full<Bytes>> {
    let req = Request::get("/")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    svc.clone().oneshot(req).await.unwrap()
}

/// A file store at `path` with plans `free` and `pro`, tenant `acme` on
/// `free` and `bigco` on `bigco_plan`: its control handle and their keys.
async fn two_tenants(path: &std::path::Path, bigco_plan: &str) -> (Control, String, String) {
    let c = Control::new(Arc::new(FileStore::new(path)));
    c.create_plan("free", plan("rps=100/1s")).await.unwrap();
    c.create_plan("pro", plan("rps=100/1s")).await.unwrap();
    c.create_tenant("acme", Tenant::new("free")).await.unwrap();
    c.create_tenant("bigco", Tenant::new(bigco_plan))
        .await
        .unwrap();
    let acme = c.create_key("acme", None).await.unwrap().secret;
    let bigco = c.create_key("bigco", None).await.unwrap().secret;
    (c, acme, bigco)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_plugins_run_for_its_tenants_and_follow_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let (c, acme, bigco) = two_tenants(&path, "pro").await;
    c.install_plugin(
        "headers",
        HEADERS_WASM,
        PluginSpec {
            version: "1".into(),
            attach: Attach {
                tenants: vec![],
                plans: vec!["free".into()],
            },
            config: "response add x-plugin: on".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let (d, svc) = service(&path).await;
    let call = |key: String| {
        let svc = svc.clone();
        async move {
            let res = get(&svc, &key).await;
            assert_eq!(res.status(), 200);
            res.headers()
                .get("x-plugin")
                .map(|v| v.to_str().unwrap().to_owned())
        }
    };
    assert_eq!(call(acme.clone()).await.as_deref(), Some("on"));
    // Another plan: not attached.
    assert_eq!(call(bigco.clone()).await, None);
    // What the layer asks: `None` for no plugins (no tenant, or a tenant
    // without), the same plugins `resolve` gives otherwise.
    let parts_of = |key: Option<&str>| {
        let mut parts = Request::get("/").body(()).unwrap().into_parts().0;
        if let Some(key) = key {
            parts.extensions.insert(d.authenticate(key).unwrap());
        }
        parts
    };
    let with = parts_of(Some(&acme));
    let some = PluginResolver::resolve_any(&d, &with).expect("acme's plan has a plugin");
    assert_eq!(some.plugins.len(), 1);
    assert_eq!(&*some.tenant, "acme");
    assert_eq!(PluginResolver::resolve(&d, &with).plugins.len(), 1);
    for parts in [parts_of(Some(&bigco)), parts_of(None)] {
        assert!(PluginResolver::resolve_any(&d, &parts).is_none());
        assert!(PluginResolver::resolve(&d, &parts).plugins.is_empty());
    }

    // Disabled in the store: gone from the running layer.
    c.update_plugin("headers", |p| p.enabled = false)
        .await
        .unwrap();
    let revision = c.state().await.unwrap().revision;
    for _ in 0..200 {
        if d.revision() == revision {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(d.revision(), revision, "the change was not seen within 5 s");
    assert_eq!(call(acme).await, None);
}

/// A plugin whose bytes cannot be loaded (here: missing from the store) is
/// not silently left out — its failure policy applies to its tenants'
/// requests: `fail` refuses them, `skip` lets them through without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_fails_to_load_meets_its_failure_policy() {
    use cog_control::OnFailure;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let c = Control::new(Arc::new(FileStore::new(&path)));
    c.create_plan("free", plan("rps=100/1s")).await.unwrap();
    c.create_tenant("acme", Tenant::new("free")).await.unwrap();
    let acme = c.create_key("acme", None).await.unwrap().secret;
    let digest = c
        .install_plugin(
            "headers",
            HEADERS_WASM,
            PluginSpec {
                version: "1".into(),
                attach: Attach {
                    tenants: vec!["acme".into()],
                    plans: vec![],
                },
                config: "response add x-plugin: on".into(),
                on_error: OnFailure::Fail,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // The bytes are lost.
    let blob = dir.path().join(format!(
        "s.json.blobs/{}.wasm",
        digest.trim_start_matches("sha256:")
    ));
    std::fs::remove_file(&blob).unwrap();

    let (_, svc) = service(&path).await;
    let call = || {
        let svc = svc.clone();
        let key = acme.clone();
        async move { get(&svc, &key).await.status() }
    };
    assert_eq!(call().await, 500, "fail: refused, not run without it");

    c.update_plugin("headers", |p| p.on_error = OnFailure::Skip)
        .await
        .unwrap();
    for _ in 0..100 {
        if call().await == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("skip: still refused");
}

const HEADERS_PY: &[u8] = include_bytes!("../../../../examples/plugins/python/headers.py");

/// The CPython for WASI `scripts/setup` fetched.
fn python() -> cog_sandbox::Python {
    let dir = std::env::var_os("COG_PYTHON_WASI")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/python-wasi")
        });
    cog_sandbox::Python::open(&dir).unwrap_or_else(|e| panic!("{e} (scripts/setup fetches it)"))
}

/// A Python plugin from the store runs for its plan's tenants through the
/// directory, like a wasm one; without an interpreter in the runtime it
/// meets its failure policy. Python source that is not text is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_plugins_run_from_the_store() {
    use cog_control::{OnFailure, PluginLang};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let c = Control::new(Arc::new(FileStore::new(&path)));
    c.create_plan("pro", plan("rps=100/1s")).await.unwrap();
    c.create_tenant("bigco", Tenant::new("pro")).await.unwrap();
    let key = c.create_key("bigco", None).await.unwrap().secret;
    let spec = PluginSpec {
        lang: PluginLang::Python,
        attach: Attach {
            tenants: vec![],
            plans: vec!["pro".into()],
        },
        config: "response add x-plugin: python".into(),
        on_error: OnFailure::Fail,
        ..Default::default()
    };
    let refused = c
        .install_plugin(
            "bad",
            b"def on_request(req):\n    pass\n\xff\0",
            spec.clone(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, cog_control::ControlError::Plugin(_)),
        "{refused:?}"
    );
    c.install_plugin("headers", HEADERS_PY, spec).await.unwrap();
    let stored = c.state().await.unwrap().spec.plugins["headers"].clone();
    assert_eq!(stored.lang, PluginLang::Python);

    let (_, svc) = service_with(&path, Runtime::new().python(python())).await;
    let res = get(&svc, &key).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-plugin"], "python");

    // A runtime without Python: the plugin cannot load; `fail` refuses.
    let (_, svc) = service(&path).await;
    assert_eq!(get(&svc, &key).await.status(), 500);
}

/// Counts its calls in a global, in the request header `x-calls` (one
/// digit): a fresh instance says 0.
const COUNTING: &str = include_str!("../../testdata/counting.wat");

/// The same in Python.
const COUNTING_PY: &[u8] = b"calls = 0\n\
def on_request(req):\n    global calls\n    req.headers['x-calls'] = str(calls)\n    calls += 1\n";

/// The calls the instance serving `key`'s tenant made before this one —
/// 0: a fresh instance. The plugin runs on this thread, as the directory
/// resolves it now.
fn calls_before(d: &Directory, key: &str) -> u32 {
    use cog_sandbox::{Exchange, Phase};
    let mut parts = Request::get("/").body(()).unwrap().into_parts().0;
    parts.extensions.insert(d.authenticate(key).unwrap());
    let resolved = PluginResolver::resolve(d, &parts);
    assert_eq!(resolved.plugins.len(), 1);
    let mut ex = Exchange::new(
        http::Method::GET,
        http::Uri::from_static("/"),
        resolved.tenant.clone(),
    );
    resolved.plugins[0].call(Phase::Request, &mut ex).unwrap();
    ex.request_headers["x-calls"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Control-plane changes that leave a tenant and its plugin as they were
/// leave its warm instances to it — a new view does not make every
/// tenant's next call start a plugin cold (a Python interpreter: ms) —
/// while a changed plugin, a tenant deleted and created again (another
/// customer, perhaps), or a store that went back start afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_instances_outlive_changes_that_leave_them_alone() {
    use cog_control::PluginLang;
    use cog_control::store::Store;
    let wasm = wat::parse_str(COUNTING).unwrap();
    for (lang, code) in [
        (PluginLang::Wasm, wasm.as_slice()),
        (PluginLang::Python, COUNTING_PY),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let (c, acme, bigco) = two_tenants(&path, "free").await;
        let spec = PluginSpec {
            lang,
            attach: Attach {
                tenants: vec![],
                plans: vec!["free".into()],
            },
            ..Default::default()
        };
        c.install_plugin("counting", code, spec).await.unwrap();
        let d = Directory::start_with_plugins(
            Arc::new(FileStore::new(&path)),
            Duration::from_secs(3600),
            Runtime::new().python(python()),
        )
        .await
        .unwrap();
        let calls = |key: &str| calls_before(&d, key);
        assert_eq!((calls(&acme), calls(&acme), calls(&bigco)), (0, 1, 0));

        // A key, another tenant, another plan, the tenant's own name.
        c.create_key("bigco", None).await.unwrap();
        c.create_tenant("carol", Tenant::new("pro")).await.unwrap();
        c.update_plan("pro", |p| p.limits = vec![]).await.unwrap();
        c.update_tenant("acme", |t| t.display_name = "Acme".into())
            .await
            .unwrap();
        d.refresh().await.unwrap();
        assert_eq!((calls(&acme), calls(&bigco)), (2, 1), "{lang:?}: kept");

        // The plugin's configuration changed: a new plugin for everyone.
        c.update_plugin("counting", |p| p.config = "v2".into())
            .await
            .unwrap();
        d.refresh().await.unwrap();
        assert_eq!((calls(&acme), calls(&bigco)), (0, 0), "{lang:?}: changed");

        // Deleted and created again between two views: another tenant.
        c.delete_tenant("acme").await.unwrap();
        c.create_tenant("acme", Tenant::new("free")).await.unwrap();
        let acme = c.create_key("acme", None).await.unwrap().secret;
        d.refresh().await.unwrap();
        assert_eq!((calls(&acme), calls(&bigco)), (0, 1), "{lang:?}: renewed");

        // The store went back: what it says of the writes in between is
        // lost, so nothing is kept.
        let backup = std::fs::read(&path).unwrap();
        c.create_tenant("dave", Tenant::new("pro")).await.unwrap();
        d.refresh().await.unwrap();
        assert_eq!((calls(&acme), calls(&bigco)), (1, 2), "{lang:?}: kept");
        std::fs::write(&path, backup).unwrap();
        d.refresh().await.unwrap();
        assert_eq!((calls(&acme), calls(&bigco)), (0, 0), "{lang:?}: went back");

        // A write the audit log does not name (made around `Control`, or
        // trimmed with more than `AUDIT_KEEP` since): nothing is kept.
        let store = FileStore::new(&path);
        store.commit(&store.load().await.unwrap()).await.unwrap();
        d.refresh().await.unwrap();
        assert_eq!((calls(&acme), calls(&bigco)), (0, 0), "{lang:?}: unnamed");
    }
}
