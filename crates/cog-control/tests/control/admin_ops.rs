//! The admin API's plugins, usage and declarative documents, over both
//! stores.

use std::sync::Arc;

use bytes::Bytes;
use cog_control::admin::PluginCheck;
use cog_control::{Directory, digest};
use cog_ratelimit::store::{MemoryStore, Store as _};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::{Answer, Api, api, api_with, problem, revision};
use crate::suite::Pair;

const HEADERS_WASM: &[u8] = include_bytes!("../../../../examples/plugins/dist/headers.wasm");

impl Api {
    async fn upload(&self, path: &str, bytes: &[u8]) -> Answer {
        self.call(
            Method::PUT,
            path,
            Some(&self.write),
            &[("content-type", "application/octet-stream")],
            Bytes::copy_from_slice(bytes),
        )
        .await
    }
}

async fn plan_and_tenant(api: &Api, plan: Value) {
    let a = api
        .write(
            Method::POST,
            "/v1/plans",
            json!({"name": "pro", "plan": plan}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let a = api
        .write(
            Method::POST,
            "/v1/tenants",
            json!({"id": "acme", "tenant": {"plan": "pro"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
}

async fn plugins_upload_attach_and_delete((store, other): Pair) {
    let api = api(store.clone()).await;
    plan_and_tenant(&api, json!({})).await;

    // A new plugin: 201, stored by the digest of its bytes.
    let a = api
        .upload(
            "/v1/plugins/headers?version=1.0&on_error=fail",
            HEADERS_WASM,
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    assert_eq!(a.body["plugin"]["digest"], digest(HEADERS_WASM));
    assert_eq!(a.body["plugin"]["on_error"], "fail");
    assert_eq!(
        store
            .get_blob(&digest(HEADERS_WASM))
            .await
            .unwrap()
            .unwrap(),
        HEADERS_WASM
    );

    let a = api
        .write(
            Method::POST,
            "/v1/plugins/headers/attach",
            json!({"plans": ["pro"], "tenants": ["acme"]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["plugin"]["attach"]["plans"], json!(["pro"]));
    // Attaching twice adds nothing.
    let a = api
        .write(
            Method::POST,
            "/v1/plugins/headers/attach",
            json!({"plans": ["pro"]}),
        )
        .await;
    assert_eq!(a.body["plugin"]["attach"]["plans"], json!(["pro"]));

    // The plugin runs for the plan's tenant wherever the store is read.
    let state = other.load().await.unwrap();
    assert_eq!(state.spec.plugins["headers"].attach.tenants, ["acme"]);

    // A new version keeps who it runs for and its policy; only the label
    // the query names changes.
    let mut v2 = HEADERS_WASM.to_vec();
    v2.extend_from_slice(b"\0\x04name\x02v2"); // a custom section
    let a = api.upload("/v1/plugins/headers?version=2.0", &v2).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["plugin"]["digest"], digest(&v2));
    assert_eq!(a.body["plugin"]["version"], "2.0");
    assert_eq!(a.body["plugin"]["on_error"], "fail");
    assert_eq!(a.body["plugin"]["attach"]["tenants"], json!(["acme"]));
    // The old bytes went with the old version.
    assert!(
        store
            .get_blob(&digest(HEADERS_WASM))
            .await
            .unwrap()
            .is_none()
    );

    let a = api
        .write(
            Method::PATCH,
            "/v1/plugins/headers",
            json!({"config": "x-env=prod", "limits": {"fuel": 1000000}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["plugin"]["config"], "x-env=prod");
    assert_eq!(a.body["plugin"]["version"], "2.0");
    let a = api
        .write(Method::POST, "/v1/plugins/headers/disable", Value::Null)
        .await;
    assert_eq!(a.body["plugin"]["enabled"], false);
    let a = api
        .write(Method::POST, "/v1/plugins/headers/enable", Value::Null)
        .await;
    assert!(
        a.body["plugin"].get("enabled").is_none(),
        "enabled is the default"
    );
    let a = api
        .write(
            Method::POST,
            "/v1/plugins/headers/detach",
            json!({"tenants": ["acme"]}),
        )
        .await;
    assert!(a.body["plugin"]["attach"].get("tenants").is_none());
    assert_eq!(a.body["plugin"]["attach"]["plans"], json!(["pro"]));

    // PATCH replaces the whole attachment when it names one.
    let a = api
        .write(
            Method::PATCH,
            "/v1/plugins/headers",
            json!({"attach": {"tenants": ["acme"]}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["plugin"]["attach"], json!({"tenants": ["acme"]}));
    let a = api
        .write(
            Method::PATCH,
            "/v1/plugins/headers",
            json!({"attach": {"plans": ["pro"]}}),
        )
        .await;
    assert_eq!(a.body["plugin"]["attach"], json!({"plans": ["pro"]}));

    let a = api.get("/v1/plugins").await;
    assert_eq!(a.body["items"][0]["name"], "headers");
    let a = api.get("/v1/plugins/headers").await;
    assert_eq!(a.body["plugin"]["config"], "x-env=prod");

    // Refusals: not wasm, Python that is not text, a bad name, a
    // reference to nothing, an unknown field, too large, a reader.
    let a = api.upload("/v1/plugins/junk", b"MZ\x90\0").await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "plugin-refused");
    let a = api
        .upload("/v1/plugins/junk?lang=python", b"print(1)\0")
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "plugin-refused");
    let a = api.upload("/v1/plugins/..%2Fetc", HEADERS_WASM).await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let a = api.upload("/v1/plugins/x?lang=cobol", HEADERS_WASM).await;
    problem(&a, StatusCode::BAD_REQUEST, "malformed");
    let a = api
        .write(
            Method::POST,
            "/v1/plugins/headers/attach",
            json!({"plans": ["gold"]}),
        )
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let a = api
        .write(Method::PATCH, "/v1/plugins/headers", json!({"fuel": 1}))
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let huge = vec![0u8; cog_control::admin::MAX_BLOB_BYTES + 1];
    let a = api.upload("/v1/plugins/huge", &huge).await;
    problem(&a, StatusCode::PAYLOAD_TOO_LARGE, "too-large");
    let a = api
        .call(
            Method::PUT,
            "/v1/plugins/other",
            Some(&api.read),
            &[],
            Bytes::from_static(HEADERS_WASM),
        )
        .await;
    problem(&a, StatusCode::FORBIDDEN, "forbidden");
    let a = api
        .write(Method::POST, "/v1/plugins/nothing/enable", Value::Null)
        .await;
    problem(&a, StatusCode::NOT_FOUND, "not-found");
    let state = api.control.state().await.unwrap();
    assert_eq!(state.spec.plugins.len(), 1, "nothing refused was stored");

    let a = api
        .write(Method::DELETE, "/v1/plugins/headers", Value::Null)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    problem(
        &api.get("/v1/plugins/headers").await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
    assert!(store.get_blob(&digest(&v2)).await.unwrap().is_none());

    let a = api.get("/v1/audit").await;
    let actions: Vec<&str> = a.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .filter(|a| a.starts_with("plugin."))
        .collect();
    assert_eq!(
        actions,
        [
            "plugin.install",
            "plugin.update",
            "plugin.update",
            "plugin.install",
            "plugin.update",
            "plugin.update",
            "plugin.update",
            "plugin.update",
            "plugin.update",
            "plugin.update",
            "plugin.delete"
        ]
    );
}

/// What a recording check saw: the plugin, its bytes' length, the limits.
type Seen = Arc<parking_lot::Mutex<Vec<(String, usize, Vec<Option<cog_control::PluginLimits>>)>>>;

/// An API whose plugin check records every call and refuses bytes longer
/// than `HEADERS_WASM` ("too slow to start") and fuel under 100 ("out of
/// fuel while starting"); plan `pro` (fuel 5 000) with tenant `acme`, plan
/// `tiny` with `tiny`'s plugin limits, and plugin `headers` uploaded and
/// attached to `acme`.
async fn checked_api(store: Arc<dyn cog_control::store::Store>, tiny: Value) -> (Api, Seen) {
    let seen = Seen::default();
    let log = seen.clone();
    let check: PluginCheck = Arc::new(move |name, _lang, bytes, limits| {
        log.lock()
            .push((name.to_owned(), bytes.len(), limits.to_vec()));
        if bytes.len() > HEADERS_WASM.len() {
            return Err("too slow to start".into());
        }
        if limits.iter().flatten().any(|l| l.fuel < Some(100)) {
            return Err("out of fuel while starting".into());
        }
        Ok(())
    });
    let api = api_with(store, |a| a.check_plugins(check)).await;
    plan_and_tenant(&api, json!({"plugin_limits": {"fuel": 5000}})).await;
    let a = api
        .write(
            Method::POST,
            "/v1/plans",
            json!({"name": "tiny", "plan": {"plugin_limits": tiny}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let a = api.upload("/v1/plugins/headers", HEADERS_WASM).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    // Attached to a tenant on `pro`: checked under pro's limits.
    let a = api
        .write(
            Method::POST,
            "/v1/plugins/headers/attach",
            json!({"tenants": ["acme"]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    (api, seen)
}

/// The server's own check sees the bytes and the limits of every plan the
/// plugin runs under, with the plugin's own over them; its refusal is a
/// 422 and stores nothing. A change that makes a plugin run under limits
/// it was not checked under (attached to another plan, own limits) is
/// checked too, with the stored bytes, under those limits only.
async fn uploads_pass_the_servers_check((store, _): Pair) {
    let (api, seen) = checked_api(store.clone(), json!({"fuel": 50, "memory_bytes": 65536})).await;
    let fuel = |f: u64| cog_control::PluginLimits {
        fuel: Some(f),
        ..Default::default()
    };
    // Attached to `tiny`, where it cannot start: refused, unchanged.
    let a = api
        .write(
            Method::POST,
            "/v1/plugins/headers/attach",
            json!({"plans": ["tiny"]}),
        )
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "plugin-refused");
    assert!(a.body["detail"].as_str().unwrap().contains("out of fuel"));
    let a = api.get("/v1/plugins/headers").await;
    assert_eq!(a.body["plugin"]["attach"], json!({"tenants": ["acme"]}));
    // Its own limits below what it needs: refused the same way.
    let a = api
        .write(
            Method::PATCH,
            "/v1/plugins/headers",
            json!({"limits": {"fuel": 10}}),
        )
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "plugin-refused");
    assert!(
        api.get("/v1/plugins/headers").await.body["plugin"]
            .get("limits")
            .is_none()
    );
    // Its own fuel over tiny's: it may run there, under tiny's memory.
    let a = api
        .write(
            Method::PATCH,
            "/v1/plugins/headers",
            json!({"limits": {"fuel": 1000}, "attach": {"tenants": ["acme"], "plans": ["tiny"]}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    // A change that reaches no new limits is not checked again.
    let checked = seen.lock().len();
    for (method, path, body) in [
        (
            Method::PATCH,
            "/v1/plugins/headers",
            json!({"config": "x=1"}),
        ),
        (
            Method::POST,
            "/v1/plugins/headers/detach",
            json!({"tenants": ["acme"]}),
        ),
        (Method::POST, "/v1/plugins/headers/disable", json!({})),
    ] {
        let a = api.write(method, path, body).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {:?}", a.body);
    }
    assert_eq!(seen.lock().len(), checked);
    // A new version is checked under every limit it runs under.
    let mut v2 = HEADERS_WASM.to_vec();
    v2.extend_from_slice(b"\0\x01x");
    let a = api.upload("/v1/plugins/headers", &v2).await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "plugin-refused");
    assert!(a.body["detail"].as_str().unwrap().contains("too slow"));
    assert!(store.get_blob(&digest(&v2)).await.unwrap().is_none());
    let seen = seen.lock();
    let n = HEADERS_WASM.len();
    // First under the defaults (attached to nobody), then under the plan
    // of the tenant it runs for; each change under what it added only,
    // with the stored bytes.
    assert_eq!(seen[0], ("headers".to_owned(), n, vec![None]));
    assert_eq!(seen[1], ("headers".to_owned(), n, vec![Some(fuel(5000))]));
    assert_eq!(
        seen[2].2,
        [Some(cog_control::PluginLimits {
            fuel: Some(50),
            memory_bytes: Some(65536),
            deadline: None,
            ..Default::default()
        })]
    );
    assert_eq!(seen[3].2, [Some(fuel(10))]);
    let own_over_tiny = cog_control::PluginLimits {
        fuel: Some(1000),
        memory_bytes: Some(65536),
        deadline: None,
        ..Default::default()
    };
    assert_eq!(
        seen[4],
        (
            "headers".to_owned(),
            n,
            vec![Some(own_over_tiny.clone()), Some(fuel(1000))]
        )
    );
    assert_eq!(seen[5].1, v2.len());
    assert_eq!(seen[5].2, [Some(own_over_tiny)]);
    assert_eq!(seen.len(), 6);
}

/// Changes elsewhere that make a plugin run under limits it was not
/// checked under — its plan's plugin limits replaced, its tenant moved to
/// another plan, a document applied — are checked too, and refused the
/// same way, nothing written.
async fn plan_tenant_and_apply_changes_recheck_plugins((store, _): Pair) {
    let (api, seen) = checked_api(store, json!({"fuel": 50})).await;
    let revision = api.control.state().await.unwrap().revision;

    // acme moved to `tiny`: its plugin could not start there.
    let a = api
        .write(Method::PUT, "/v1/tenants/acme", json!({"plan": "tiny"}))
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "plugin-refused");
    assert!(a.body["detail"].as_str().unwrap().contains("out of fuel"));
    // pro's plugin limits cut under what it needs.
    let a = api
        .write(
            Method::PUT,
            "/v1/plans/pro",
            json!({"plugin_limits": {"fuel": 10}}),
        )
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "plugin-refused");
    // The same through a document.
    let a = api
        .write(
            Method::POST,
            "/v1/apply",
            json!({"plans": {"pro": {"plugin_limits": {"fuel": 20}}}}),
        )
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "plugin-refused");
    assert_eq!(api.control.state().await.unwrap().revision, revision);
    assert_eq!(
        api.get("/v1/tenants/acme").await.body["tenant"]["plan"],
        "pro"
    );

    // A write refused as invalid (a plan that does not exist) is refused
    // as that, without loading anything.
    let checked = seen.lock().len();
    let a = api
        .write(Method::PUT, "/v1/tenants/acme", json!({"plan": "gold"}))
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(seen.lock().len(), checked);

    // Changes it can run under pass, each checked under what it adds.
    let a = api
        .write(
            Method::PUT,
            "/v1/plans/pro",
            json!({"plugin_limits": {"fuel": 6000}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let a = api
        .write(
            Method::PUT,
            "/v1/tenants/acme",
            json!({"plan": "pro", "display_name": "Acme"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let seen = seen.lock();
    assert_eq!(seen.len(), checked + 1, "{seen:?}");
    assert_eq!(
        (seen[checked].0.as_str(), &seen[checked].2),
        (
            "headers",
            &vec![Some(cog_control::PluginLimits {
                fuel: Some(6000),
                ..Default::default()
            })]
        )
    );
}

/// Usage reads the limiter the services count in, without counting.
async fn usage_reads_the_limiter((store, other): Pair) {
    let limiter = MemoryStore::new();
    let api = api_with(store.clone(), |a| a.with_limiter(limiter.clone())).await;
    plan_and_tenant(
        &api,
        json!({"limits": [{"name": "rpm", "rate": 5, "window": "1m"}],
               "quotas": [{"name": "daily", "rate": 100, "window": "1d"}]}),
    )
    .await;
    let a = api.get("/v1/tenants/acme/usage").await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["limits"][0]["remaining"], 5);
    assert_eq!(a.body["limits"][1]["name"], "daily");
    assert_eq!(a.body["limits"][1]["remaining"], 100);

    // Two requests, as a service's RateLimitLayer counts them.
    let directory = Directory::start(other).await.unwrap();
    let quota = directory.tenant("acme").unwrap().quota.clone().unwrap();
    for _ in 0..2 {
        assert!(limiter.check("acme", &quota, 1).await.unwrap().is_allowed());
    }
    let a = api.get("/v1/tenants/acme/usage").await;
    assert_eq!(a.body["plan"], "pro");
    assert_eq!(a.body["limits"][0]["name"], "rpm");
    assert_eq!(a.body["limits"][0]["limit"], 5);
    assert_eq!(a.body["limits"][0]["policy"], "5/1m burst 5");
    assert_eq!(a.body["limits"][1]["policy"], "100/1d sliding");
    assert_eq!(a.body["limits"][0]["remaining"], 3);
    assert_eq!(a.body["limits"][1]["remaining"], 98);
    let reset = a.body["limits"][0]["reset_after_ms"].as_u64().unwrap();
    assert!((20_000..=24_000).contains(&reset), "{reset}");
    // Reading did not count.
    let a = api.get("/v1/tenants/acme/usage").await;
    assert_eq!(a.body["limits"][0]["remaining"], 3);

    problem(
        &api.get("/v1/tenants/nobody/usage").await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
    let bare = crate::admin::api(store).await;
    problem(
        &bare.get("/v1/tenants/acme/usage").await,
        StatusCode::NOT_IMPLEMENTED,
        "no-limiter",
    );
}

async fn documents_diff_and_apply((store, _): Pair) {
    let api = api(store).await;
    plan_and_tenant(&api, json!({})).await;
    let doc = json!({
        "plans": {"pro": {}, "free": {"limits": [{"name": "rps", "rate": 1, "window": "1s"}]}},
        "tenants": {"globex": {"plan": "free"}},
    });
    let a = api.write(Method::POST, "/v1/diff", doc.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(
        a.body["changes"],
        json!([
            {"action": "create", "kind": "plan", "id": "free"},
            {"action": "create", "kind": "tenant", "id": "globex"},
        ])
    );
    let a = api
        .write(Method::POST, "/v1/diff?prune=true", doc.clone())
        .await;
    assert_eq!(
        a.body["changes"][2],
        json!({"action": "delete", "kind": "tenant", "id": "acme"})
    );
    // A dry run writes nothing.
    let before = api.control.state().await.unwrap().revision;
    let a = api
        .write(
            Method::POST,
            "/v1/apply?dry_run=true&prune=true",
            doc.clone(),
        )
        .await;
    assert_eq!(a.body["dry_run"], true);
    assert_eq!(a.body["changes"].as_array().unwrap().len(), 3);
    assert_eq!(api.control.state().await.unwrap().revision, before);

    // Applied on the revision read: one commit.
    let etag = format!("\"{before}\"");
    let a = api
        .call(
            Method::POST,
            "/v1/apply?prune=true",
            Some(&api.write),
            &[("if-match", &etag)],
            doc.to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["dry_run"], false);
    assert_eq!(revision(&a), before + 1);
    let spec = api.control.state().await.unwrap().spec;
    assert!(spec.tenants.contains_key("globex") && !spec.tenants.contains_key("acme"));
    // Again: nothing to change.
    let a = api.write(Method::POST, "/v1/diff", doc.clone()).await;
    assert_eq!(a.body["changes"], json!([]));
    // The same If-Match again is stale now.
    let a = api
        .call(
            Method::POST,
            "/v1/apply",
            Some(&api.write),
            &[("if-match", &etag)],
            doc.to_string(),
        )
        .await;
    problem(&a, StatusCode::PRECONDITION_FAILED, "stale");

    // Documents that cannot apply: nothing written.
    let at = api.control.state().await.unwrap().revision;
    for (body, status, kind) in [
        (
            json!({"tenants": {"x": {"plan": "gold"}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            json!({"plugins": {"p": {"file": "p.wasm"}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            json!({"plugins": {"p": {"digest": digest(b"nothing")}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            json!({"planz": {}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (json!([1, 2]), StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
    ] {
        let a = api.write(Method::POST, "/v1/apply", body.clone()).await;
        problem(&a, status, kind);
        let a = api.write(Method::POST, "/v1/diff", body).await;
        problem(&a, status, kind);
    }
    let a = api
        .call(
            Method::POST,
            "/v1/apply",
            Some(&api.write),
            &[],
            "{\"plans\":",
        )
        .await;
    problem(&a, StatusCode::BAD_REQUEST, "malformed");
    let a = api
        .call(
            Method::POST,
            "/v1/apply",
            Some(&api.read),
            &[],
            doc.to_string(),
        )
        .await;
    problem(&a, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(api.control.state().await.unwrap().revision, at);
}

/// `/v1/placement`: 404 before the first deployment, deployments added,
/// a partition moved (If-Match honoured), refusals as problems, a read
/// token refused, every write in the audit log.
async fn placement_over_http((store, _): Pair) {
    let api = api(store.clone()).await;
    problem(
        &api.get("/v1/placement").await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
    let a = api
        .write(
            Method::PUT,
            "/v1/placement/partitions/7",
            json!({"deployment": "main"}),
        )
        .await;
    problem(&a, StatusCode::NOT_FOUND, "not-found");
    for name in ["main", "big"] {
        let a = api
            .write(
                Method::POST,
                "/v1/placement/deployments",
                json!({"name": name}),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    }
    let a = api
        .write(
            Method::POST,
            "/v1/placement/deployments",
            json!({"name": "big"}),
        )
        .await;
    problem(&a, StatusCode::CONFLICT, "exists");
    let a = api
        .write(
            Method::POST,
            "/v1/placement/deployments",
            json!({"name": "a b"}),
        )
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "invalid");

    let table = api.get("/v1/placement").await;
    let (at, table_before) = (revision(&table), table.body["revision"].as_u64().unwrap());
    let a = api
        .call(
            Method::PUT,
            "/v1/placement/partitions/130",
            Some(&api.write),
            &[("if-match", &format!("\"{at}\""))],
            json!({"deployment": "big"}).to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert!(
        a.body["revision"].as_u64().unwrap() > table_before,
        "{:?}",
        a.body
    );
    assert_eq!(a.body["deployments"], json!(["main", "big"]));
    assert_eq!(a.body["partitions"], json!({"130": "big"}));
    // The same If-Match again: the store has moved on.
    let a = api
        .call(
            Method::PUT,
            "/v1/placement/partitions/131",
            Some(&api.write),
            &[("if-match", &format!("\"{at}\""))],
            json!({"deployment": "big"}).to_string(),
        )
        .await;
    problem(&a, StatusCode::PRECONDITION_FAILED, "stale");
    for bad in ["256", "-1", "x"] {
        let a = api
            .write(
                Method::PUT,
                &format!("/v1/placement/partitions/{bad}"),
                json!({"deployment": "big"}),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", a.body);
    }
    let a = api
        .write(
            Method::PUT,
            "/v1/placement/partitions/1",
            json!({"deployment": "nowhere"}),
        )
        .await;
    problem(&a, StatusCode::NOT_FOUND, "not-found");
    let a = api
        .call(
            Method::PUT,
            "/v1/placement/partitions/1",
            Some(&api.read),
            &[],
            json!({"deployment": "big"}).to_string(),
        )
        .await;
    problem(&a, StatusCode::FORBIDDEN, "forbidden");

    let table = api.get("/v1/placement").await;
    assert_eq!(table.body["partitions"], json!({"130": "big"}));
    let audit = api.get("/v1/audit").await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("placement."))
        .collect();
    assert_eq!(
        actions,
        ["placement.add", "placement.add", "placement.move"]
    );
}

crate::both_stores!(
    plugins_upload_attach_and_delete,
    uploads_pass_the_servers_check,
    plan_tenant_and_apply_changes_recheck_plugins,
    usage_reads_the_limiter,
    documents_diff_and_apply,
    placement_over_http
);
