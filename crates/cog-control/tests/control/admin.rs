//! The admin HTTP API over both stores: the happy path, every failure it
//! names, pagination, and the committed OpenAPI description.

use std::sync::Arc;

use axum::Router;
use bytes::Bytes;
use cog_control::admin::Admin;
use cog_control::store::Store;
use cog_control::{Control, Directory, Scope};
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::suite::Pair;

pub(crate) struct Api {
    pub(crate) router: Router,
    pub(crate) control: Control,
    pub(crate) write: String,
    pub(crate) read: String,
}

pub(crate) async fn api(store: Arc<dyn Store>) -> Api {
    api_with(store, |a| a).await
}

/// The API over `store`, built by `build`.
pub(crate) async fn api_with(store: Arc<dyn Store>, build: impl FnOnce(Admin) -> Admin) -> Api {
    let control = Control::new(store).actor("test");
    let write = control
        .create_token("back office", Scope::Write)
        .await
        .unwrap();
    let read = control
        .create_token("dashboard", Scope::Read)
        .await
        .unwrap();
    Api {
        router: build(Admin::new(control.clone())).router(),
        control,
        write: write.secret,
        read: read.secret,
    }
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) etag: Option<String>,
    pub(crate) content_type: String,
    pub(crate) body: Value,
}

impl Api {
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body: Bytes = body.into();
        if !body.is_empty()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let res = self
            .router
            .clone()
            .oneshot(req.body(axum::body::Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let etag = res
            .headers()
            .get(header::ETAG)
            .map(|v| v.to_str().unwrap().to_owned());
        let content_type = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Answer {
            status,
            etag,
            content_type,
            body,
        }
    }

    pub(crate) async fn write(&self, method: Method, path: &str, body: Value) -> Answer {
        let bytes = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        self.call(method, path, Some(&self.write), &[], bytes).await
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, Some(&self.read), &[], Bytes::new())
            .await
    }
}

/// A problem of `status` and `kind`, as RFC 9457 has it.
pub(crate) fn problem(a: &Answer, status: StatusCode, kind: &str) {
    assert_eq!(a.status, status, "{:?}", a.body);
    assert_eq!(a.content_type, "application/problem+json");
    assert_eq!(a.body["status"], status.as_u16());
    assert_eq!(
        a.body["type"],
        format!("https://cog.dev/problems/{kind}"),
        "{:?}",
        a.body
    );
    assert!(a.body["title"].is_string());
}

/// The revision of the answer's ETag (`"17"`, or `"17-<stamp>"` from a
/// store that keeps stamps).
pub(crate) fn revision(a: &Answer) -> u64 {
    let tag = a.etag.as_deref().expect("an ETag");
    tag.trim_matches('"')
        .parse::<cog_control::store::Version>()
        .unwrap_or_else(|e| panic!("{tag}: {e}"))
        .revision
}

async fn plan_tenant_key_round_trip((store, other): Pair) {
    let api = api(store).await;
    let a = api
        .write(
            Method::POST,
            "/v1/plans",
            json!({"name": "free", "plan": {"limits": [{"name": "rps", "rate": 10, "window": "1s", "burst": 20}]}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let after_plan = revision(&a);
    let a = api.get("/v1/plans/free").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(revision(&a), after_plan);
    assert_eq!(a.body["plan"]["limits"][0]["window"], "1s");

    let a = api
        .write(
            Method::POST,
            "/v1/tenants",
            json!({"id": "acme", "tenant": {"plan": "free", "display_name": "Acme"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let a = api
        .write(
            Method::POST,
            "/v1/tenants/acme/keys",
            json!({"expires_in": "30d"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let secret = a.body["key"].as_str().unwrap().to_owned();
    let key_id = a.body["id"].as_str().unwrap().to_owned();
    // The key authenticates wherever the store is read (another handle,
    // as another instance would).
    let directory = Directory::start(other).await.unwrap();
    assert_eq!(&*directory.authenticate(&secret).unwrap().id, "acme");
    // Listed, never shown again.
    let a = api.get("/v1/keys?tenant=acme").await;
    assert_eq!(a.body["items"][0]["id"], key_id.as_str());
    assert_eq!(a.body["items"][0]["status"], "active");
    assert!(!a.body.to_string().contains(&secret));

    // Suspend and resume.
    let a = api
        .write(Method::POST, "/v1/tenants/acme/suspend", Value::Null)
        .await;
    assert_eq!(a.body["tenant"]["status"], "suspended");
    let a = api
        .write(Method::POST, "/v1/tenants/acme/resume", Value::Null)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.body["tenant"].get("status").is_none(),
        "active is the default"
    );

    // A replace on the revision just read goes through; its ETag is the
    // revision it produced.
    let read = api.get("/v1/tenants/acme").await;
    let etag = read.etag.clone().unwrap();
    let a = api
        .call(
            Method::PUT,
            "/v1/tenants/acme",
            Some(&api.write),
            &[("if-match", &etag)],
            json!({"plan": "free", "overrides": [{"name": "rps", "rate": 50, "window": "1s"}]})
                .to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(revision(&a), revision(&read) + 1);
    assert_eq!(api.control.state().await.unwrap().revision, revision(&a));

    let a = api
        .write(Method::DELETE, &format!("/v1/keys/{key_id}"), Value::Null)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = api.get("/v1/keys").await;
    assert_eq!(a.body["items"][0]["status"], "revoked");
    let a = api
        .write(Method::DELETE, "/v1/tenants/acme", Value::Null)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = api
        .write(Method::DELETE, "/v1/plans/free", Value::Null)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let last = revision(&a);

    // Every write is in the audit log: who, what, on what, the revision
    // it produced.
    let a = api.get("/v1/audit").await;
    let entries = a.body["items"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "token.create",
            "token.create",
            "plan.create",
            "tenant.create",
            "key.create",
            "tenant.suspend",
            "tenant.resume",
            "tenant.update",
            "key.revoke",
            "tenant.delete",
            "plan.delete"
        ]
    );
    assert_eq!(entries[0]["actor"], "test");
    let write_id = &api.write["cogadm_".len().."cogadm_".len() + 8];
    assert_eq!(entries[2]["actor"], format!("token:{write_id}"));
    assert_eq!(entries[2]["target"], "free");
    assert_eq!(entries[2]["revision"], after_plan);
    assert_eq!(entries.last().unwrap()["revision"], last);
    let revisions: Vec<u64> = entries
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert!(
        revisions.windows(2).all(|w| w[1] == w[0] + 1),
        "{revisions:?}"
    );
    // No secret in the log, nor in the store's document.
    assert!(!a.body.to_string().contains(&secret));
    assert!(!a.body.to_string().contains(&api.write));
}

async fn every_failure_is_a_problem((store, _): Pair) {
    let api = api(store).await;
    let plan = json!({"name": "free", "plan": {}});
    // 401: no token, not a token, an unknown one, a revoked one.
    let a = api
        .call(Method::GET, "/v1/plans", None, &[], Bytes::new())
        .await;
    problem(&a, StatusCode::UNAUTHORIZED, "unauthorized");
    let a = api
        .call(Method::GET, "/v1/plans", Some("hunter2"), &[], Bytes::new())
        .await;
    problem(&a, StatusCode::UNAUTHORIZED, "unauthorized");
    // The write token with its last character changed (to one it is not:
    // a token ending in `x` once made this "forgery" the token itself).
    let last = if api.write.ends_with('x') { "y" } else { "x" };
    let forged = format!("{}{last}", &api.write[..api.write.len() - 1]);
    let a = api
        .call(Method::GET, "/v1/plans", Some(&forged), &[], Bytes::new())
        .await;
    problem(&a, StatusCode::UNAUTHORIZED, "unauthorized");
    let spare = api
        .control
        .create_token("spare", Scope::Write)
        .await
        .unwrap();
    api.control.revoke_token(&spare.id).await.unwrap();
    let a = api
        .call(
            Method::GET,
            "/v1/plans",
            Some(&spare.secret),
            &[],
            Bytes::new(),
        )
        .await;
    problem(&a, StatusCode::UNAUTHORIZED, "unauthorized");
    // 403: a read token writing; it still reads.
    let a = api
        .call(
            Method::POST,
            "/v1/plans",
            Some(&api.read),
            &[],
            plan.to_string(),
        )
        .await;
    problem(&a, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(api.get("/v1/plans").await.status, StatusCode::OK);
    // 404: missing objects, ids that cannot exist, unknown endpoints.
    problem(
        &api.get("/v1/plans/nope").await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
    problem(
        &api.get("/v1/tenants/..%2F..%2Fetc%2Fpasswd").await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
    problem(
        &api.get("/v1/nothing").await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
    let a = api
        .write(Method::POST, "/v1/tenants/nope/keys", json!({}))
        .await;
    problem(&a, StatusCode::NOT_FOUND, "not-found");
    // 409: exists, in use.
    assert_eq!(
        api.write(Method::POST, "/v1/plans", plan.clone())
            .await
            .status,
        StatusCode::CREATED
    );
    problem(
        &api.write(Method::POST, "/v1/plans", plan.clone()).await,
        StatusCode::CONFLICT,
        "exists",
    );
    let t = json!({"id": "acme", "tenant": {"plan": "free"}});
    assert_eq!(
        api.write(Method::POST, "/v1/tenants", t).await.status,
        StatusCode::CREATED
    );
    problem(
        &api.write(Method::DELETE, "/v1/plans/free", Value::Null)
            .await,
        StatusCode::CONFLICT,
        "in-use",
    );
    // 412: a write on a revision the store has left, or a garbled one;
    // nothing written.
    let stale = api.get("/v1/plans/free").await.etag.unwrap();
    api.control
        .create_plan("other", Default::default())
        .await
        .unwrap();
    let before = api.control.state().await.unwrap();
    for tag in [stale.as_str(), "W/\"1\"", "garbage"] {
        let a = api
            .call(
                Method::PUT,
                "/v1/plans/free",
                Some(&api.write),
                &[("if-match", tag)],
                "{}",
            )
            .await;
        problem(&a, StatusCode::PRECONDITION_FAILED, "stale");
    }
    assert_eq!(api.control.state().await.unwrap(), before);
    // 422: wrong types, unknown fields, broken rules, with the field.
    let a = api
        .write(
            Method::POST,
            "/v1/plans",
            json!({"name": "x", "plan": {"limits": "lots"}}),
        )
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(a.body["field"], "plan.limits");
    let a = api
        .write(
            Method::POST,
            "/v1/plans",
            json!({"name": "x", "plan": {"colour": "red"}}),
        )
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let a = api
        .write(
            Method::POST,
            "/v1/tenants",
            json!({"id": "ünïcødé/../x", "tenant": {"plan": "free"}}),
        )
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let a = api
        .write(
            Method::POST,
            "/v1/tenants",
            json!({"id": "b", "tenant": {"plan": "missing"}}),
        )
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(a.body["field"], "tenants.b.plan");
    // 400: not JSON, a bad query; 415: not JSON at all; 413: too large.
    let a = api
        .call(
            Method::POST,
            "/v1/plans",
            Some(&api.write),
            &[],
            "{\"name\": ",
        )
        .await;
    problem(&a, StatusCode::BAD_REQUEST, "malformed");
    problem(
        &api.get("/v1/plans?limit=lots").await,
        StatusCode::BAD_REQUEST,
        "malformed",
    );
    problem(
        &api.get("/v1/audit?cursor=x").await,
        StatusCode::BAD_REQUEST,
        "malformed",
    );
    let a = api
        .call(
            Method::POST,
            "/v1/plans",
            Some(&api.write),
            &[("content-type", "text/plain")],
            plan.to_string(),
        )
        .await;
    problem(
        &a,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    );
    let huge = format!(
        "{{\"name\": \"{}\"}}",
        "a".repeat(cog_control::admin::MAX_JSON_BYTES)
    );
    let a = api
        .call(Method::POST, "/v1/plans", Some(&api.write), &[], huge)
        .await;
    problem(&a, StatusCode::PAYLOAD_TOO_LARGE, "too-large");
    // 405.
    let a = api
        .call(
            Method::PATCH,
            "/v1/plans",
            Some(&api.write),
            &[],
            Bytes::new(),
        )
        .await;
    problem(&a, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed");
}

async fn lists_page_with_a_cursor((store, _): Pair) {
    let api = api(store).await;
    api.control
        .update(|s| {
            s.spec.plans.insert("p".into(), Default::default());
            for i in 0..250 {
                s.spec
                    .tenants
                    .insert(format!("t{i:03}"), cog_control::Tenant::new("p"));
            }
            Ok(())
        })
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tenants?limit=100&cursor={c}"),
            None => "/v1/tenants?limit=100".into(),
        };
        let a = api.get(&path).await;
        pages += 1;
        for t in a.body["items"].as_array().unwrap() {
            seen.push(t["id"].as_str().unwrap().to_owned());
        }
        match a.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let all: Vec<String> = (0..250).map(|i| format!("t{i:03}")).collect();
    assert_eq!(seen, all);
    // A page of exactly the rest has no next cursor; the limit is capped.
    let a = api.get("/v1/tenants?limit=250").await;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 250);
    assert!(a.body.get("next_cursor").is_none());
    let a = api.get("/v1/tenants?limit=0").await;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 1);
}

/// Each test fn named, on the file store and on a real redis-server.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name($crate::suite::file_pair(&dir).await).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = cog_testkit::RedisServer::start().unwrap();
                    super::$name($crate::suite::redis_pair(&server).await).await;
                }
            )*
        }
    };
}

/// The state the API's own writes left behind is used only while no one
/// else has written since: a token revoked by another process is refused
/// at once, though this API's last write was before it.
async fn another_processs_write_is_seen_at_once((store, other): Pair) {
    let api = api(store).await;
    // A write through the API, then a read: both on its own state.
    let a = api
        .write(
            Method::POST,
            "/v1/plans",
            json!({"name": "free", "plan": {}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    assert_eq!(api.get("/v1/plans").await.status, StatusCode::OK);
    // Another process revokes the write token.
    let id = api.write.split('_').nth(1).unwrap().to_owned();
    Control::new(other).revoke_token(&id).await.unwrap();
    let a = api
        .call(
            Method::GET,
            "/v1/plans",
            Some(&api.write),
            &[],
            Bytes::new(),
        )
        .await;
    problem(&a, StatusCode::UNAUTHORIZED, "unauthorized");
}

both_stores!(
    plan_tenant_key_round_trip,
    every_failure_is_a_problem,
    lists_page_with_a_cursor,
    another_processs_write_is_seen_at_once
);

/// `docs/openapi.json` is what the code describes (`COG_UPDATE_OPENAPI=1`
/// rewrites it).
#[tokio::test]
async fn the_committed_openapi_description_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let code = Admin::openapi_json();
    if std::env::var_os("COG_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &code).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == code,
        "docs/openapi.json differs from the code: run COG_UPDATE_OPENAPI=1 cargo test -p cog-control --test control openapi"
    );
    let doc: Value = serde_json::from_str(&code).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    // And it is what the server serves.
    let dir = tempfile::tempdir().unwrap();
    let api = api(Arc::new(cog_control::store::FileStore::new(
        dir.path().join("s.json"),
    )))
    .await;
    let a = api
        .call(Method::GET, "/openapi.json", None, &[], Bytes::new())
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, doc);
}

/// The audit log keeps the last `AUDIT_KEEP` writes: the oldest go first.
#[tokio::test]
async fn the_audit_log_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::new(Arc::new(cog_control::store::FileStore::new(
        dir.path().join("s.json"),
    )));
    control
        .update(|s| {
            s.audit = (0..cog_control::AUDIT_KEEP as u64 + 50)
                .map(|i| cog_control::AuditEntry {
                    at: i,
                    actor: "old".into(),
                    action: "x".into(),
                    target: String::new(),
                    revision: i,
                })
                .collect();
            Ok(())
        })
        .await
        .unwrap();
    control.create_plan("p", Default::default()).await.unwrap();
    let audit = control.state().await.unwrap().audit;
    assert_eq!(audit.len(), cog_control::AUDIT_KEEP);
    assert_eq!(audit.last().unwrap().action, "plan.create");
    assert_eq!(audit[audit.len() - 2].action, "update");
    // The oldest went: 52 written after the first 1050 entries.
    assert_eq!(audit[0].revision, 52);
}

/// A delete whose plugin data cannot be cleared is a 503 that says so, and
/// deletes nothing; once the data store is back, the same call goes
/// through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_whose_plugin_data_stays_is_a_503() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let data = Arc::new(crate::suite::Flaky {
        kv: cog_sandbox::MemoryKv::new(),
        broken: true.into(),
    });
    let store = cog_control::store::FileStore::new(dir.path().join("s.json"));
    let control = Control::new(Arc::new(store))
        .actor("test")
        .plugin_data(data.clone());
    let write = control
        .create_token("back office", Scope::Write)
        .await
        .unwrap();
    control
        .create_plan("free", Default::default())
        .await
        .unwrap();
    control
        .create_tenant("acme", cog_control::Tenant::new("free"))
        .await
        .unwrap();
    control
        .install_plugin("p", crate::suite::EMPTY_WASM, Default::default())
        .await
        .unwrap();
    data.kv.put(&crate::suite::kv_scope("acme", "p"), "k", "v");
    let api = Api {
        router: Admin::new(control.clone()).router(),
        control,
        write: write.secret,
        read: String::new(),
    };
    let a = api
        .write(Method::DELETE, "/v1/tenants/acme", Value::Null)
        .await;
    problem(
        &a,
        StatusCode::SERVICE_UNAVAILABLE,
        "plugin-data-unavailable",
    );
    let detail = a.body["detail"].as_str().unwrap();
    assert!(detail.contains("connection refused"), "{detail}");
    let state = api.control.state().await.unwrap();
    assert!(state.spec.tenants.contains_key("acme"));
    assert_eq!(data.kv.scopes(), 1);
    data.broken.store(false, Ordering::SeqCst);
    let a = api
        .write(Method::DELETE, "/v1/tenants/acme", Value::Null)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.body);
    assert_eq!(data.kv.scopes(), 0);
}

/// The control plane's store goes back — its Redis fails over to a replica
/// that had not seen the API's last write, its file is restored from a
/// backup — and is written up to the same revision: a write through the
/// API never brings the lost one back (it was made from the API's kept
/// state, which had it), an ETag of the lost write is stale, and reads
/// answer from the store — reading the whole document once, then keeping
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_the_lost_write_stays_lost() {
    for backing in crate::suite::Backing::both() {
        the_lost_write_stays_lost(backing).await;
    }
}

async fn the_lost_write_stays_lost(backing: crate::suite::Backing) {
    use std::sync::atomic::Ordering::SeqCst;

    let watched = Arc::new(crate::suite::Watched::over(backing.store().await));
    let store: Arc<dyn Store> = watched.clone();
    let api = api(store.clone()).await;
    let a = api
        .write(
            Method::POST,
            "/v1/plans",
            json!({"name": "free", "plan": {}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let tenants = |ids: &[&str]| {
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        move |a: Answer| {
            let got: Vec<&str> = a.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap())
                .collect();
            assert_eq!(got, ids);
        }
    };
    // Reads after the API's own write: its state, no load.
    let loads = watched.loads.load(SeqCst);
    tenants(&[])(api.get("/v1/tenants").await);
    tenants(&[])(api.get("/v1/tenants").await);
    assert_eq!(watched.loads.load(SeqCst), loads);

    // A write the replica never sees, the failover, and a write on the new
    // primary by another process, up to the same revision.
    let fail_over = async |lost: &str, kept: &str| {
        let replica = backing.copy();
        let a = api
            .write(
                Method::POST,
                "/v1/tenants",
                json!({"id": lost, "tenant": {"plan": "free"}}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        // Read back (the API keeps what it wrote).
        assert_eq!(api.get("/v1/tenants").await.status, StatusCode::OK);
        backing.put_back(&replica);
        Control::new(store.clone())
            .create_tenant(kept, cog_control::Tenant::new("free"))
            .await
            .unwrap();
        assert_eq!(
            store.revision().await.unwrap(),
            revision(&a),
            "the same revision"
        );
        a.etag.unwrap()
    };

    // A write from the API's kept state: the store sends it back to read.
    let lost_tag = fail_over("lost", "kept").await;
    let a = api
        .write(
            Method::POST,
            "/v1/tenants",
            json!({"id": "new", "tenant": {"plan": "free"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let now = store.load().await.unwrap();
    let ids: Vec<&str> = now.spec.tenants.keys().map(String::as_str).collect();
    assert_eq!(
        ids,
        ["kept", "new"],
        "the new primary's write kept, the lost one not back"
    );

    // An ETag of the lost write names no state of this store, though its
    // revision is one it went through; one of the current state is
    // honoured.
    let delete_if = async |tag: &str| {
        api.call(
            Method::DELETE,
            "/v1/tenants/kept",
            Some(&api.write),
            &[("if-match", tag)],
            Bytes::new(),
        )
        .await
    };
    problem(
        &delete_if(&lost_tag).await,
        StatusCode::PRECONDITION_FAILED,
        "stale",
    );
    let tag = api.get("/v1/tenants/kept").await.etag.unwrap();
    assert_ne!(tag, lost_tag);
    let a = delete_if(&tag).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.body);

    // Reads answer from the new primary: one load, then its state is kept.
    fail_over("lost2", "kept2").await;
    let loads = watched.loads.load(SeqCst);
    tenants(&["kept2", "new"])(api.get("/v1/tenants").await);
    tenants(&["kept2", "new"])(api.get("/v1/tenants").await);
    assert_eq!(watched.loads.load(SeqCst), loads + 1);
}
