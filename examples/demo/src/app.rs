//! The demo's service, built once for `main.rs`, the whole-stack bench
//! (`benches/stack.rs`) and the fault suite (`tests/faults.rs`).
//!
//! Request path, outermost first: cog-trace (server span, `traceparent`
//! on every response) → API-key authentication (cog-control) → rate
//! limiting by the tenant's plan (cog-ratelimit) → the tenant's plugins
//! (cog-sandbox) → handlers using cog-cache.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cog_cache::TieredCache;
use cog_cache::http::{HttpCacheLayer, StoredResponse};
use cog_control::auth::AuthenticateLayer;
use cog_control::store::Store;
use cog_control::{Control, Directory, LimitSpec, Plan, Tenant, TenantContext};
use cog_core::placement::{Placement, Router as PlacementRouter};
use cog_ratelimit::RateLimitLayer;
use cog_ratelimit::region::{GlobalStore, RegionSet};
use cog_ratelimit::store::{FailurePolicy, Leasing, MemoryStore, PlacedStore};
use cog_sandbox::layer::PluginLayer;
use cog_sandbox::{KvStore, MemoryKv, PlacedKv, Runtime};
use cog_trace::server::TraceLayer;

/// Any error of the demo.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// What the demo runs on.
#[derive(Clone, Debug)]
pub struct Config {
    /// Everything shared through Redis when set; in memory otherwise.
    pub redis_url: Option<String>,
    /// The control-plane store without Redis (`file:PATH`).
    pub store: String,
    /// Latency of the simulated model behind `/v1/complete`.
    pub upstream: Duration,
    /// Latency of the simulated database behind `/v1/items/{id}`.
    pub database: Duration,
    /// How often the directory re-reads the store's revision.
    pub poll: Duration,
    /// Redis calls give up after this long.
    pub redis_timeout: Duration,
    /// A CPython for WASI (`python3.11.wasm` and `lib/`) for Python
    /// plugins; without one they stand in as unavailable (skipped).
    pub python: Option<std::path::PathBuf>,
    /// The control plane's Redis when it is not `redis_url` (e.g. a
    /// durable one, while limits and cache live in a volatile one).
    pub control_url: Option<String>,
    /// Instances sharing the limits: while Redis is unreachable each
    /// enforces its share (`FailurePolicy::Local`).
    pub instances: u64,
    /// Rate limits from leases of this lease time (the leased mode of
    /// `RedisStore`), or exact per-request decisions (`None`).
    pub lease: Option<Duration>,
    /// This instance's region, one of `regions` (`COG_REGION`): limits
    /// are global across the regions (each decides locally at its share),
    /// cache invalidations reach every region's L2.
    pub region: Option<String>,
    /// Every region's Redis as this instance reaches it, this one's
    /// included (`COG_REGIONS=eu=redis://…,us=redis://…`).
    pub regions: Vec<(String, String)>,
    /// How often regions exchange demand (`COG_REGION_SYNC_MS`, default
    /// 1 s).
    pub region_sync: Duration,
    /// Redis deployments tenants are placed on by the control plane's
    /// placement table (`COG_DEPLOYMENTS=main=redis://…,big=redis://…`):
    /// limiter state, cache entries and plugin data of a tenant live on its
    /// partition's deployment and follow `cog placement move`.
    pub deployments: Vec<(String, String)>,
    /// How long a stop (SIGTERM) waits for requests in flight
    /// (`COG_DRAIN_MS`, default 20 s: within an orchestrator's usual 30 s
    /// grace, with time left to flush spans and metrics).
    pub drain: Duration,
}

impl Default for Config {
    /// In memory, the file store `./cog-state.json`, a 200 ms model, a
    /// 5 ms database, one region, no placement.
    fn default() -> Self {
        Config {
            redis_url: None,
            store: "file:./cog-state.json".into(),
            upstream: Duration::from_millis(200),
            database: Duration::from_millis(5),
            poll: Duration::from_secs(1),
            redis_timeout: Duration::from_millis(100),
            python: None,
            control_url: None,
            instances: 2,
            lease: None,
            region: None,
            regions: Vec::new(),
            region_sync: Duration::from_secs(1),
            deployments: Vec::new(),
            drain: Duration::from_secs(20),
        }
    }
}

/// A demo setting in the environment that does not read: named, with what
/// it holds and what it should hold. The demo refuses to start on one
/// rather than run on a default the operator did not ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable.
    pub var: &'static str,
    /// What it holds.
    pub value: String,
    /// What it should hold.
    pub expected: &'static str,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={:?}: expected {}",
            self.var, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

/// `name=url,name=url`; every entry must have both (blank ones, as after a
/// trailing comma, are skipped).
fn named_urls(
    var: &'static str,
    value: Option<String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(name, url)| (name.trim(), url.trim()))
                .filter(|(name, url)| !name.is_empty() && !url.is_empty())
                .map(|(name, url)| (name.to_owned(), url.to_owned()))
                .ok_or_else(|| ConfigError {
                    var,
                    value: value.clone(),
                    expected: "NAME=URL entries separated by commas",
                })
        })
        .collect()
}

impl Config {
    /// [`from_vars`](Self::from_vars) on the process environment.
    ///
    /// # Errors
    /// A variable that is set but does not read.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From `COG_REDIS_URL`, `COG_CONTROL_URL`, `COG_STORE`,
    /// `COG_DEMO_UPSTREAM_MS`, `COG_DEMO_INSTANCES` (default 2),
    /// `COG_RATELIMIT_LEASE_MS` (leased rate limits; default exact),
    /// `COG_REGION` + `COG_REGIONS` (+ `COG_REGION_SYNC_MS`) across
    /// regions, `COG_DEPLOYMENTS` for tenant placement,
    /// `COG_PYTHON_WASI` (default `target/python-wasi` when it is there),
    /// `COG_DRAIN_MS`, as `var` gives them. An empty variable is unset.
    ///
    /// # Errors
    /// A variable that is set but does not read (a number of milliseconds
    /// with a unit, `COG_DEMO_INSTANCES=0`, a region without its URL): the
    /// demo would otherwise run on a default the operator did not ask for.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        // A whole number, at least `min`.
        let number = |k: &'static str, min: u64, expected: &'static str| {
            var(k)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n >= min)
                        .ok_or(ConfigError {
                            var: k,
                            value: v,
                            expected,
                        })
                })
                .transpose()
        };
        let ms = "a whole number of milliseconds, without a unit";
        let ms_1 = "a whole number of milliseconds (at least 1), without a unit";
        let defaults = Config::default();
        Ok(Config {
            redis_url: var("COG_REDIS_URL"),
            store: var("COG_STORE")
                .map(|s| {
                    if s.contains(':') {
                        s
                    } else {
                        format!("file:{s}")
                    }
                })
                .unwrap_or(defaults.store),
            upstream: number("COG_DEMO_UPSTREAM_MS", 0, ms)?
                .map_or(defaults.upstream, Duration::from_millis),
            python: var("COG_PYTHON_WASI").map(Into::into).or_else(|| {
                let default = std::path::PathBuf::from("target/python-wasi");
                default.is_dir().then_some(default)
            }),
            control_url: var("COG_CONTROL_URL"),
            instances: number(
                "COG_DEMO_INSTANCES",
                1,
                "a whole number of instances, at least 1",
            )?
            .unwrap_or(defaults.instances),
            lease: number("COG_RATELIMIT_LEASE_MS", 1, ms_1)?.map(Duration::from_millis),
            region: var("COG_REGION"),
            regions: named_urls("COG_REGIONS", var("COG_REGIONS"))?,
            region_sync: number("COG_REGION_SYNC_MS", 1, ms_1)?
                .map_or(defaults.region_sync, Duration::from_millis),
            deployments: named_urls("COG_DEPLOYMENTS", var("COG_DEPLOYMENTS"))?,
            drain: number("COG_DRAIN_MS", 0, ms)?.map_or(defaults.drain, Duration::from_millis),
            ..defaults
        })
    }
}

/// Counters the handlers keep (also served on `/metrics`).
#[derive(Default, Debug)]
pub struct Counters {
    /// Calls that reached the simulated model.
    pub model_calls: AtomicU64,
    /// Reads that reached the simulated database.
    pub database_reads: AtomicU64,
}

/// The built service and what tests and the load report look at.
#[allow(missing_debug_implementations)]
pub struct Demo {
    /// Every route, every layer.
    pub router: Router,
    /// The live view of the control plane (API keys, quotas, plugins).
    pub directory: Directory,
    /// The control plane itself, for changes.
    pub control: Control,
    /// The model-completion cache.
    pub completions: TieredCache<String, String>,
    /// The HTTP response cache of the page routes.
    pub pages: TieredCache<String, StoredResponse>,
    /// What the handlers counted.
    pub counters: Arc<Counters>,
    /// The demo tenant's key, when this run created it.
    pub demo_key: Option<String>,
}

/// What the handlers share — behind an `Arc` (`State<Arc<AppState>>`):
/// the router clones its handlers' state on every request, and one counter
/// is cheaper to clone and drop than the cache's handles.
struct AppState {
    completions: TieredCache<String, String>,
    counters: Arc<Counters>,
    upstream: Duration,
    database: Duration,
}

/// The sample Python plugin the `pro` plan runs.
const PRO_PLUGIN: &[u8] = include_bytes!("../../plugins/python/headers.py");

/// Creates plans `free` and `pro`, the tenant `demo` on `free`, and the
/// sample Python plugin `pro-headers` on `pro` (it marks responses
/// `x-cog-plan: pro`) on an empty store; returns the new key.
pub async fn seed(control: &Control) -> Result<Option<String>, Error> {
    let state = control.state().await?;
    if !state.spec.plans.is_empty() || !state.spec.tenants.is_empty() {
        return Ok(None);
    }
    let plan = |spec: &str| Plan {
        limits: vec![LimitSpec::parse(spec).expect("a valid limit")],
        ..Plan::default()
    };
    control
        .create_plan("free", plan("requests=10/1s,burst=20"))
        .await?;
    control
        .create_plan("pro", plan("requests=200/1s,burst=400"))
        .await?;
    let mut demo = Tenant::new("free");
    demo.display_name = "Demo tenant".into();
    control.create_tenant("demo", demo).await?;
    control
        .install_plugin(
            "pro-headers",
            PRO_PLUGIN,
            cog_control::PluginSpec {
                lang: cog_control::PluginLang::Python,
                attach: cog_control::Attach {
                    tenants: vec![],
                    plans: vec!["pro".into()],
                },
                config: "response add x-cog-plan: pro".into(),
                ..Default::default()
            },
        )
        .await?;
    Ok(Some(control.create_key("demo", None).await?.secret))
}

fn tenant_of(parts: &http::request::Parts) -> Option<String> {
    parts
        .extensions
        .get::<Arc<TenantContext>>()
        .map(|t| String::from(&*t.id))
}

/// Builds the whole stack.
pub async fn build(config: &Config) -> Result<Demo, Error> {
    let redis = match &config.redis_url {
        Some(url) => Some(cog_ratelimit::store::connect(url).await?),
        None => None,
    };
    let store: Arc<dyn Store> = match config.control_url.as_ref().or(config.redis_url.as_ref()) {
        Some(url) => Arc::new(
            cog_control::store::RedisStore::connect(url)
                .await?
                .timeout(config.redis_timeout.max(Duration::from_millis(500))),
        ),
        None => cog_control::store::open(&config.store).await?,
    };
    let control = Control::new(store.clone());
    let demo_key = seed(&control).await?;

    let spread = Spread::connect(config, &control).await?;
    let kv: Arc<dyn KvStore> = match (&redis, &spread.placed) {
        (Some(_), Some(placed)) => Arc::new(placed.kv()?),
        (Some(client), None) => Arc::new(cog_sandbox::RedisKv::new(client.clone())),
        (None, _) => Arc::new(MemoryKv::new()),
    };
    let mut runtime = Runtime::new().kv(kv);
    if let Some(dir) = &config.python {
        runtime = runtime.python(cog_sandbox::Python::open(dir)?);
    }
    let directory = Directory::start_with_plugins(store, config.poll, runtime).await?;
    if let Some(placed) = &spread.placed {
        directory.follow(&placed.router)?;
    }

    // Each tenant holds at most its plan's cache budget in each L1 (16 MiB
    // when the plan sets none): no tenant evicts the rest.
    let budget = directory.cache_budget();
    let cap = move |tenant: &str| budget(tenant).or(Some(16 << 20));
    let mut completions = TieredCache::<String, String>::builder()
        .l1_capacity_bytes(64 << 20)
        .ttl(Duration::from_secs(600))
        .stale_while_revalidate(Duration::from_secs(60))
        .stale_if_error(Duration::from_secs(3600))
        .tenant_l1_cap_with(cap.clone());
    let mut pages = TieredCache::<String, StoredResponse>::builder()
        .l1_capacity_bytes(32 << 20)
        .tenant_l1_cap_with(cap);
    if let Some(client) = &redis {
        completions = completions
            .redis(client.clone())
            .schema("demo-completion-v1")
            .redis_timeout(config.redis_timeout)
            .lease(Duration::from_secs(5));
        pages = pages
            .redis(client.clone())
            .redis_prefix("cog:pages:")
            .schema("demo-page-v2")
            .redis_timeout(config.redis_timeout);
        for (_, remote) in &spread.remotes {
            completions = completions.region(remote.clone());
            pages = pages.region(remote.clone());
        }
        if let Some(placed) = &spread.placed {
            completions = completions.placed(placed.router.clone(), placed.clients.clone());
            pages = pages.placed(placed.router.clone(), placed.clients.clone());
        }
    }
    let completions = completions.build()?;
    let pages = pages.build()?;

    let counters = Arc::new(Counters::default());
    let state = Arc::new(AppState {
        completions: completions.clone(),
        counters: counters.clone(),
        upstream: config.upstream,
        database: config.database,
    });

    // W3C context in (no baggage); one layer, so one set of instruments.
    let trace = TraceLayer::new().w3c(false);
    let api = Api {
        trace: trace.clone(),
        complete: Router::new().route("/v1/complete", post(complete)),
        items: Router::new().route("/v1/items/{id}", get(item)),
        page_cache: pages.clone(),
        pages: HttpCacheLayer::new(pages.clone())
            .tenant_with(tenant_of)
            // Keys authenticate tenants, and entries are per tenant: a
            // cached answer never crosses tenants.
            .cache_authorized(|_| true),
        state,
    };
    let api = match &redis {
        Some(client) => {
            let limiter = |client: &fred::clients::Client, lease: Option<Duration>| {
                let store = cog_ratelimit::store::RedisStore::new(client.clone())
                    .timeout(config.redis_timeout)
                    .on_failure(FailurePolicy::Local {
                        instances: config.instances,
                    });
                match lease {
                    Some(time) => store.leased(Leasing::new().lease_time(time)),
                    None => store,
                }
            };
            if let Some(placed) = &spread.placed {
                let stores = placed
                    .clients
                    .iter()
                    .map(|(name, c)| (name.as_str(), limiter(c, config.lease)));
                let store = PlacedStore::routed(placed.router.clone(), stores)?;
                with_layers(api, store, &directory)
            } else if let Some(region) = &config.region {
                // Each region decides on its own Redis from leases: a
                // region's share is spent locally, never across a link.
                let lease = config.lease.or(Some(Duration::from_millis(100)));
                let mut set = RegionSet::new(region.clone(), client.clone())
                    .sync_interval(config.region_sync);
                for (name, remote) in &spread.remotes {
                    set = set.region(name.clone(), remote.clone());
                }
                with_layers(
                    api,
                    GlobalStore::new(set, limiter(client, lease)),
                    &directory,
                )
            } else {
                with_layers(api, limiter(client, config.lease), &directory)
            }
        }
        None => with_layers(api, MemoryStore::new(), &directory),
    };
    // The trace layer is outermost in the API routes' own stack, and on
    // `/healthz` here: one `Router::layer` per route, not two (each one
    // boxes the route again, and every request clones the boxes). The API
    // router is merged in last, so its fallback is the one kept: a path no
    // route matches goes through the API's layers, traced and
    // authenticated (401 without a key, 404 with one).
    let health = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(trace);
    let router = health
        .merge(api)
        // Every handler made a route now, not on each request.
        .with_state(());
    Ok(Demo {
        router,
        directory,
        control,
        completions,
        pages,
        counters,
        demo_key,
    })
}

/// The other regions' and the placement deployments' connections.
struct Spread {
    /// Other regions, by name.
    remotes: Vec<(String, fred::clients::Client)>,
    placed: Option<Placed>,
}

struct Placed {
    router: Arc<PlacementRouter>,
    clients: Vec<(String, fred::clients::Client)>,
}

impl Placed {
    fn kv(&self) -> Result<PlacedKv, Error> {
        let stores = self
            .clients
            .iter()
            .map(|(n, c)| (n.as_str(), cog_sandbox::RedisKv::new(c.clone())));
        Ok(PlacedKv::new(self.router.clone(), stores)?)
    }
}

impl Spread {
    async fn connect(config: &Config, control: &Control) -> Result<Self, Error> {
        if config.region.is_some() && !config.deployments.is_empty() {
            return Err("COG_REGION and COG_DEPLOYMENTS together: not supported yet".into());
        }
        let mut remotes = Vec::new();
        if let Some(region) = &config.region {
            if !config.regions.iter().any(|(n, _)| n == region) {
                return Err(format!("COG_REGION={region} is not one of COG_REGIONS").into());
            }
            for (name, url) in config.regions.iter().filter(|(n, _)| n != region) {
                remotes.push((name.clone(), cog_ratelimit::store::connect(url).await?));
            }
        }
        let placed = match config.deployments.first() {
            None => None,
            Some((first, _)) => {
                let mut clients = Vec::new();
                for (name, url) in &config.deployments {
                    clients.push((name.clone(), cog_ratelimit::store::connect(url).await?));
                }
                // Revision 0: the control plane's table, whatever it says,
                // is newer.
                let start = match control.placement().await? {
                    Some(table) => table.to_placement()?,
                    None => Placement::from_parts(0, [first.as_str()], [(0, first.as_str())])?,
                };
                let names = config.deployments.iter().map(|(n, _)| n.as_str());
                Some(Placed {
                    router: Arc::new(PlacementRouter::new(names, start)?),
                    clients,
                })
            }
        };
        Ok(Spread { remotes, placed })
    }
}

/// The API's routes before their layers: the items get the HTTP cache too.
struct Api {
    /// The server span: outermost on every route.
    trace: TraceLayer,
    complete: Router<Arc<AppState>>,
    items: Router<Arc<AppState>>,
    pages: HttpCacheLayer,
    /// The cache under `pages`.
    page_cache: TieredCache<String, StoredResponse>,
    state: Arc<AppState>,
}

fn with_layers<St>(api: Api, limiter: St, directory: &Directory) -> Router
where
    St: cog_ratelimit::store::Store + Clone,
{
    forget_removed(
        directory,
        api.state.completions.clone(),
        api.page_cache.clone(),
        limiter.clone(),
    );
    // One `Router::layer` per route, with every layer it needs: each call
    // boxes the routes once more, and every request clones each box on its
    // way (an allocation apiece). Outermost first: the server span,
    // authentication, the limit, the plugins, then (items only) the HTTP
    // cache — over `/v1/complete` it would add its own `Cache-Status` to the
    // completion cache's. The two stacks share their state (directory,
    // limiter store, the trace layer's instruments).
    let stack = tower::ServiceBuilder::new()
        .layer(api.trace.clone())
        .layer(AuthenticateLayer::new(directory.clone()))
        .layer(
            RateLimitLayer::new(limiter, Directory::tenant_key(), directory.clone())
                .cost_with(Directory::request_cost()),
        )
        .layer(PluginLayer::new(directory.clone()));
    api.complete
        .layer(stack.clone())
        .merge(
            // The plugins rewrite the cache's bodies as they are: a
            // `CacheBody` is built from bytes, no boxing per response.
            api.items.layer(stack.layer(api.pages)),
        )
        .with_state(api.state)
}

/// Drops what the demo keeps for each tenant the control plane removes —
/// its cached completions and pages (from this instance's L1 and from
/// Redis; every instance runs this for itself) and its limiter counters — so that a tenant
/// created again under the same id starts empty, not with the old one's
/// answers and spent quota.
fn forget_removed<St>(
    directory: &Directory,
    completions: TieredCache<String, String>,
    pages: TieredCache<String, StoredResponse>,
    limiter: St,
) where
    St: cog_ratelimit::store::Store + Clone,
{
    directory.on_removed(move |gone: Vec<Arc<TenantContext>>| {
        let (completions, pages, limiter) = (completions.clone(), pages.clone(), limiter.clone());
        async move {
            // One walk of Redis's keys per cache for them all (a prune may
            // remove thousands), each instance its own L1; what Redis
            // refuses, the caches retry.
            let ids = || gone.iter().map(|t| t.id.clone());
            completions.forget_tenants(ids()).await;
            pages.forget_tenants(ids()).await;
            for tenant in &gone {
                if let Some(quota) = &tenant.quota {
                    reset_limits(&limiter, &tenant.id, quota).await;
                }
            }
        }
    });
}

/// Longest wait between two tries of a reset Redis refused.
const RESET_RETRY_MAX: Duration = Duration::from_secs(5);

/// Resets `tenant`'s counters of `quota` on `limiter`. What Redis refuses
/// (gone, out of memory, an ACL) is tried again in the background — every
/// 100 ms at first, then at most every [`RESET_RETRY_MAX`] — until it lands
/// or the quota's longest window has passed twice over (the counters have
/// expired by then). Until it lands, a tenant created again under the
/// same id counts on from the old one's counters; a reset landing after
/// it started spending gives it back at most what it spent.
async fn reset_limits<St>(limiter: &St, tenant: &Arc<str>, quota: &cog_ratelimit::Quota)
where
    St: cog_ratelimit::store::Store + Clone,
{
    let Err(e) = limiter.reset(tenant, quota).await else {
        return;
    };
    tracing::warn!(
        tenant = %tenant,
        error = &e as &dyn std::error::Error,
        "a removed tenant's limiter counters could not be reset; retrying"
    );
    let longest = quota.limits().iter().map(|l| l.policy().1).max();
    let until = tokio::time::Instant::now() + Duration::from_secs(longest.unwrap_or(0) * 2);
    let (limiter, tenant, quota) = (limiter.clone(), tenant.clone(), quota.clone());
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(100);
        loop {
            tokio::time::sleep(wait).await;
            match limiter.reset(&tenant, &quota).await {
                Ok(()) => {
                    tracing::info!(tenant = %tenant, "a removed tenant's limiter counters reset");
                    return;
                }
                Err(e) if tokio::time::Instant::now() + wait >= until => {
                    tracing::warn!(
                        tenant = %tenant,
                        error = &e as &dyn std::error::Error,
                        "a removed tenant's limiter counters were never reset; their windows have ended"
                    );
                    return;
                }
                Err(_) => wait = (wait * 2).min(RESET_RETRY_MAX),
            }
        }
    });
}

#[derive(serde::Deserialize)]
struct CompleteRequest {
    prompt: String,
}

/// Read-through over the slow model, cached per tenant.
async fn complete(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Arc<TenantContext>>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(req) = serde_json::from_slice::<CompleteRequest>(&body) else {
        return (StatusCode::BAD_REQUEST, "expected {\"prompt\": \"...\"}\n").into_response();
    };
    let missed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (counters, upstream, prompt, flag) = (
        state.counters.clone(),
        state.upstream,
        req.prompt.clone(),
        missed.clone(),
    );
    let answer = state
        .completions
        .tenant(&tenant.id)
        .get_or_load(&req.prompt, move || async move {
            flag.store(true, Ordering::Relaxed);
            counters.model_calls.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(upstream).await;
            Ok::<_, std::convert::Infallible>(format!("an answer to: {prompt}"))
        })
        .await;
    match answer {
        Ok(answer) => {
            let status = if missed.load(Ordering::Relaxed) {
                "cog; fwd=miss; stored"
            } else {
                "cog; hit"
            };
            let mut res = axum::Json(serde_json::json!({ "answer": answer })).into_response();
            res.headers_mut()
                .insert("cache-status", HeaderValue::from_static(status));
            res
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("{e}\n")).into_response(),
    }
}

/// A simulated database read; cacheable for 30 s.
async fn item(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    state
        .counters
        .database_reads
        .fetch_add(1, Ordering::Relaxed);
    if !state.database.is_zero() {
        tokio::time::sleep(state.database).await;
    }
    let mut res =
        axum::Json(serde_json::json!({ "id": id, "name": format!("item {id}") })).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=30"),
    );
    res
}

/// The same item handler with no layers at all (`stack/bare`).
pub fn bare() -> Router {
    let state = Arc::new(AppState {
        completions: TieredCache::<String, String>::builder()
            .build()
            .expect("an L1-only cache"),
        counters: Arc::default(),
        upstream: Duration::ZERO,
        database: Duration::ZERO,
    });
    Router::new()
        .route("/v1/items/{id}", get(item))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    /// A limiter whose every reset fails, counting the tries.
    #[derive(Clone, Default)]
    struct Refusing(Arc<AtomicU64>);

    impl cog_ratelimit::store::Store for Refusing {
        fn check(
            &self,
            _: &str,
            _: &cog_ratelimit::Quota,
            _: u64,
        ) -> impl Future<Output = Result<cog_ratelimit::Decision, cog_ratelimit::store::StoreError>> + Send
        {
            std::future::ready(Err(cog_ratelimit::store::StoreError::Timeout(
                Duration::ZERO,
            )))
        }

        fn inspect(
            &self,
            _: &str,
            _: &cog_ratelimit::Quota,
        ) -> impl Future<Output = Result<cog_ratelimit::Decision, cog_ratelimit::store::StoreError>> + Send
        {
            std::future::ready(Err(cog_ratelimit::store::StoreError::Timeout(
                Duration::ZERO,
            )))
        }

        fn reset(
            &self,
            _: &str,
            _: &cog_ratelimit::Quota,
        ) -> impl Future<Output = Result<(), cog_ratelimit::store::StoreError>> + Send {
            self.0.fetch_add(1, Ordering::Relaxed);
            std::future::ready(Err(cog_ratelimit::store::StoreError::Timeout(
                Duration::ZERO,
            )))
        }

        fn release(&self, _: cog_ratelimit::store::Lease) {}
    }

    /// A reset the limiter refuses is tried again in the background: after
    /// 100 ms, doubling to every 5 s, until the quota's longest window (a
    /// minute here) has passed twice over — then never again.
    #[tokio::test(start_paused = true)]
    async fn a_refused_reset_is_retried_until_the_windows_end() {
        let limiter = Refusing::default();
        let tries = || limiter.0.load(Ordering::Relaxed);
        let quota = cog_ratelimit::Quota::single(cog_ratelimit::Limit::sliding_window(
            10,
            Duration::from_secs(60),
        ))
        .unwrap();
        reset_limits(&limiter, &Arc::from("acme"), &quota).await;
        assert_eq!(tries(), 1, "the hook's own try");
        // At 0.1, 0.3, 0.7, 1.5, 3.1 and 6.3 s…
        tokio::time::sleep(Duration::from_millis(6_350)).await;
        assert_eq!(tries(), 7);
        // … then every 5 s: 11.3, 16.3 …
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(tries(), 9);
        // … until the last that ends within 120 s: 116.3.
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(tries(), 29);
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(tries(), 29, "given up");
    }

    #[test]
    fn settings_are_read_from_the_environment() {
        let c = from(&[
            ("COG_STORE", "state.json"),
            ("COG_DEMO_UPSTREAM_MS", "0"),
            ("COG_DEMO_INSTANCES", "3"),
            ("COG_RATELIMIT_LEASE_MS", "50"),
            ("COG_REGION", "eu"),
            ("COG_REGIONS", "eu=redis://a, us = redis://b,"),
            ("COG_REGION_SYNC_MS", "250"),
            ("COG_DEPLOYMENTS", "main=redis://m"),
            ("COG_DRAIN_MS", "1500"),
        ])
        .unwrap();
        assert_eq!(c.store, "file:state.json");
        assert_eq!(c.upstream, Duration::ZERO);
        assert_eq!(c.instances, 3);
        assert_eq!(c.lease, Some(Duration::from_millis(50)));
        assert_eq!(c.region.as_deref(), Some("eu"));
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(n, u)| ((*n).to_owned(), (*u).to_owned()))
                .collect()
        };
        assert_eq!(
            c.regions,
            pairs(&[("eu", "redis://a"), ("us", "redis://b")])
        );
        assert_eq!(c.region_sync, Duration::from_millis(250));
        assert_eq!(c.deployments, pairs(&[("main", "redis://m")]));
        assert_eq!(c.drain, Duration::from_millis(1500));

        // Unset or empty: the defaults.
        let d = from(&[("COG_DEMO_INSTANCES", ""), ("COG_REGIONS", "")]).unwrap();
        let default = Config::default();
        assert_eq!(d.store, default.store);
        assert_eq!(d.upstream, Duration::from_millis(200));
        assert_eq!(d.instances, 2);
        assert_eq!(d.lease, None);
        assert_eq!(d.region_sync, Duration::from_secs(1));
        assert_eq!(d.drain, Duration::from_secs(20));
        assert!(d.regions.is_empty() && d.deployments.is_empty());
    }

    /// A setting that does not read stops the demo, naming it: before, a
    /// unit (`COG_RATELIMIT_LEASE_MS=50ms`) or a region without its URL
    /// was dropped silently, and the demo ran exact, or in one region.
    #[test]
    fn a_setting_that_does_not_read_is_refused() {
        for (var, value) in [
            ("COG_DEMO_UPSTREAM_MS", "200ms"),
            ("COG_DEMO_INSTANCES", "0"),
            ("COG_DEMO_INSTANCES", "two"),
            ("COG_RATELIMIT_LEASE_MS", "50ms"),
            ("COG_RATELIMIT_LEASE_MS", "0"),
            ("COG_REGION_SYNC_MS", "1s"),
            ("COG_REGION_SYNC_MS", "0"),
            ("COG_REGIONS", "eu=redis://a,us"),
            ("COG_REGIONS", "eu="),
            ("COG_DEPLOYMENTS", "=redis://m"),
            ("COG_DRAIN_MS", "2s"),
        ] {
            let e = from(&[(var, value)]).unwrap_err();
            assert_eq!((e.var, e.value.as_str()), (var, value));
            assert!(e.to_string().starts_with(&format!("{var}=")), "{e}");
        }
    }
}
