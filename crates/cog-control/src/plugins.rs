//! Loading each tenant's plugins for the directory (feature `sandbox`).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use cog_sandbox::{Limits, Plugin, Resolved, Runtime};
use parking_lot::Mutex;

use crate::model::{PluginLimits, State};
use crate::store::Store;

/// Turns plugin records into loaded plugins, keeping the bytes it fetched
/// (the runtime keeps the compiled modules).
pub(crate) struct Loader {
    runtime: Runtime,
    blobs: Mutex<HashMap<String, Bytes>>,
}

/// The sandbox limits for a plugin: the defaults, under the plan's
/// plugin limits, under the plugin's own.
pub fn sandbox_limits(plan: Option<&PluginLimits>, own: Option<&PluginLimits>) -> Limits {
    let mut limits = Limits::default();
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
    }
    limits
}

impl Loader {
    pub(crate) fn new(runtime: Runtime) -> Self {
        Loader {
            runtime,
            blobs: Mutex::default(),
        }
    }

    async fn blob(&self, store: &dyn Store, digest: &str) -> Option<Bytes> {
        if let Some(b) = self.blobs.lock().get(digest) {
            return Some(b.clone());
        }
        match store.get_blob(digest).await {
            Ok(Some(b)) => {
                self.blobs.lock().insert(digest.to_owned(), b.clone());
                Some(b)
            }
            Ok(None) => {
                tracing::error!(target: "cog_control", %digest, "plugin bytes missing from the store");
                None
            }
            Err(e) => {
                tracing::error!(target: "cog_control", %digest, error = %e, "reading plugin bytes failed");
                None
            }
        }
    }

    /// Every tenant's plugins.
    pub(crate) async fn resolve_all(
        &self,
        store: &dyn Store,
        state: &State,
    ) -> HashMap<Arc<str>, Resolved> {
        let mut loaded: HashMap<(String, String), Option<Plugin>> = HashMap::new();
        let mut out = HashMap::new();
        for (tenant_id, tenant) in &state.spec.tenants {
            let plan = state.spec.plans.get(&tenant.plan);
            let mut plugins = Vec::new();
            for (name, p) in &state.spec.plugins {
                let attached =
                    p.attach.tenants.contains(tenant_id) || p.attach.plans.contains(&tenant.plan);
                if !p.enabled || !attached {
                    continue;
                }
                let limits = sandbox_limits(
                    plan.and_then(|p| p.plugin_limits.as_ref()),
                    p.limits.as_ref(),
                );
                let slot = (name.clone(), format!("{limits:?}"));
                if !loaded.contains_key(&slot) {
                    let plugin = match self.blob(store, &p.digest).await {
                        Some(bytes) => {
                            let runtime = self.runtime.clone();
                            let name = name.clone();
                            let config = p.config.clone();
                            tokio::task::spawn_blocking(move || {
                                runtime
                                    .load(name.as_str(), &bytes, limits)
                                    .map(|pl| pl.with_config(config.into_bytes()))
                            })
                            .await
                            .ok()
                            .and_then(|r| {
                                r.map_err(|e| {
                                    tracing::error!(target: "cog_control", plugin = %slot.0, error = %e, "plugin failed to load; left out");
                                })
                                .ok()
                            })
                        }
                        None => None,
                    };
                    loaded.insert(slot.clone(), plugin);
                }
                if let Some(Some(plugin)) = loaded.get(&slot) {
                    plugins.push(plugin.clone());
                }
            }
            if !plugins.is_empty() {
                let tenant: Arc<str> = tenant_id.as_str().into();
                out.insert(
                    tenant.clone(),
                    Resolved {
                        tenant,
                        plugins: plugins.into(),
                    },
                );
            }
        }
        out
    }
}
