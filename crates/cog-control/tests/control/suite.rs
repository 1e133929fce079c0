//! One suite, two stores.

use std::collections::BTreeMap;
use std::sync::Arc;

use cog_control::document::{self, Format};
use cog_control::store::{FileStore, RedisStore, Store};
use cog_control::{Attach, Control, ControlError, LimitSpec, Plan, PluginSpec, Status, Tenant};
use cog_testkit::RedisServer;

/// The smallest valid module.
pub(crate) const EMPTY_WASM: &[u8] = b"\0asm\x01\0\0\0";

pub(crate) fn plan(spec: &str) -> Plan {
    Plan {
        limits: vec![LimitSpec::parse(spec).unwrap()],
        ..Plan::default()
    }
}

/// Two independent handles on one store (as two processes would have).
pub(crate) type Pair = (Arc<dyn Store>, Arc<dyn Store>);

pub(crate) async fn file_pair(dir: &tempfile::TempDir) -> Pair {
    let path = dir.path().join("state.json");
    (
        Arc::new(FileStore::new(&path)),
        Arc::new(FileStore::new(&path)),
    )
}

pub(crate) async fn redis_pair(server: &RedisServer) -> Pair {
    (
        Arc::new(RedisStore::connect(&server.url()).await.unwrap()),
        Arc::new(RedisStore::connect(&server.url()).await.unwrap()),
    )
}

async fn round_trips((a, b): Pair) {
    let one = Control::new(a);
    let two = Control::new(b);
    assert_eq!(one.state().await.unwrap().revision, 0);
    one.create_plan("free", plan("rps=10/1s,burst=20"))
        .await
        .unwrap();
    let mut t = Tenant::new("free");
    t.display_name = "Acme Inc.".into();
    t.metadata.insert("region".into(), "eu".into());
    one.create_tenant("acme", t.clone()).await.unwrap();
    let key = one.create_key("acme", None).await.unwrap();
    let digest = one
        .install_plugin(
            "headers",
            EMPTY_WASM,
            PluginSpec {
                version: "1.0.0".into(),
                attach: Attach {
                    tenants: vec!["acme".into()],
                    plans: vec![],
                },
                config: "x=1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // The other handle reads exactly what was written.
    let state = two.state().await.unwrap();
    assert_eq!(state.revision, 4);
    assert_eq!(state.spec.tenants["acme"], t);
    assert_eq!(state.spec.plans["free"].limits[0].burst, Some(20));
    assert_eq!(state.spec.plugins["headers"].digest, digest);
    assert_eq!(
        two.store().get_blob(&digest).await.unwrap().as_deref(),
        Some(EMPTY_WASM)
    );
    // Only the hash of the key is stored.
    let stored = &state.keys[&key.id];
    assert_eq!(stored.hash, cog_control::keys::hash(&key.secret));
    assert_eq!(stored.tenant, "acme");
    assert_eq!(stored.expires, None);
    // A key with a lifetime expires that long after it was made.
    let day = two
        .create_key("acme", Some(std::time::Duration::from_secs(86_400)))
        .await
        .unwrap();
    let stored = two.state().await.unwrap().keys[&day.id].clone();
    assert_eq!(stored.expires, Some(stored.created + 86_400));
    two.revoke_key(&day.id).await.unwrap();

    // Changes, deletions, and their rules.
    two.set_status("acme", Status::Suspended).await.unwrap();
    assert_eq!(
        one.state().await.unwrap().spec.tenants["acme"].status,
        Status::Suspended
    );
    assert!(matches!(
        one.delete_plan("free").await,
        Err(ControlError::InUse { .. })
    ));
    one.revoke_key(&key.id).await.unwrap();
    assert!(one.state().await.unwrap().keys[&key.id].revoked);
    one.delete_tenant("acme").await.unwrap();
    let state = two.state().await.unwrap();
    assert!(state.keys.is_empty(), "a deleted tenant's keys go with it");
    assert!(state.spec.plugins["headers"].attach.tenants.is_empty());
    two.delete_plan("free").await.unwrap();
}

async fn concurrent_writers((a, b): Pair) {
    let one = Control::new(a);
    let two = Control::new(b);
    one.create_plan("free", plan("rps=1/1s")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            c.create_tenant(&format!("t{i}"), Tenant::new("free")).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let state = one.state().await.unwrap();
    assert_eq!(state.spec.tenants.len(), 40, "no update was lost");
    assert_eq!(state.revision, 41);
}

async fn invalid_input_is_refused((a, _): Pair) {
    let c = Control::new(a);
    let e = c.create_plan("free", plan("rps=0/1s")).await.unwrap_err();
    assert!(e.to_string().contains("plans.free.limits[0].rate"), "{e}");
    let e = c
        .create_plan("bad name!", plan("rps=1/1s"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a valid name"), "{e}");
    let mut twice = plan("rps=1/1s");
    twice.limits.push(LimitSpec::parse("rps=2/1m").unwrap());
    let e = c.create_plan("twice", twice).await.unwrap_err();
    assert!(e.to_string().contains("duplicate limit name"), "{e}");
    let e = c
        .create_tenant("acme", Tenant::new("nope"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("tenants.acme.plan"), "{e}");

    c.create_plan("free", plan("rps=1/1s")).await.unwrap();
    let e = c.create_plan("free", plan("rps=2/1s")).await.unwrap_err();
    assert!(
        matches!(e, ControlError::Exists { kind: "plan", .. }),
        "{e}"
    );
    c.create_tenant("acme", Tenant::new("free")).await.unwrap();
    let e = c
        .create_tenant("acme", Tenant::new("free"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ControlError::Exists { kind: "tenant", .. }),
        "{e}"
    );
    let e = c.create_key("ghost", None).await.unwrap_err();
    assert!(
        matches!(e, ControlError::NotFound { kind: "tenant", .. }),
        "{e}"
    );

    let spec = PluginSpec {
        ..Default::default()
    };
    let e = c
        .install_plugin("p", b"MZ\x90\0", spec.clone())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a WebAssembly module"), "{e}");
    let mut big = EMPTY_WASM.to_vec();
    big.resize(cog_control::MAX_PLUGIN_BYTES + 1, 0);
    let e = c.install_plugin("p", &big, spec.clone()).await.unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
    let mut orphan = spec;
    orphan.attach.tenants.push("ghost".into());
    let e = c.install_plugin("p", EMPTY_WASM, orphan).await.unwrap_err();
    assert!(e.to_string().contains("plugins.p.attach.tenants[0]"), "{e}");

    // Nothing refused was written.
    let state = c.state().await.unwrap();
    assert_eq!(state.spec.plans.len(), 1);
    assert!(state.spec.plugins.is_empty());
}

async fn apply_and_diff((a, _): Pair) {
    let c = Control::new(a);
    let yaml = "
plans:
  free: {limits: [{name: rps, rate: 10, window: 1s, burst: 20}]}
  pro: {limits: [{name: rps, rate: 200, window: 1s, burst: 400}]}
tenants:
  demo: {plan: free}
";
    let spec = document::parse(yaml, Format::Yaml, "spec").unwrap();
    let changes = c.apply(&spec, &BTreeMap::new(), false).await.unwrap();
    assert_eq!(changes.len(), 3);
    assert!(c.diff(&spec, true).await.unwrap().is_empty());
    let edited = document::parse(
        &yaml.replace("plan: free", "plan: pro"),
        Format::Yaml,
        "spec",
    )
    .unwrap();
    let changes = c.diff(&edited, false).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].action, changes[0].kind, changes[0].id.as_str()),
        ("update", "tenant", "demo")
    );
    c.apply(&edited, &BTreeMap::new(), false).await.unwrap();
    assert_eq!(c.state().await.unwrap().spec.tenants["demo"].plan, "pro");

    // Without prune, what the file does not list stays; with it, it goes.
    let only_pro = document::parse(
        "plans:\n  pro: {limits: [{name: rps, rate: 200, window: 1s, burst: 400}]}\n",
        Format::Yaml,
        "spec",
    )
    .unwrap();
    assert!(c.diff(&only_pro, false).await.unwrap().is_empty());
    let key = c.create_key("demo", None).await.unwrap();
    c.apply(&only_pro, &BTreeMap::new(), false).await.unwrap();
    let state = c.state().await.unwrap();
    assert_eq!(
        state.spec.plans.keys().collect::<Vec<_>>(),
        ["free", "pro"],
        "applied without prune, what the file does not list stays"
    );
    assert!(state.spec.tenants.contains_key("demo"));
    assert!(state.keys.contains_key(&key.id), "and so do its keys");
    let pruning = c.diff(&only_pro, true).await.unwrap();
    assert_eq!(pruning.len(), 2, "{pruning:?}");
    c.apply(&only_pro, &BTreeMap::new(), true).await.unwrap();
    let state = c.state().await.unwrap();
    assert_eq!(state.spec.plans.keys().collect::<Vec<_>>(), ["pro"]);
    assert!(state.spec.tenants.is_empty());
    assert!(state.keys.is_empty(), "a pruned tenant's keys go with it");

    // A Python plugin's source, given with the file: checked as Python,
    // not as a WebAssembly module.
    let source = b"def on_request(req):\n    return req\n".to_vec();
    let digest = cog_control::digest(&source);
    let with_plugin = document::parse(
        &format!(
            "plans:\n  pro: {{limits: [{{name: rps, rate: 200, window: 1s, burst: 400}}]}}\n\
             plugins:\n  py: {{digest: \"{digest}\", lang: python, attach: {{plans: [pro]}}}}\n"
        ),
        Format::Yaml,
        "spec",
    )
    .unwrap();
    let blobs = BTreeMap::from([(digest.clone(), source.clone())]);
    c.apply(&with_plugin, &blobs, false).await.unwrap();
    assert_eq!(
        c.store().get_blob(&digest).await.unwrap().as_deref(),
        Some(&source[..])
    );
}

/// A write that starts from a state read earlier (`based_on`) never
/// overwrites what was written since: the store's compare-and-swap sends
/// it back to read again. `If-Match` is judged against the store, not the
/// base; and what a handle committed is there for its readers.
async fn writes_from_a_read_state((a, b): Pair) {
    let one = Control::new(a);
    let two = Control::new(b);
    one.create_plan("free", plan("rps=1/1s")).await.unwrap();
    let seen = Arc::new(one.state().await.unwrap());
    assert_eq!(seen.revision, 1);

    // Written since by another process.
    two.create_plan("pro", plan("rps=9/1s")).await.unwrap();
    one.clone()
        .based_on(seen.clone())
        .create_plan("team", plan("rps=5/1s"))
        .await
        .unwrap();
    let now = two.state().await.unwrap();
    assert_eq!(now.revision, 3);
    assert!(
        now.spec.plans.contains_key("pro"),
        "the other write survives"
    );
    assert!(now.spec.plans.contains_key("team"));

    // The newest state this handle (or a clone, whatever its actor)
    // committed, at its revision.
    let newest = one.clone().actor("x").newest_committed().unwrap();
    assert_eq!(newest.revision, 3);
    assert_eq!(newest.spec, now.spec);
    assert!(
        Control::new(two.store().clone())
            .newest_committed()
            .is_none()
    );

    // If-Match names the store's revision: the stale base does not make
    // it Stale …
    one.clone()
        .based_on(seen.clone())
        .if_revision(Some(3))
        .update_plan("free", |p| p.cache_budget_bytes = Some(7))
        .await
        .unwrap();
    // … and the base's own revision, no longer the store's, is Stale.
    let e = one
        .clone()
        .based_on(seen)
        .if_revision(Some(1))
        .delete_plan("team")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ControlError::Stale {
                expected: 1,
                found: 4
            }
        ),
        "{e:?}"
    );
    assert!(two.state().await.unwrap().spec.plans.contains_key("team"));
}

/// The placement table: created by the first deployment, a newer
/// revision for each change, concurrent moves from two writers all kept, refusals
/// typed, every change audited, and a move never disturbs the spec.
async fn placement_moves((a, b): Pair) {
    let one = Control::new(a);
    let two = Control::new(b);
    assert_eq!(one.placement().await.unwrap(), None);
    let e = one.move_partition(3, "main").await.unwrap_err();
    assert!(
        matches!(
            e,
            ControlError::NotFound {
                kind: "placement",
                ..
            }
        ),
        "{e:?}"
    );
    one.create_plan("free", plan("rps=1/1s")).await.unwrap();
    let t = one.add_deployment("main").await.unwrap();
    assert_eq!((t.deployments.len(), t.partitions.len()), (1, 0));
    let first = t.revision;
    assert!(first >= 1);
    let t = two.add_deployment("big").await.unwrap();
    assert!(t.revision > first, "{} after {first}", t.revision);
    let added = t.revision;
    assert!(matches!(
        one.add_deployment("big").await.unwrap_err(),
        ControlError::Exists {
            kind: "deployment",
            ..
        }
    ));
    assert!(matches!(
        one.add_deployment("no spaces").await.unwrap_err(),
        ControlError::Invalid(_)
    ));
    assert!(matches!(
        one.move_partition(3, "elsewhere").await.unwrap_err(),
        ControlError::NotFound {
            kind: "deployment",
            ..
        }
    ));

    // 16 moves from two writers at once: none lost, a revision each.
    let mut tasks = Vec::new();
    for p in 0..16u8 {
        let c = if p % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            c.move_partition(p * 16, "big").await
        }));
    }
    let mut revisions = Vec::new();
    for t in tasks {
        revisions.push(t.await.unwrap().unwrap().revision);
    }
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), 16, "{revisions:?}");
    assert!(revisions[0] > added, "{revisions:?} after {added}");
    let table = two.placement().await.unwrap().unwrap();
    assert_eq!(Some(&table.revision), revisions.last());
    let placement = table.to_placement().unwrap();
    assert_eq!(placement.counts(), [240, 16]);
    assert!((0..16u8).all(|p| placement.deployment_of(p * 16) == "big"));
    // Already there: no new revision. Back home: listed no more.
    assert_eq!(
        one.move_partition(0, "big").await.unwrap().revision,
        table.revision
    );
    let back = one.move_partition(0, "main").await.unwrap();
    assert!(back.revision > table.revision);
    assert_eq!(back.partitions.len(), 15);
    assert!(!back.partitions.contains_key(&0));

    let state = one.state().await.unwrap();
    assert!(state.spec.plans.contains_key("free"));
    let moves = state
        .audit
        .iter()
        .filter(|e| e.action == "placement.move")
        .count();
    assert_eq!(moves, 18);
}

/// What a tenant gets — its plan's limits with its overrides — must make
/// one quota, like a plan's own limits: at most 16 together, and an
/// override in the same list as the plan's spec it replaces. Both used to
/// pass validation and leave the tenant refused at run time (its keys
/// answered 401). A state stored before the check still loads.
async fn a_tenants_limits_with_its_plan_make_one_quota((a, _): Pair) {
    let c = Control::new(a.clone());
    let mut free = plan("rps=10/1s");
    free.quotas.push(LimitSpec::parse("daily=1000/1d").unwrap());
    c.create_plan("free", free).await.unwrap();

    // An override of a plan limit given as a quota, and the reverse.
    let mut t = Tenant::new("free");
    t.quota_overrides
        .push(LimitSpec::parse("rps=5/1m").unwrap());
    let e = c.create_tenant("acme", t).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("tenants.acme.quota_overrides[0].name")
            && e.to_string().contains("is a limit of plan `free`"),
        "{e}"
    );
    let mut t = Tenant::new("free");
    t.overrides.push(LimitSpec::parse("daily=5/1s").unwrap());
    let e = c.create_tenant("acme", t).await.unwrap_err();
    assert!(
        e.to_string().contains("tenants.acme.overrides[0].name")
            && e.to_string().contains("is a quota of plan `free`"),
        "{e}"
    );

    // Sixteen together pass; one more, by the tenant or by its plan, does
    // not.
    let extra = |n: usize| -> Vec<LimitSpec> {
        (0..n)
            .map(|i| LimitSpec::parse(&format!("x{i}=100/1s")).unwrap())
            .collect()
    };
    let mut t = Tenant::new("free");
    t.overrides = extra(15);
    let e = c.create_tenant("acme", t.clone()).await.unwrap_err();
    assert!(
        e.to_string().contains("tenants.acme")
            && e.to_string().contains("17 limits and quotas; at most 16"),
        "{e}"
    );
    t.overrides = extra(14);
    c.create_tenant("acme", t).await.unwrap();
    // Replacing a plan limit adds none.
    c.update_tenant("acme", |t| {
        t.overrides.push(LimitSpec::parse("rps=1/1s").unwrap());
    })
    .await
    .unwrap();
    let e = c
        .update_plan("free", |p| {
            p.limits
                .push(LimitSpec::parse("burst_guard=1000/1m").unwrap())
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("tenants.acme"), "{e}");

    // A state an older version stored with such a tenant loads; writes
    // name the tenant until it is fixed.
    let mut state = c.state().await.unwrap();
    state
        .spec
        .tenants
        .get_mut("acme")
        .unwrap()
        .overrides
        .push(LimitSpec::parse("more=1/1s").unwrap());
    a.commit(&state).await.unwrap();
    let loaded = c.state().await.unwrap();
    assert_eq!(loaded.spec.tenants["acme"].overrides.len(), 16);
    let e = c
        .create_tenant("other", Tenant::new("free"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("tenants.acme"), "{e}");
    c.update_tenant("acme", |t| {
        t.overrides.pop();
    })
    .await
    .unwrap();
    c.create_tenant("other", Tenant::new("free")).await.unwrap();
}

/// Deleting a plan detaches the plugins attached to it, and only from it.
async fn a_deleted_plan_leaves_its_plugins_on_the_others((a, _): Pair) {
    let c = Control::new(a);
    for name in ["free", "pro", "team"] {
        c.create_plan(name, plan("rps=1/1s")).await.unwrap();
    }
    let spec = PluginSpec {
        attach: Attach {
            tenants: vec![],
            plans: vec!["free".into(), "pro".into(), "team".into()],
        },
        ..Default::default()
    };
    c.install_plugin("p", EMPTY_WASM, spec).await.unwrap();
    c.delete_plan("pro").await.unwrap();
    let state = c.state().await.unwrap();
    assert_eq!(state.spec.plugins["p"].attach.plans, ["free", "team"]);
}

/// A store over another that counts the whole-state reads made through
/// it and refuses to store the bytes of one digest.
#[derive(Debug)]
pub(crate) struct Watched {
    inner: Arc<dyn Store>,
    pub(crate) loads: std::sync::atomic::AtomicUsize,
    refused: String,
}

impl Watched {
    pub(crate) fn over(inner: Arc<dyn Store>) -> Self {
        Watched {
            inner,
            loads: Default::default(),
            refused: String::new(),
        }
    }
}

#[async_trait::async_trait]
impl Store for Watched {
    async fn load(&self) -> Result<cog_control::State, ControlError> {
        self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.load().await
    }
    async fn commit(
        &self,
        state: &cog_control::State,
    ) -> Result<cog_control::store::Version, ControlError> {
        self.inner.commit(state).await
    }
    async fn revision(&self) -> Result<u64, ControlError> {
        self.inner.revision().await
    }
    async fn version(&self) -> Result<cog_control::store::Version, ControlError> {
        self.inner.version().await
    }
    async fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), ControlError> {
        if digest == self.refused {
            return Err(ControlError::Io {
                path: "blobs".into(),
                source: std::io::Error::other("disk full"),
            });
        }
        self.inner.put_blob(digest, bytes).await
    }
    async fn get_blob(&self, digest: &str) -> Result<Option<bytes::Bytes>, ControlError> {
        self.inner.get_blob(digest).await
    }
    async fn delete_blob(&self, digest: &str) -> Result<(), ControlError> {
        self.inner.delete_blob(digest).await
    }
}

/// A write from a state the caller has just read (the admin API's, on
/// every write) starts from it: the store's document is not read again
/// unless the store moved on.
async fn a_write_from_a_current_state_reads_nothing_more((a, b): Pair) {
    use std::sync::atomic::Ordering;
    let counting = Arc::new(Watched::over(a));
    let one = Control::new(counting.clone());
    one.create_plan("free", plan("rps=1/1s")).await.unwrap();
    let seen = Arc::new(one.state().await.unwrap());
    let before = counting.loads.load(Ordering::SeqCst);
    one.clone()
        .based_on(seen.clone())
        .create_plan("team", plan("rps=5/1s"))
        .await
        .unwrap();
    assert_eq!(counting.loads.load(Ordering::SeqCst), before, "read again");
    // Moved on since: read once, and the write still lands.
    Control::new(b)
        .create_plan("pro", plan("rps=9/1s"))
        .await
        .unwrap();
    let seen = Arc::new(one.state().await.unwrap());
    Control::new(counting.inner.clone())
        .create_plan("later", plan("rps=2/1s"))
        .await
        .unwrap();
    let before = counting.loads.load(Ordering::SeqCst);
    one.clone()
        .based_on(seen)
        .create_plan("last", plan("rps=3/1s"))
        .await
        .unwrap();
    assert_eq!(counting.loads.load(Ordering::SeqCst), before + 1);
    assert_eq!(one.state().await.unwrap().spec.plans.len(), 5);
}

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name(super::file_pair(&dir).await).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = cog_testkit::RedisServer::start().unwrap();
                    super::$name(super::redis_pair(&server).await).await;
                }
            )*
        }
    };
}

both_stores!(
    round_trips,
    concurrent_writers,
    invalid_input_is_refused,
    a_tenants_limits_with_its_plan_make_one_quota,
    apply_and_diff,
    unreferenced_plugin_bytes_are_deleted,
    refused_writes_keep_no_plugin_bytes,
    writes_from_a_read_state,
    a_write_from_a_current_state_reads_nothing_more,
    a_deleted_plan_leaves_its_plugins_on_the_others,
    deleted_tenants_and_plugins_leave_no_plugin_data,
    placement_moves
);

#[tokio::test]
async fn garbage_in_the_file_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let store = FileStore::new(&path);
    for (bytes, want) in [
        (&b"\x00\xffnot json"[..], "unreadable"),
        (br#"{"schema":1,"plans":{"free":{"limits":[{"name":"rps","rate":1,"window":"1s","color":"red"}]}}}"#, "plans.free.limits[0]"),
        (br#"{"schema":7}"#, "schema version 7"),
        (br#"{"schema":1,"tenants":{"a":{"plan":"missing"}}}"#, "tenants.a.plan"),
        // Torn: the parser cannot say where; no `?` stands in for a path.
        (br#"{"schema":1,"plans":{"#, "state.json: plans: EOF while parsing"),
        (b"{", "state.json: EOF while parsing"),
        (b"null", "state.json: invalid type: null"),
        (br#"{"schema":1,"plans":{"free":{"limits":[{"name":"rps","rate":0,"window":"1s"}]}}}"#, "plans.free.limits[0].rate"),
    ] {
        std::fs::write(&path, bytes).unwrap();
        let e = store.load().await.unwrap_err();
        // Named once: a message that starts with its path is not given
        // the path again.
        assert_eq!(e.to_string().matches(want).count(), 1, "{e}");
        assert!(!e.to_string().contains("?"), "{e}");
    }
}

#[tokio::test]
async fn garbage_in_redis_is_a_typed_error() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    server
        .command(&[
            "HSET",
            "cog:{control}:state",
            "rev",
            "3",
            "doc",
            "{\"schema\":1,\"plans\":7}",
        ])
        .unwrap();
    let e = store.load().await.unwrap_err();
    assert!(matches!(e, ControlError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("plans"), "{e}");
    // A blob that does not match its digest is refused, not handed out.
    let digest = cog_control::digest(EMPTY_WASM);
    let key = format!(
        "cog:{{control}}:blob:{}",
        digest.trim_start_matches("sha256:")
    );
    server.command(&["SET", &key, "tampered"]).unwrap();
    assert!(store.get_blob(&digest).await.is_err());
}

/// Where a store's state lives — a file, a Redis server — to copy and put
/// back as a restored backup, or a failover to a replica behind, would.
pub(crate) enum Backing {
    File(tempfile::TempDir),
    Redis(RedisServer),
}

impl Backing {
    const KEY: &str = "cog:{control}:state";

    /// One of each.
    pub(crate) fn both() -> [Backing; 2] {
        [
            Backing::File(tempfile::tempdir().unwrap()),
            Backing::Redis(RedisServer::start().unwrap()),
        ]
    }

    fn path(dir: &tempfile::TempDir) -> std::path::PathBuf {
        dir.path().join("state.json")
    }

    /// A new handle on the store.
    pub(crate) async fn store(&self) -> Arc<dyn Store> {
        match self {
            Backing::File(dir) => Arc::new(FileStore::new(Self::path(dir))),
            Backing::Redis(server) => Arc::new(RedisStore::connect(&server.url()).await.unwrap()),
        }
    }

    /// The state as stored now.
    pub(crate) fn copy(&self) -> Vec<u8> {
        match self {
            Backing::File(dir) => std::fs::read(Self::path(dir)).unwrap(),
            Backing::Redis(server) => server.dump(Self::KEY),
        }
    }

    /// Puts back a [`copy`](Self::copy).
    pub(crate) fn put_back(&self, copy: &[u8]) {
        match self {
            Backing::File(dir) => std::fs::write(Self::path(dir), copy).unwrap(),
            Backing::Redis(server) => server.restore(Self::KEY, copy),
        }
    }

    /// Stamps written by hand, none as a commit writes them.
    fn spoiled_stamps(&self) -> &'static [&'static str] {
        match self {
            Backing::File(_) => &["not hex!", "+00000000000000a", "0a", "00000000000000000a"],
            Backing::Redis(_) => &["x", "042", "+42", " 42", "-1"],
        }
    }

    /// Replaces the stored stamp with `stamp`.
    fn spoil_the_stamp(&self, stamp: &str) {
        match self {
            Backing::File(dir) => {
                let path = Self::path(dir);
                let mut doc: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                assert!(doc["stamp"].is_string(), "{doc}");
                doc["stamp"] = stamp.into();
                std::fs::write(&path, doc.to_string()).unwrap();
            }
            Backing::Redis(server) => {
                server
                    .command(&["HSET", Self::KEY, "stamp", stamp])
                    .unwrap();
            }
        }
    }
}

/// A write from a state read before the store went back (a failover to a
/// replica behind it, a restored backup) — a state the store no longer
/// has, of a revision it reached again by other writes — is sent back to
/// read the store's, and an `If-Match` of it is stale; one of the revision
/// alone still holds.
#[tokio::test]
async fn a_state_of_a_lost_commit_is_not_written_back() {
    for backing in Backing::both() {
        let store = backing.store().await;
        let c = Control::new(store.clone());
        c.create_plan("free", plan("rps=1/1s")).await.unwrap();
        let replica = backing.copy();
        c.create_tenant("lost", Tenant::new("free")).await.unwrap();
        let lost = c.newest_committed().unwrap();
        assert_eq!(lost.version(), c.last_version());
        assert_eq!(lost.revision, c.last_revision());
        assert_eq!(lost.version(), store.version().await.unwrap());
        assert!(lost.stamp.is_some());
        backing.put_back(&replica);
        c.create_tenant("kept", Tenant::new("free")).await.unwrap();
        let now = store.load().await.unwrap();
        assert_eq!(now.revision, lost.revision, "the same revision");
        assert_ne!(now.stamp, lost.stamp);
        assert_eq!(now.version(), c.last_version());
        assert_eq!(now.version(), store.version().await.unwrap());
        assert_eq!(
            c.newest_committed().unwrap().version(),
            now.version(),
            "the handle's newest state is the store's"
        );

        let e = c
            .clone()
            .based_on(lost.clone())
            .if_version(Some(lost.version()))
            .create_tenant("new", Tenant::new("free"))
            .await
            .unwrap_err();
        assert!(matches!(e, ControlError::Stale { .. }), "{e:?}");
        c.clone()
            .based_on(lost.clone())
            .if_revision(Some(lost.revision))
            .create_tenant("new", Tenant::new("free"))
            .await
            .unwrap();
        let ids: Vec<String> = store
            .load()
            .await
            .unwrap()
            .spec
            .tenants
            .into_keys()
            .collect();
        assert_eq!(ids, ["kept", "new"], "the lost commit not written back");

        // A stamp written by hand is none (revision alone), and the next
        // commit draws a new one — not a write that retries forever on a
        // stamp read as another text than stored.
        for (i, spoiled) in backing.spoiled_stamps().iter().enumerate() {
            backing.spoil_the_stamp(spoiled);
            let state = store.load().await.unwrap();
            assert_eq!(state.stamp, None, "{spoiled:?}");
            assert_eq!(store.version().await.unwrap().stamp, None);
            let (handle, name) = (c.clone().based_on(Arc::new(state)), format!("after{i}"));
            let write = handle.create_plan(&name, plan("rps=1/1s"));
            tokio::time::timeout(std::time::Duration::from_secs(10), write)
                .await
                .unwrap_or_else(|_| panic!("{spoiled:?}: the write never went through"))
                .unwrap();
            assert!(store.version().await.unwrap().stamp.is_some());
        }
    }
}

#[tokio::test]
async fn a_dead_redis_is_an_error_not_a_hang() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url())
        .await
        .unwrap()
        .timeout(std::time::Duration::from_millis(300));
    server.pause().unwrap();
    assert!(matches!(
        store.load().await,
        Err(ControlError::Redis { .. })
    ));
    server.resume().unwrap();
    server.kill().unwrap();
    assert!(matches!(
        store.revision().await,
        Err(ControlError::Redis { .. })
    ));
}

/// Plugin bytes go from the store once no plugin refers to them — and not
/// before: bytes two plugins share stay while one of them is left.
async fn unreferenced_plugin_bytes_are_deleted((store, _): Pair) {
    let c = Control::new(store.clone());
    let spec = || PluginSpec {
        ..Default::default()
    };
    let first = c.install_plugin("a", EMPTY_WASM, spec()).await.unwrap();
    c.install_plugin("b", EMPTY_WASM, spec()).await.unwrap();
    c.delete_plugin("a").await.unwrap();
    assert!(
        store.get_blob(&first).await.unwrap().is_some(),
        "b still uses them"
    );
    // Replaced by other bytes: the old ones go.
    let mut other = EMPTY_WASM.to_vec();
    // A custom section: still a valid module, other bytes.
    other.extend_from_slice(&[0, 2, 1, b'x']);
    let second = c.install_plugin("b", &other, spec()).await.unwrap();
    assert_ne!(first, second);
    assert!(store.get_blob(&first).await.unwrap().is_none());
    assert!(store.get_blob(&second).await.unwrap().is_some());
    c.delete_plugin("b").await.unwrap();
    assert!(store.get_blob(&second).await.unwrap().is_none());
}

/// A write that is refused keeps none of the bytes it stored first — an
/// install or an apply that is invalid or stale would otherwise leave them
/// in the store, named by nothing, for ever — while bytes a plugin still
/// names stay. `apply` stores only the bytes its document names, and only
/// under their own digest.
async fn refused_writes_keep_no_plugin_bytes((store, _): Pair) {
    use cog_control::PluginLang;
    let c = Control::new(store.clone());
    c.create_plan("free", plan("rps=10/1s")).await.unwrap();
    // Still valid modules, other bytes: a custom section each.
    let bytes = |tag: u8| [EMPTY_WASM, &[0, 2, 1, tag]].concat();
    let stored = |b: &[u8]| {
        let store = store.clone();
        let digest = cog_control::digest(b);
        async move { store.get_blob(&digest).await.unwrap().is_some() }
    };
    let to_missing_plan = |p: &mut PluginSpec| p.attach.plans = vec!["missing".into()];

    // Invalid: attached to a plan that does not exist.
    let e = c
        .install_plugin_with("p", &bytes(b'a'), PluginLang::Wasm, to_missing_plan)
        .await
        .unwrap_err();
    assert!(matches!(e, ControlError::Invalid(_)), "{e}");
    assert!(!stored(&bytes(b'a')).await);
    // Stale: the store moved past the revision the write was made for.
    let revision = c.state().await.unwrap().revision;
    c.create_plan("pro", plan("rps=20/1s")).await.unwrap();
    let stale = c.clone().if_revision(Some(revision));
    stale
        .install_plugin_with("p", &bytes(b'b'), PluginLang::Wasm, |_| {})
        .await
        .unwrap_err();
    assert!(!stored(&bytes(b'b')).await);
    // Bytes an installed plugin names stay when another install of them
    // is refused.
    c.install_plugin_with("kept", &bytes(b'c'), PluginLang::Wasm, |_| {})
        .await
        .unwrap();
    c.install_plugin_with("p", &bytes(b'c'), PluginLang::Wasm, to_missing_plan)
        .await
        .unwrap_err();
    assert!(stored(&bytes(b'c')).await);

    // `apply`: refused after its bytes were stored (another plugin names
    // bytes that are nowhere), nothing of them is kept.
    let mut desired = c.state().await.unwrap().spec.clone();
    let named = |b: &[u8]| PluginSpec {
        digest: cog_control::digest(b),
        ..Default::default()
    };
    desired.plugins.insert("q".into(), named(&bytes(b'd')));
    desired.plugins.insert("r".into(), named(&bytes(b'e')));
    let blobs = BTreeMap::from([(cog_control::digest(&bytes(b'd')), bytes(b'd'))]);
    let e = c.apply(&desired, &blobs, false).await.unwrap_err();
    assert!(e.to_string().contains("plugins.r.digest"), "{e}");
    assert!(!stored(&bytes(b'd')).await);
    // Bytes under a digest that is not theirs are refused.
    desired.plugins.remove("r");
    let forged = BTreeMap::from([(cog_control::digest(&bytes(b'd')), bytes(b'x'))]);
    let e = c.apply(&desired, &forged, false).await.unwrap_err();
    assert!(e.to_string().contains("another digest"), "{e}");
    assert!(!stored(&bytes(b'd')).await && !stored(&bytes(b'x')).await);
    // Accepted: its plugin's bytes are stored, bytes nothing names are not.
    let mut blobs = blobs;
    blobs.insert(cog_control::digest(&bytes(b'f')), bytes(b'f'));
    c.apply(&desired, &blobs, false).await.unwrap();
    assert!(stored(&bytes(b'd')).await);
    assert!(!stored(&bytes(b'f')).await);

    // The store fails part way through storing an apply's bytes: those
    // stored before the failure go again.
    let (g, h) = (bytes(b'g'), bytes(b'h'));
    let (first, last) = if cog_control::digest(&g) < cog_control::digest(&h) {
        (g, h)
    } else {
        (h, g)
    };
    let failing = Control::new(Arc::new(Watched {
        refused: cog_control::digest(&last),
        ..Watched::over(store.clone())
    }));
    desired.plugins.insert("s".into(), named(&first));
    desired.plugins.insert("t".into(), named(&last));
    let blobs = BTreeMap::from([
        (cog_control::digest(&first), first.clone()),
        (cog_control::digest(&last), last.clone()),
    ]);
    let e = failing.apply(&desired, &blobs, false).await.unwrap_err();
    assert!(matches!(e, ControlError::Io { .. }), "{e}");
    assert!(!stored(&first).await && !stored(&last).await);
    assert!(!c.state().await.unwrap().spec.plugins.contains_key("s"));
}

/// A plugin data store whose `clear` fails while `broken` is set.
pub(crate) struct Flaky {
    pub(crate) kv: cog_sandbox::MemoryKv,
    pub(crate) broken: std::sync::atomic::AtomicBool,
}

impl cog_sandbox::KvStore for Flaky {
    fn get(
        &self,
        scope: &cog_sandbox::KvScope,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, cog_sandbox::KvError> {
        self.kv.get(scope, key)
    }
    fn set(
        &self,
        scope: &cog_sandbox::KvScope,
        key: &[u8],
        value: &[u8],
        quota: cog_sandbox::KvQuota,
    ) -> Result<(), cog_sandbox::KvError> {
        self.kv.set(scope, key, value, quota)
    }
    fn delete(
        &self,
        scope: &cog_sandbox::KvScope,
        key: &[u8],
    ) -> Result<bool, cog_sandbox::KvError> {
        self.kv.delete(scope, key)
    }
    fn clear(&self, scope: &cog_sandbox::KvScope) -> Result<bool, cog_sandbox::KvError> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            let refused = std::io::Error::other("connection refused");
            return Err(cog_sandbox::KvError::Unavailable(cog_sandbox::Cause::new(
                refused,
            )));
        }
        self.kv.clear(scope)
    }
}

pub(crate) fn kv_scope(tenant: &str, plugin: &str) -> cog_sandbox::KvScope {
    cog_sandbox::KvScope {
        tenant: tenant.into(),
        plugin: plugin.into(),
    }
}

/// Deleting a tenant or a plugin — one by one, or pruned by `apply` —
/// clears what plugins stored for it, and nothing else: a tenant created
/// again under the same id starts empty. When the plugin data store
/// fails, nothing is deleted.
async fn deleted_tenants_and_plugins_leave_no_plugin_data((store, _): Pair) {
    let data = Arc::new(Flaky {
        kv: cog_sandbox::MemoryKv::new(),
        broken: false.into(),
    });
    let c = Control::new(store).plugin_data(data.clone());
    c.create_plan("free", plan("rps=10/1s")).await.unwrap();
    for t in ["acme", "globex", "initech"] {
        c.create_tenant(t, Tenant::new("free")).await.unwrap();
    }
    for p in ["a", "b"] {
        c.install_plugin(p, EMPTY_WASM, PluginSpec::default())
            .await
            .unwrap();
    }
    for t in ["acme", "globex", "initech"] {
        for p in ["a", "b"] {
            data.kv.put(&kv_scope(t, p), "k", "v");
        }
    }
    let held = |t: &str, p: &str| !data.kv.is_empty(&kv_scope(t, p));
    // Changes that delete nothing clear nothing: a plugin replaced keeps
    // its data.
    c.install_plugin("a", EMPTY_WASM, PluginSpec::default())
        .await
        .unwrap();
    c.update_tenant("acme", |t| t.display_name = "Acme".into())
        .await
        .unwrap();
    assert_eq!(data.kv.scopes(), 6);

    c.delete_tenant("acme").await.unwrap();
    assert!(!held("acme", "a") && !held("acme", "b"));
    assert!(held("globex", "a") && held("globex", "b"));
    c.delete_plugin("b").await.unwrap();
    assert!(!held("globex", "b") && !held("initech", "b"));
    assert!(held("globex", "a") && held("initech", "a"));
    c.create_tenant("acme", Tenant::new("free")).await.unwrap();
    assert!(!held("acme", "a"));

    // The store fails: nothing is deleted, nothing cleared; once it is
    // back, the same call goes through.
    data.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    let e = c.delete_tenant("globex").await.unwrap_err();
    assert!(matches!(e, ControlError::PluginData { .. }), "{e}");
    assert!(e.to_string().contains("nothing was deleted"), "{e}");
    let e = c.delete_plugin("a").await.unwrap_err();
    assert!(matches!(e, ControlError::PluginData { .. }), "{e}");
    let state = c.state().await.unwrap();
    assert!(state.spec.tenants.contains_key("globex") && state.spec.plugins.contains_key("a"));
    assert!(held("globex", "a"));
    data.broken
        .store(false, std::sync::atomic::Ordering::SeqCst);
    c.delete_tenant("globex").await.unwrap();
    assert!(!held("globex", "a") && held("initech", "a"));

    // Pruned by apply: the tenant it no longer lists.
    let mut desired = c.state().await.unwrap().spec.clone();
    desired.tenants.remove("initech");
    c.apply(&desired, &BTreeMap::new(), true).await.unwrap();
    assert_eq!(data.kv.scopes(), 0);
}

/// The file holds plugin configuration and the hashes of every key and
/// token: created readable by its owner only, and a mode an operator set
/// survives every write (each one renames a new file into place).
#[cfg(unix)]
#[tokio::test]
async fn the_file_store_is_private_and_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let c = Control::new(Arc::new(FileStore::new(&path)));
    let mode = || std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    c.create_plan("free", Plan::default()).await.unwrap();
    assert_eq!(mode(), 0o600);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    c.create_plan("pro", Plan::default()).await.unwrap();
    assert_eq!(mode(), 0o640);
    // Plugin bytes too.
    let store = FileStore::new(&path);
    let digest = cog_control::digest(EMPTY_WASM);
    store.put_blob(&digest, EMPTY_WASM).await.unwrap();
    let blob = dir.path().join(format!(
        "state.json.blobs/{}.wasm",
        digest.trim_start_matches("sha256:")
    ));
    assert_eq!(
        std::fs::metadata(&blob).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[tokio::test]
async fn deleting_plugin_bytes_from_the_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path().join("state.json"));
    let digest = cog_control::digest(EMPTY_WASM);
    // Nothing stored: nothing to do.
    store.delete_blob(&digest).await.unwrap();
    store.put_blob(&digest, EMPTY_WASM).await.unwrap();
    let path = dir.path().join(format!(
        "state.json.blobs/{}.wasm",
        digest.trim_start_matches("sha256:")
    ));
    // Bytes that do not match their digest are refused, not handed out.
    std::fs::write(&path, b"tampered").unwrap();
    let err = store.get_blob(&digest).await.unwrap_err();
    assert!(matches!(err, ControlError::Corrupt { .. }), "{err}");
    store.delete_blob(&digest).await.unwrap();
    assert!(store.get_blob(&digest).await.unwrap().is_none());
    // A directory where the bytes should be: a failure, reported.
    std::fs::create_dir_all(&path).unwrap();
    assert!(store.delete_blob(&digest).await.is_err());
}

/// A store URL's password never reaches an error: not for a scheme no
/// store knows, nor for a Redis that cannot be reached.
#[tokio::test]
async fn store_errors_do_not_show_the_urls_password() {
    for url in [
        "bogus://app:s3cret@h/x",
        "redis://:s3cret@127.0.0.1:1",
        "redis://app:s3cret@127.0.0.1:1",
    ] {
        let err = cog_control::Control::open(url).await.unwrap_err();
        let shown = format!("{err} {err:?}");
        let mut source = std::error::Error::source(&err);
        let mut chain = shown.clone();
        while let Some(e) = source {
            chain.push_str(&format!(" {e} {e:?}"));
            source = e.source();
        }
        assert!(!chain.contains("s3cret"), "{url}: {chain}");
    }
}

/// The Redis store behind Sentinel: after a failover the document written
/// before is read from the new master, and writes reach it within moments
/// (the demoted server answers `READONLY`; the client reconnects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_follows_a_sentinel_failover() {
    let sentinel = cog_testkit::RedisSentinel::start().unwrap();
    let c = cog_control::Control::open(&sentinel.url()).await.unwrap();
    c.create_plan("free", plan("rps=10/1s")).await.unwrap();
    let sentinel = sentinel.failed_over().await;
    let started = std::time::Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        match c.create_plan(&format!("p{n}"), plan("rps=10/1s")).await {
            Ok(()) => break,
            Err(e) => assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "no write since the failover: {e}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let state = c.state().await.unwrap();
    assert!(state.spec.plans.contains_key("free"));
    assert!(state.spec.plans.contains_key(&format!("p{n}")));
    drop(sentinel);
}

/// With its plugin data over the deployments, a move copies each plugin's
/// scope of the partition's tenants at once — a tenant idle through the
/// services' copy window keeps its data — once, as the services' first
/// use would: a service's own copy after it does not overwrite what was
/// written since. A copy that fails says so; the move is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_copies_the_partitions_plugin_data_ahead() {
    use cog_core::placement::{Placement, Router, partition};
    use cog_sandbox::{KvStore, PlacedKv, RedisKv};
    use std::time::Duration;

    let (main, big) = (RedisServer::start().unwrap(), RedisServer::start().unwrap());
    let kv_on = async |s: &RedisServer| {
        RedisKv::new(cog_testkit::fred_client(&s.url()).await).timeout(Duration::from_secs(1))
    };
    let placed = |stores: [(&str, RedisKv); 2]| {
        let router = Router::new(["main", "big"], Placement::new(["main", "big"]).unwrap());
        PlacedKv::new(Arc::new(router.unwrap()), stores).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let c =
        Control::new(Arc::new(FileStore::new(dir.path().join("s.json")))).plugin_data(Arc::new(
            placed([("main", kv_on(&main).await), ("big", kv_on(&big).await)]),
        ));
    c.add_deployment("main").await.unwrap();
    c.add_deployment("big").await.unwrap();
    c.create_plan("free", plan("rps=10/1s")).await.unwrap();
    let other = cog_testkit::placement::elsewhere("acme");
    for t in ["acme", other.as_str()] {
        c.create_tenant(t, Tenant::new("free")).await.unwrap();
    }
    c.install_plugin("p", EMPTY_WASM, PluginSpec::default())
        .await
        .unwrap();
    let main_kv = kv_on(&main).await;
    let hash = |t: &str| main_kv.key(&kv_scope(t, "p"));
    for t in ["acme", other.as_str()] {
        main.command(&["HSET", &hash(t), "k", "old"]).unwrap();
    }
    let hget = |s: &RedisServer, t: &str| s.command(&["HGET", &hash(t), "k"]).unwrap();

    let table = c.move_partition(partition("acme"), "big").await.unwrap();
    assert_eq!(
        hget(&big, "acme"),
        cog_testkit::Reply::Bulk(Some(b"old".to_vec()))
    );
    assert_eq!(hget(&big, &other), cog_testkit::Reply::Bulk(None));

    // A service that had not seen the move: written since the copy, not
    // copied over again on its first use.
    big.command(&["HSET", &hash("acme"), "k", "new"]).unwrap();
    let router_table = table.to_placement().unwrap();
    let service_router = Router::new(["main", "big"], Placement::new(["main", "big"]).unwrap());
    let service_router = Arc::new(service_router.unwrap());
    let service = PlacedKv::new(
        service_router.clone(),
        [("main", kv_on(&main).await), ("big", kv_on(&big).await)],
    )
    .unwrap();
    service_router.set_placement(router_table).unwrap();
    let got = tokio::task::spawn_blocking(move || service.get(&kv_scope("acme", "p"), b"k"))
        .await
        .unwrap();
    assert_eq!(got, Ok(Some(b"new".to_vec())));

    // The copy fails (the deployment it would go to is down): the move is
    // made all the same, and says so.
    main.pause().unwrap();
    let e = c.move_partition(partition("acme"), "main").await;
    main.resume().unwrap();
    let e = e.unwrap_err();
    assert!(matches!(e, ControlError::PluginData { .. }), "{e}");
    assert!(e.to_string().contains("the partition moved"), "{e}");
    let now = c
        .placement()
        .await
        .unwrap()
        .unwrap()
        .to_placement()
        .unwrap();
    assert_eq!(now.deployment_of(partition("acme")), "main");

    // The store goes back (a backup restored) past writes this handle
    // made, and another writes a tenant of the partition: the move copies
    // that tenant's scope — the partition as of the state it commits, not
    // the handle's newest, lost one (of a higher revision).
    let backup = std::fs::read(dir.path().join("s.json")).unwrap();
    for plan_name in ["lost1", "lost2", "lost3"] {
        c.create_plan(plan_name, plan("rps=1/1s")).await.unwrap();
    }
    std::fs::write(dir.path().join("s.json"), backup).unwrap();
    let buddy = (0..)
        .map(|i| format!("t{i}"))
        .find(|t| partition(t) == partition("acme"))
        .unwrap();
    Control::new(c.store().clone())
        .create_tenant(&buddy, Tenant::new("free"))
        .await
        .unwrap();
    main.command(&["HSET", &hash(&buddy), "k", "old"]).unwrap();
    c.move_partition(partition("acme"), "big").await.unwrap();
    assert_eq!(
        hget(&big, &buddy),
        cog_testkit::Reply::Bulk(Some(b"old".to_vec())),
        "copied at the move"
    );
}
