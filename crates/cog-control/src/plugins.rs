//! Loading each tenant's plugins for the directory (feature `sandbox`).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use cog_sandbox::layer::Resolved;
use cog_sandbox::{Limits, OnError, Plugin, Runtime};
use parking_lot::Mutex;

use crate::model::{OnFailure, PluginLang, PluginLimits, State};
use crate::store::Store;

/// Turns plugin records into loaded plugins, keeping the bytes of the
/// plugins the state names (the runtime keeps the compiled modules), and
/// what the last state's plugins were loaded from and given to.
pub(crate) struct Loader {
    runtime: Runtime,
    blobs: Mutex<HashMap<String, Bytes>>,
    kept: tokio::sync::Mutex<Kept>,
}

/// What a loaded plugin was made from: another plugin when any of it
/// changes.
#[derive(PartialEq, Eq, Hash)]
struct Recipe {
    name: String,
    digest: String,
    lang: PluginLang,
    limits: Limits,
    config: String,
    on_error: OnFailure,
}

/// The plugins of the last state resolved.
#[derive(Default)]
struct Kept {
    /// The state's revision.
    revision: u64,
    /// Each plugin loaded, by what it was loaded from (with whether it
    /// could be: only those are kept past their state).
    loaded: HashMap<Arc<Recipe>, (Plugin, bool)>,
    /// Each tenant's copies of them (instances of their own).
    copies: HashMap<Arc<str>, Vec<(Arc<Recipe>, Plugin)>>,
}

/// The sandbox limits for a plugin: the defaults, under the plan's
/// plugin limits, under the plugin's own.
pub fn sandbox_limits(plan: Option<&PluginLimits>, own: Option<&PluginLimits>) -> Limits {
    sandbox_limits_for(PluginLang::Wasm, plan, own)
}

/// [`sandbox_limits`] for a plugin in `lang`: a Python plugin starts from
/// [`Limits::python`] (an interpreter needs more room than a module).
pub fn sandbox_limits_for(
    lang: PluginLang,
    plan: Option<&PluginLimits>,
    own: Option<&PluginLimits>,
) -> Limits {
    let mut limits = match lang {
        PluginLang::Wasm => Limits::default(),
        PluginLang::Python => Limits::python(),
    };
    for l in [plan, own].into_iter().flatten() {
        if let Some(f) = l.fuel {
            limits = limits.fuel(f);
        }
        if let Some(m) = l.memory_bytes {
            limits = limits.memory_bytes(m);
        }
        if let Some(d) = l.deadline {
            limits = limits.deadline(d.0);
        }
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        if let Some(n) = l.kv_entries {
            limits = limits.max_kv_entries(size(n));
        }
        if let Some(b) = l.kv_bytes {
            limits = limits.max_kv_bytes(size(b));
        }
    }
    limits
}

impl Loader {
    pub(crate) fn new(runtime: Runtime) -> Self {
        Loader {
            runtime,
            blobs: Mutex::default(),
            kept: tokio::sync::Mutex::default(),
        }
    }

    /// The bytes of `digest`, or why there are none.
    async fn blob(&self, store: &dyn Store, digest: &str) -> Result<Bytes, String> {
        if let Some(b) = self.blobs.lock().get(digest) {
            return Ok(b.clone());
        }
        match store.get_blob(digest).await {
            Ok(Some(b)) => {
                self.blobs.lock().insert(digest.to_owned(), b.clone());
                Ok(b)
            }
            Ok(None) => Err(format!("bytes {digest} missing from the store")),
            Err(e) => Err(format!("reading bytes {digest}: {e}")),
        }
    }

    /// Bytes held for plugins (only those the last state named).
    #[cfg(test)]
    pub(crate) fn blobs_held(&self) -> usize {
        self.blobs.lock().len()
    }

    /// Every tenant's plugins. What the last state's plugins were loaded
    /// from and what each tenant was given is kept: a plugin loaded from
    /// the same bytes, language, limits, configuration and policy is not
    /// loaded again, and a tenant the audit log does not name as deleted or
    /// created since keeps its copy of it — and with it the instances
    /// (Python interpreters) warm from its earlier calls. A tenant created
    /// again, a plugin changed, or a state the kept one cannot be traced
    /// to (a store that went back — `went_back` —, audit entries trimmed
    /// since) starts afresh. A state older than the one kept that is not
    /// a store going back is a slower refresh finishing after a newer one:
    /// it is resolved with copies of its own, and what is kept stays.
    pub(crate) async fn resolve_all(
        &self,
        store: &dyn Store,
        state: &State,
        went_back: bool,
    ) -> HashMap<Arc<str>, Resolved> {
        // One state at a time, so each finds the one before it kept.
        let mut guard = self.kept.lock().await;
        let mut stale = Kept {
            loaded: guard.loaded.clone(),
            ..Kept::default()
        };
        let kept = match state.revision < guard.revision && !went_back {
            true => &mut stale,
            false => &mut *guard,
        };
        let (renewed, complete) = crate::directory::renewed(state, kept.revision);
        if went_back || !complete || state.revision < kept.revision {
            kept.copies.clear();
        }
        let mut old = std::mem::take(kept);
        let mut now = Kept {
            revision: state.revision,
            ..Kept::default()
        };
        let mut out = HashMap::new();
        for (tenant_id, tenant) in &state.spec.tenants {
            let plan = state.spec.plans.get(&tenant.plan);
            let mut mine = match renewed.contains(tenant_id.as_str()) {
                true => Vec::new(),
                false => old.copies.remove(tenant_id.as_str()).unwrap_or_default(),
            };
            let mut copies = Vec::new();
            let mut plugins = Vec::new();
            for (name, p) in &state.spec.plugins {
                let attached =
                    p.attach.tenants.contains(tenant_id) || p.attach.plans.contains(&tenant.plan);
                if !p.enabled || !attached {
                    continue;
                }
                let recipe = Recipe {
                    name: name.clone(),
                    digest: p.digest.clone(),
                    lang: p.lang,
                    limits: sandbox_limits_for(
                        p.lang,
                        plan.and_then(|p| p.plugin_limits.as_ref()),
                        p.limits.as_ref(),
                    ),
                    config: p.config.clone(),
                    on_error: p.on_error,
                };
                let recipe = match now.loaded.get_key_value(&recipe) {
                    Some((known, _)) => known.clone(),
                    None => {
                        let (recipe, loaded) = match old.loaded.remove_entry(&recipe) {
                            Some(found) => found,
                            None => {
                                let loaded =
                                    self.load_or_stand_in(store, name, p, recipe.limits).await;
                                (Arc::new(recipe), loaded)
                            }
                        };
                        now.loaded.insert(recipe.clone(), loaded);
                        recipe
                    }
                };
                let (plugin, ready) = &now.loaded[&recipe];
                let plugin = if *ready {
                    let copy = mine
                        .iter()
                        .position(|(r, _)| Arc::ptr_eq(r, &recipe))
                        .map(|at| mine.swap_remove(at).1)
                        .unwrap_or_else(|| plugin.clone().with_own_instances());
                    copies.push((recipe, copy.clone()));
                    copy
                } else {
                    // Standing in for one that failed to load: no
                    // instances to keep apart.
                    plugin.clone()
                };
                plugins.push(plugin);
            }
            if !plugins.is_empty() {
                let tenant: Arc<str> = tenant_id.as_str().into();
                now.copies.insert(tenant.clone(), copies);
                out.insert(
                    tenant.clone(),
                    Resolved {
                        tenant,
                        plugins: plugins.into(),
                    },
                );
            }
        }
        // One that failed to load is tried again with the next state.
        now.loaded.retain(|_, (_, ready)| *ready);
        *kept = now;
        // Keep only the bytes this state names: replaced and removed
        // plugins' bytes go.
        let named: std::collections::HashSet<&str> = state
            .spec
            .plugins
            .values()
            .map(|p| p.digest.as_str())
            .collect();
        self.blobs.lock().retain(|d, _| named.contains(d.as_str()));
        out
    }

    /// Fetches and loads one plugin with its policy; one that cannot be
    /// loaded is never silently left out: a stand-in takes its place in the
    /// chain, and its failure policy decides (`false`: a stand-in).
    async fn load_or_stand_in(
        &self,
        store: &dyn Store,
        name: &str,
        p: &crate::PluginSpec,
        limits: Limits,
    ) -> (Plugin, bool) {
        let (plugin, ready) = match self.load(store, name, p, limits).await {
            Ok(plugin) => (plugin, true),
            Err(reason) => {
                tracing::error!(
                    target: "cog_control",
                    plugin = %name,
                    policy = ?p.on_error,
                    error = %reason,
                    "plugin failed to load; its failure policy applies to its requests"
                );
                load_failures().add(
                    1,
                    &[opentelemetry::KeyValue::new("plugin", name.to_owned())],
                );
                (Plugin::unavailable(name, reason), false)
            }
        };
        let policy = match p.on_error {
            OnFailure::Skip => OnError::Skip,
            OnFailure::Fail => OnError::Fail,
        };
        (plugin.on_error(policy), ready)
    }

    /// Fetches and loads one plugin.
    async fn load(
        &self,
        store: &dyn Store,
        name: &str,
        p: &crate::PluginSpec,
        limits: Limits,
    ) -> Result<Plugin, String> {
        let bytes = self.blob(store, &p.digest).await?;
        let runtime = self.runtime.clone();
        let (name, config, lang) = (name.to_owned(), p.config.clone(), p.lang);
        tokio::task::spawn_blocking(move || {
            match lang {
                PluginLang::Wasm => runtime.load(name.as_str(), &bytes, limits),
                PluginLang::Python => runtime.load_python(name.as_str(), &bytes, limits),
            }
            .map(|pl| pl.with_config(config.into_bytes()))
        })
        .await
        .map_err(|e| format!("loading panicked: {e}"))?
        .map_err(|e| e.to_string())
    }
}

/// `cog.control.plugin_load_failures`: plugins that could not be loaded,
/// by plugin.
fn load_failures() -> &'static opentelemetry::metrics::Counter<u64> {
    static FAILURES: std::sync::OnceLock<opentelemetry::metrics::Counter<u64>> =
        std::sync::OnceLock::new();
    FAILURES.get_or_init(|| {
        opentelemetry::global::meter("cog-control")
            .u64_counter("cog.control.plugin_load_failures")
            .with_description("Plugins that could not be loaded (their failure policy applies)")
            .with_unit("{plugin}")
            .build()
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::Control;
    use crate::model::{Attach, Plan, PluginSpec, Tenant};
    use crate::store::FileStore;

    fn spec() -> PluginSpec {
        PluginSpec {
            digest: String::new(),
            lang: PluginLang::Wasm,
            version: String::new(),
            attach: Attach {
                tenants: vec!["acme".into()],
                plans: vec![],
            },
            config: String::new(),
            limits: None,
            enabled: true,
            file: None,
            on_error: OnFailure::Skip,
        }
    }

    /// Every plugin limit reaches the sandbox: the plan's, the plugin's own
    /// over them, the defaults for the rest.
    #[test]
    fn plan_and_own_limits_reach_the_sandbox() {
        let plan = PluginLimits {
            fuel: Some(7),
            memory_bytes: Some(1 << 20),
            deadline: Some(crate::Window(std::time::Duration::from_millis(9))),
            kv_entries: Some(30),
            kv_bytes: Some(4096),
        };
        let l = sandbox_limits(Some(&plan), None);
        assert_eq!(
            (l.fuel, l.memory_bytes, l.deadline.as_millis()),
            (7, 1 << 20, 9)
        );
        assert_eq!((l.max_kv_entries, l.max_kv_bytes), (30, 4096));
        let own = PluginLimits {
            kv_bytes: Some(8192),
            ..PluginLimits::default()
        };
        let l = sandbox_limits(Some(&plan), Some(&own));
        assert_eq!((l.fuel, l.max_kv_entries, l.max_kv_bytes), (7, 30, 8192));
        let d = Limits::default();
        let l = sandbox_limits(None, Some(&own));
        assert_eq!(
            (l.max_kv_entries, l.max_kv_bytes, l.fuel),
            (d.max_kv_entries, 8192, d.fuel)
        );
    }

    /// A tenant's copy of a plugin — its warm instances — is kept only
    /// while each state can be traced to the one before: the same state
    /// again keeps it; a store that went back, or a write the audit log
    /// does not name, drops it; an older state from a slower refresh gets
    /// copies of its own and leaves the kept ones be.
    #[tokio::test]
    async fn kept_copies_follow_the_states_lineage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileStore::new(dir.path().join("s.json")));
        let c = Control::new(store.clone());
        c.create_plan("free", Plan::default()).await.unwrap();
        c.create_tenant("acme", Tenant::new("free")).await.unwrap();
        let wasm = wat::parse_str(include_str!("../testdata/counting.wat")).unwrap();
        c.install_plugin("counting", &wasm, spec()).await.unwrap();
        let loader = Loader::new(Runtime::new());
        // The calls acme's instance made before (0: a fresh one).
        let calls = |state: State, went_back: bool| {
            let loader = &loader;
            let store = store.clone();
            async move {
                let resolved = loader.resolve_all(&*store, &state, went_back).await;
                let mut ex = cog_sandbox::Exchange::new(
                    http::Method::GET,
                    http::Uri::from_static("/"),
                    "acme",
                );
                resolved["acme"].plugins[0]
                    .call(cog_sandbox::Phase::Request, &mut ex)
                    .unwrap();
                ex.request_headers["x-calls"].to_str().unwrap().to_owned()
            }
        };
        let state = c.state().await.unwrap();
        assert_eq!(calls(state.clone(), false).await, "0");
        assert_eq!(
            calls(state.clone(), false).await,
            "1",
            "the same state again"
        );
        let mut older = state.clone();
        older.revision -= 1;
        assert_eq!(calls(older.clone(), false).await, "0", "a slower refresh");
        assert_eq!(calls(state.clone(), false).await, "2", "kept all along");
        assert_eq!(
            calls(state.clone(), true).await,
            "0",
            "the same revision from another commit"
        );
        assert_eq!(calls(older, true).await, "0", "a store that went back");
        let mut unnamed = state.clone();
        unnamed.revision += 2;
        assert_eq!(calls(state, false).await, "1");
        assert_eq!(
            calls(unnamed, false).await,
            "0",
            "a write the audit log lacks"
        );
    }

    /// Bytes of replaced and removed plugins are not kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_bytes_the_state_names_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileStore::new(dir.path().join("s.json")));
        let c = Control::new(store.clone());
        c.create_plan("free", Plan::default()).await.unwrap();
        c.create_tenant("acme", Tenant::new("free")).await.unwrap();
        let loader = Loader::new(Runtime::new());
        for wasm in [
            &include_bytes!("../../../examples/plugins/dist/headers.wasm")[..],
            &include_bytes!("../../../examples/plugins/dist/redact.wasm")[..],
        ] {
            c.install_plugin("p", wasm, spec()).await.unwrap();
            let resolved = loader
                .resolve_all(&*store, &c.state().await.unwrap(), false)
                .await;
            assert_eq!(resolved["acme"].plugins.len(), 1);
            assert_eq!(loader.blobs_held(), 1, "the replaced plugin's bytes went");
        }
        c.delete_plugin("p").await.unwrap();
        loader
            .resolve_all(&*store, &c.state().await.unwrap(), false)
            .await;
        assert_eq!(loader.blobs_held(), 0);
    }
}
