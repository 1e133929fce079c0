//! [`Directory`]: the control plane as the request path sees it — an
//! in-memory view, kept current — and the [`Authenticate`] layer.

/// The view's maps: foldhash, seeded per process (their keys come from the
/// store; requests only look up).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::collections::HashSet;
use std::fmt;
use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use cog_ratelimit::{BoxError, Quota, QuotaSource};
use http::request::Parts;

use crate::error::ControlError;
use crate::keys;
use crate::model::{Plan, State, Status, Tenant};
use crate::store::Store;
use cog_core::placement::{Placement, PlacementError, Router};

/// What the request path knows of a tenant, put into the request's
/// extensions by [`Authenticate`](crate::auth::Authenticate).
#[derive(Debug, Clone)]
pub struct TenantContext {
    /// The tenant's id.
    pub id: Arc<str>,
    /// Its plan's name.
    pub plan: Arc<str>,
    /// Active or suspended.
    pub status: Status,
    /// Plan limits and quotas with the tenant's overrides; `None` when the
    /// plan sets none (unlimited).
    pub quota: Option<Quota>,
    /// What one request costs on every limit and quota of the tenant: the
    /// largest `cost` any of them gives (1 when none does). A limiter
    /// charges it with [`Directory::request_cost`].
    pub cost: u64,
    /// The plan's L1 cache budget, if any.
    pub cache_budget_bytes: Option<u64>,
}

struct KeyEntry {
    /// SHA-256 of the key.
    hash: [u8; 32],
    /// The key's tenant, resolved when the view is built (a key whose
    /// tenant is gone is not in the view): authentication looks up once.
    tenant: Arc<TenantContext>,
    expires: Option<u64>,
    revoked: bool,
}

#[derive(Default)]
struct View {
    revision: u64,
    /// The stamp of the commit that made `revision`, when the store keeps
    /// one ([`Store::version`]).
    stamp: Option<u64>,
    keys: HashMap<String, KeyEntry>,
    tenants: HashMap<Arc<str>, Arc<TenantContext>>,
    #[cfg(feature = "sandbox")]
    plugins: HashMap<Arc<str>, cog_sandbox::layer::Resolved>,
    placement: Option<Placement>,
}

/// What the layers see of tenant `id` on `plan`: the plan's limits and
/// quotas with the tenant's overrides. `None` (logged) when they do not
/// make a quota, which validation rules out for every write (a state an
/// older version stored may still hold such a tenant).
pub(crate) fn context_of(id: &str, t: &Tenant, plan: &Plan) -> Option<TenantContext> {
    let (limits, quotas) = t.effective_limits(plan);
    let all: Vec<cog_ratelimit::Limit> = limits
        .iter()
        .map(|l| l.to_limit(false))
        .chain(quotas.iter().map(|l| l.to_limit(true)))
        .collect();
    let quota = if all.is_empty() {
        None
    } else {
        match Quota::new(all) {
            Ok(q) => Some(q),
            Err(e) => {
                // Only in a state an older version stored (writes are
                // validated); refuse to serve the tenant unlimited.
                tracing::error!(target: "cog_control", tenant = %id, error = %e, "invalid quota; tenant refused");
                return None;
            }
        }
    };
    let cost = crate::model::request_cost(&limits, &quotas);
    Some(TenantContext {
        id: id.into(),
        plan: t.plan.as_str().into(),
        status: t.status,
        quota,
        cost,
        cache_budget_bytes: plan.cache_budget_bytes,
    })
}

impl View {
    fn build(state: &State) -> View {
        let mut tenants =
            HashMap::with_capacity_and_hasher(state.spec.tenants.len(), Default::default());
        for (id, t) in &state.spec.tenants {
            let Some(plan) = state.spec.plans.get(&t.plan) else {
                continue;
            };
            let Some(ctx) = context_of(id, t, plan) else {
                continue;
            };
            tenants.insert(ctx.id.clone(), Arc::new(ctx));
        }
        let keys = state
            .keys
            .iter()
            .filter_map(|(id, k)| {
                let hash = keys::unhex32(&k.hash)?;
                let tenant = tenants.get(k.tenant.as_str())?.clone();
                Some((
                    id.clone(),
                    KeyEntry {
                        hash,
                        tenant,
                        expires: k.expires,
                        revoked: k.revoked,
                    },
                ))
            })
            .collect();
        View {
            revision: state.revision,
            stamp: state.stamp,
            keys,
            tenants,
            // Validated on load: a table that does not convert is not stored.
            placement: state.placement.as_ref().and_then(|t| t.to_placement().ok()),
            #[cfg(feature = "sandbox")]
            plugins: HashMap::default(),
        }
    }
}

struct Inner {
    store: Arc<dyn Store>,
    /// Read on every request without a lock: a read leaves the shared
    /// cache lines alone (a reader-writer lock's count bounces between
    /// the cores serving requests).
    ///
    /// Shared with [`Directory::cache_budget`]'s closures, which hold it
    /// alone: a cache holding one, handed to a removal hook, would
    /// otherwise hold the directory that holds the hook.
    view: Arc<ArcSwap<View>>,
    /// Serializes replacing the view (a slower refresh must not replace a
    /// newer one).
    replacing: parking_lot::Mutex<()>,
    /// Whether the store was found emptied (and that was logged).
    emptied: parking_lot::Mutex<bool>,
    /// Routers handed every new placement ([`Directory::follow`]).
    routers: parking_lot::Mutex<Vec<Weak<Router>>>,
    /// Handed the tenants each new view drops ([`Directory::on_removed`]).
    forgets: parking_lot::Mutex<Vec<Forget>>,
    /// How many runs of `forgets` are in flight.
    forgetting: tokio::sync::watch::Sender<usize>,
    #[cfg(feature = "sandbox")]
    sandbox: Option<crate::plugins::Loader>,
}

/// A hook of [`Directory::on_removed`].
type Forget =
    Arc<dyn Fn(Vec<Arc<TenantContext>>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

impl Inner {
    fn new(store: Arc<dyn Store>) -> Self {
        Inner {
            store,
            view: Arc::default(),
            replacing: parking_lot::Mutex::default(),
            emptied: parking_lot::Mutex::default(),
            routers: parking_lot::Mutex::default(),
            forgets: parking_lot::Mutex::default(),
            forgetting: tokio::sync::watch::Sender::new(0),
            #[cfg(feature = "sandbox")]
            sandbox: None,
        }
    }
}

/// A live view of the control plane for the request path: API key →
/// tenant, tenant → quota, with no store round trip per request.
///
/// The view is rebuilt whenever the store's revision changes: at once when
/// the store announces a change (Redis pub/sub), and by polling the
/// revision every `poll` as a backstop (a lost message, the file store). A
/// change made with the `cog` CLI is therefore seen within `poll` at
/// worst, and within a round trip with Redis. If the store is unreachable,
/// or found empty after having had data (a Redis restarted without
/// persistence), the last view keeps serving — in the second case until
/// the store is written again.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let view = self.inner.view.load();
        f.debug_struct("Directory")
            .field("revision", &view.revision)
            .field("tenants", &view.tenants.len())
            .field("keys", &view.keys.len())
            .finish()
    }
}

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No key, or not one the store knows (or it was revoked or expired).
    Unauthenticated,
    /// A valid key of a suspended tenant.
    Suspended,
}

impl Directory {
    /// Loads the store and keeps the view current (polling every second
    /// besides change announcements). Needs a Tokio runtime.
    ///
    /// # Errors
    /// The first load failed.
    pub async fn start(store: Arc<dyn Store>) -> Result<Self, ControlError> {
        Self::start_with(store, Duration::from_secs(1)).await
    }

    /// As [`start`](Self::start), polling the revision every `poll`.
    ///
    /// # Errors
    /// The first load failed.
    pub async fn start_with(store: Arc<dyn Store>, poll: Duration) -> Result<Self, ControlError> {
        Self::launch(Inner::new(store), poll).await
    }

    /// As [`start_with`](Self::start_with), and resolves each tenant's
    /// plugins ([`cog_sandbox::layer::PluginResolver`]), loaded in `runtime`:
    /// those attached to the tenant or its plan, enabled, in name order,
    /// with the plan's plugin limits under the plugin's own. A plugin
    /// that fails to load stands in the chain, and its failure policy
    /// applies (logged; tried again with the next view).
    ///
    /// A new view loads only what changed: a plugin with the same bytes,
    /// language, limits, configuration and policy is the one already
    /// loaded, and each tenant keeps its copy of it — with the instances
    /// (Python interpreters) warm from its earlier calls — across changes
    /// that leave both alone (a key created, another tenant edited). A
    /// changed plugin, a tenant deleted and created again (as the audit
    /// log names it: see [`on_removed`](Self::on_removed)), and a store
    /// that went back or was written around the audit log start with
    /// fresh instances.
    ///
    /// # Errors
    /// The first load failed.
    #[cfg(feature = "sandbox")]
    pub async fn start_with_plugins(
        store: Arc<dyn Store>,
        poll: Duration,
        runtime: cog_sandbox::Runtime,
    ) -> Result<Self, ControlError> {
        Self::launch(
            Inner {
                sandbox: Some(crate::plugins::Loader::new(runtime)),
                ..Inner::new(store)
            },
            poll,
        )
        .await
    }

    async fn launch(inner: Inner, poll: Duration) -> Result<Self, ControlError> {
        let state = inner.store.load().await?;
        let view = build(&inner, &state, false).await;
        inner.view.store(Arc::new(view));
        let dir = Directory {
            inner: Arc::new(inner),
        };
        let weak = Arc::downgrade(&dir.inner);
        let changes = dir.inner.store.subscribe();
        tokio::spawn(watch(weak, changes, poll));
        Ok(dir)
    }

    /// Re-reads the store now if its revision moved; returns once the
    /// [removal hooks](Self::on_removed) handed tenants by then — by this
    /// refresh or a background one — have finished.
    ///
    /// # Errors
    /// The store failed (the old view stays).
    pub async fn refresh(&self) -> Result<(), ControlError> {
        let refreshed = refresh(&self.inner).await;
        let mut running = self.inner.forgetting.subscribe();
        // The sender lives in `inner`, which `self` holds: this cannot fail.
        let _ = running.wait_for(|n| *n == 0).await;
        refreshed
    }

    /// Runs `forget` with the tenants each new view drops, in the
    /// background, once the view without them is in force on this
    /// instance: tenants deleted — and tenants deleted and created again
    /// between two views, when the audit log names the delete or the
    /// create (`cog tenant delete`/`create`, the admin API; not two
    /// `apply`s) — or lost with a store that went back. That is where a
    /// service drops what it keeps per tenant outside the control plane
    /// (cached answers, limiter counters), so that a tenant created again
    /// under the same id — another customer, perhaps — starts empty.
    ///
    /// Every instance runs its hooks, so whatever an instance wrote for a
    /// tenant before it saw the deletion is dropped by that instance too.
    /// Hooks are called in the order they were added, one after another;
    /// a hook must not wait for [`refresh`](Self::refresh) (which waits
    /// for the hooks). A hook lives as long as the directory: one holding
    /// the directory itself (or a layer built on it) keeps both alive;
    /// caches built with [`cache_budget`](Self::cache_budget) do not.
    pub fn on_removed<F, Fut>(&self, forget: F)
    where
        F: Fn(Vec<Arc<TenantContext>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.inner
            .forgets
            .lock()
            .push(Arc::new(move |gone| Box::pin(forget(gone))));
    }

    /// The revision the view was built from.
    pub fn revision(&self) -> u64 {
        self.inner.view.load().revision
    }

    /// The placement table in force (where tenants' data lives), if the
    /// store has one.
    pub fn placement(&self) -> Option<Placement> {
        self.inner.view.load().placement.clone()
    }

    /// Hands `router` the store's placement now and every newer one as it
    /// arrives, for as long as the router lives — how an instance's placed
    /// stores (limiter, cache, plugin KV) follow `cog placement move`.
    /// Should the store lose its table (restored from a backup made before
    /// it had one), the router goes back to every partition on its first
    /// deployment, as an instance started without a table routes.
    ///
    /// # Errors
    /// The placement now puts a partition on a deployment `router` has no
    /// connection to (the router keeps its placement; later ones that do
    /// are taken, later ones that do not are logged).
    pub fn follow(&self, router: &Arc<Router>) -> Result<(), PlacementError> {
        self.inner.routers.lock().push(Arc::downgrade(router));
        match self.placement() {
            Some(p) => router.set_placement(p).map(drop),
            None => Ok(()),
        }
    }

    /// The tenant `id`, if it exists.
    pub fn tenant(&self, id: &str) -> Option<Arc<TenantContext>> {
        self.inner.view.load().tenants.get(id).cloned()
    }

    /// Each tenant's L1 cache budget — its plan's `cache_budget_bytes`,
    /// as the directory has it now — for cog-cache's
    /// `CacheBuilder::tenant_l1_cap_with`, on caches whose tenants are this
    /// directory's tenant ids. `None` for
    /// a tenant without one (or unknown): not capped. Without it, a plan's
    /// budget caps nothing.
    pub fn cache_budget(&self) -> impl Fn(&str) -> Option<u64> + Clone + Send + Sync + 'static {
        let view = self.inner.view.clone();
        move |tenant: &str| {
            view.load()
                .tenants
                .get(tenant)
                .and_then(|t| t.cache_budget_bytes)
        }
    }

    /// The tenant an API key authenticates: looked up by the key's public
    /// id, then its hash compared in constant time; revoked and expired
    /// keys and suspended tenants refused.
    ///
    /// # Errors
    /// Why the key is refused.
    pub fn authenticate(&self, key: &str) -> Result<Arc<TenantContext>, Refusal> {
        let id = keys::id_of(key).ok_or(Refusal::Unauthenticated)?;
        let hash = keys::digest(key);
        let view = self.inner.view.load();
        let entry = view.keys.get(id).ok_or(Refusal::Unauthenticated)?;
        if !keys::constant_time_eq(&hash, &entry.hash) || entry.revoked {
            return Err(Refusal::Unauthenticated);
        }
        if let Some(expires) = entry.expires {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if now >= expires {
                return Err(Refusal::Unauthenticated);
            }
        }
        if entry.tenant.status == Status::Suspended {
            return Err(Refusal::Suspended);
        }
        Ok(entry.tenant.clone())
    }

    /// What a request costs on its tenant's limits, for
    /// [`RateLimitLayer::cost_with`](cog_ratelimit::RateLimitLayer::cost_with):
    /// the authenticated tenant's [`TenantContext::cost`] (from the
    /// request's extensions), 1 without one. Without it a limiter charges
    /// every request 1, whatever the plan's `cost` says.
    pub fn request_cost() -> impl Fn(&Parts) -> u64 + Clone + Send + Sync + 'static {
        |parts: &Parts| {
            parts
                .extensions
                .get::<Arc<TenantContext>>()
                .map_or(1, |t| t.cost)
        }
    }

    /// A [`cog_ratelimit::extract::KeyExtractor`] for the authenticated tenant's id
    /// (from [`TenantContext`] in the request's extensions).
    pub fn tenant_key() -> impl cog_ratelimit::extract::KeyExtractor + Clone {
        |parts: &Parts| {
            parts
                .extensions
                .get::<Arc<TenantContext>>()
                .map(|t| String::from(&*t.id))
        }
    }
}

/// The view of `state`; `went_back`: the store's revision is lower than
/// the view's (restored, or a failover to an older replica).
async fn build(inner: &Inner, state: &State, went_back: bool) -> View {
    #[allow(unused_mut)]
    let mut view = View::build(state);
    #[cfg(feature = "sandbox")]
    if let Some(loader) = &inner.sandbox {
        view.plugins = loader
            .resolve_all(&*inner.store, state, went_back)
            .await
            .into_iter()
            .collect();
    }
    #[cfg(not(feature = "sandbox"))]
    let _ = (inner, went_back);
    view
}

async fn refresh(inner: &Arc<Inner>) -> Result<(), ControlError> {
    let seen = {
        let view = inner.view.load();
        crate::store::Version {
            revision: view.revision,
            stamp: view.stamp,
        }
    };
    let version = inner.store.version().await?;
    if version.matches(&seen) {
        return Ok(());
    }
    let (revision, known) = (version.revision, seen.revision);
    // The same revision from another commit: the store went back (a
    // failover to a replica behind, a restored backup) and was written up
    // to it again while this instance did not look.
    let relived = revision == known;
    if revision == 0 {
        // The store is empty after having had data: it lost it (Redis
        // restarted without persistence, flushed, a fresh replica).
        // Following it would lock every tenant out; the last view stays
        // until the store is written again (e.g. restored with
        // `cog apply`).
        let mut warned = inner.emptied.lock();
        if !*warned {
            tracing::error!(
                target: "cog_control",
                known,
                "the control-plane store is empty (data lost?); keeping the last view until it is written again"
            );
            *warned = true;
        }
        return Ok(());
    }
    *inner.emptied.lock() = false;
    let lower = revision < known || relived;
    let state = inner.store.load().await?;
    let view = Arc::new(build(inner, &state, lower).await);
    let replacing = inner.replacing.lock();
    let current = inner.view.load_full();
    // A slower refresh must not replace a newer view — unless the store
    // itself went back (restored, or a failover to an older replica).
    let newer = view.revision >= current.revision;
    if newer || lower {
        inner.view.store(view.clone());
    }
    drop(replacing);
    if newer || lower {
        forget(inner, removed(&current, &view, &state, lower));
    }
    // Placement revisions only grow in a store that keeps its writes: an
    // older table in a newer view is a store that went back and was
    // written again before this refresh saw it lower.
    let table_went_back = match (&view.placement, &current.placement) {
        (Some(now), Some(before)) => now.revision() < before.revision(),
        _ => false,
    };
    match &view.placement {
        Some(placement) => hand_out(inner, Some(placement), lower || (newer && table_went_back)),
        // The table is gone: everything on each router's first deployment,
        // as in an instance started now.
        None if (newer || lower) && current.placement.is_some() => hand_out(inner, None, true),
        None => {}
    }
    Ok(())
}

/// The tenants of `before` that `after` no longer has: gone, or — as the
/// audit log says of the writes since `before` — deleted or created since
/// (a tenant created while `before` had it was deleted in between). A store
/// that went back (`lower`) says nothing of the writes in between.
fn removed(before: &View, after: &View, state: &State, lower: bool) -> Vec<Arc<TenantContext>> {
    let renewed = if lower {
        HashSet::new()
    } else {
        renewed(state, before.revision).0
    };
    before
        .tenants
        .values()
        .filter(|t| !after.tenants.contains_key(&t.id) || renewed.contains(&*t.id))
        .cloned()
        .collect()
}

/// The tenants `state`'s audit log names as created or deleted by the
/// writes after revision `since`, and whether it names every write since
/// (entries past [`AUDIT_KEEP`](crate::AUDIT_KEEP) are trimmed; each write
/// through [`Control`](crate::Control) is one entry).
pub(crate) fn renewed(state: &State, since: u64) -> (HashSet<&str>, bool) {
    let tenants = state
        .audit
        .iter()
        .filter(|e| e.revision > since)
        .filter(|e| matches!(e.action.as_str(), "tenant.create" | "tenant.delete"))
        .map(|e| e.target.as_str())
        .collect();
    let complete = state.revision <= since
        || state
            .audit
            .iter()
            .any(|e| e.revision == since.saturating_add(1));
    (tenants, complete)
}

/// Hands `gone` to the removal hooks, in a task of its own (a hook may
/// wait on Redis; the view does not wait for it).
fn forget(inner: &Arc<Inner>, gone: Vec<Arc<TenantContext>>) {
    if gone.is_empty() {
        return;
    }
    let hooks = inner.forgets.lock().clone();
    if hooks.is_empty() {
        return;
    }
    /// Counts the run out however it ends (a hook that panics included).
    struct Running(Arc<Inner>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.forgetting.send_modify(|n| *n -= 1);
        }
    }
    inner.forgetting.send_modify(|n| *n += 1);
    let running = Running(inner.clone());
    tokio::spawn(async move {
        let _running = running;
        for hook in hooks {
            hook(gone.clone()).await;
        }
    });
}

/// Gives `placement` (`None`: no table, every partition on the router's
/// first deployment) to every router following the directory: each takes
/// it if it is newer than its own — or, when the store went back
/// (`reset`), if it differs: the store's table is the one in force, even
/// if the routers followed a newer one since lost.
fn hand_out(inner: &Inner, placement: Option<&Placement>, reset: bool) {
    inner.routers.lock().retain(|r| {
        let Some(router) = r.upgrade() else {
            return false;
        };
        let placement = match placement {
            Some(p) => p.clone(),
            None => match Placement::new([router.deployments()[0].clone()]) {
                Ok(p) => p,
                // The router's names were checked when it was built.
                Err(_) => return true,
            },
        };
        let revision = placement.revision();
        let switched = if reset {
            router.reset_placement(placement)
        } else {
            router.set_placement(placement)
        };
        if let Err(e) = switched {
            tracing::error!(
                target: "cog_control",
                error = %e,
                revision,
                "placement not followed: this instance has no connection to a deployment it names"
            );
        }
        true
    });
}

async fn watch(
    inner: Weak<Inner>,
    mut changes: Option<tokio::sync::watch::Receiver<u64>>,
    poll: Duration,
) {
    loop {
        let announced = async {
            match changes.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = announced => {}
            () = tokio::time::sleep(poll) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = refresh(&inner).await {
            tracing::warn!(target: "cog_control", error = &e as &dyn std::error::Error, "refreshing the control plane failed; serving the last view");
        }
    }
}

impl QuotaSource for Directory {
    /// The authenticated tenant's quota (from the request's
    /// [`TenantContext`], else looked up by `subject`); unknown subjects
    /// are unlimited — refusing them is authentication's job.
    fn quota_now(&self, subject: &str, parts: &Parts) -> Option<Result<Option<Quota>, BoxError>> {
        Some(Ok(match parts.extensions.get::<Arc<TenantContext>>() {
            Some(t) if &*t.id == subject => t.quota.clone(),
            _ => self.tenant(subject).and_then(|t| t.quota.clone()),
        }))
    }

    fn quota(
        &self,
        subject: &str,
        parts: &Parts,
    ) -> impl Future<Output = Result<Option<Quota>, BoxError>> + Send {
        let quota = match parts.extensions.get::<Arc<TenantContext>>() {
            Some(t) if &*t.id == subject => t.quota.clone(),
            _ => self.tenant(subject).and_then(|t| t.quota.clone()),
        };
        ready(Ok(quota))
    }
}

#[cfg(feature = "sandbox")]
impl cog_sandbox::layer::PluginResolver for Directory {
    /// The plugins of the authenticated tenant (from [`TenantContext`] in
    /// the request's extensions); none without one.
    fn resolve(&self, parts: &Parts) -> cog_sandbox::layer::Resolved {
        self.resolve_any(parts)
            .unwrap_or_else(cog_sandbox::layer::Resolved::none)
    }

    /// As `resolve`, without touching a shared count when the tenant has
    /// no plugins.
    fn resolve_any(&self, parts: &Parts) -> Option<cog_sandbox::layer::Resolved> {
        let tenant = parts.extensions.get::<Arc<TenantContext>>()?;
        self.inner
            .view
            .load()
            .plugins
            .get(&tenant.id)
            .filter(|r| !r.plugins.is_empty())
            .cloned()
    }
}
