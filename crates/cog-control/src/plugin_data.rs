//! Clearing the plugin data of deleted tenants and plugins.

use std::collections::BTreeSet;
use std::sync::Arc;

use cog_sandbox::{KvScope, KvStore};

use crate::error::ControlError;
use crate::model::State;

/// Where the services' plugins keep their data
/// ([`Control::plugin_data`](crate::Control::plugin_data)).
#[derive(Clone)]
pub(crate) struct PluginData(pub(crate) Arc<dyn KvStore>);

impl std::fmt::Debug for PluginData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginData")
    }
}

/// The tenants and plugins a state held before a change.
#[derive(Debug)]
pub(crate) struct Names {
    tenants: BTreeSet<String>,
    plugins: BTreeSet<String>,
}

impl Names {
    pub(crate) fn of(state: &State) -> Self {
        Names {
            tenants: state.spec.tenants.keys().cloned().collect(),
            plugins: state.spec.plugins.keys().cloned().collect(),
        }
    }

    /// The scopes a change to `after` leaves without an owner: each
    /// plugin's for a tenant gone, each tenant's for a plugin gone.
    pub(crate) fn gone(&self, after: &State) -> Vec<KvScope> {
        let tenants = self
            .tenants
            .iter()
            .filter(|t| !after.spec.tenants.contains_key(*t));
        let plugins = self
            .plugins
            .iter()
            .filter(|p| !after.spec.plugins.contains_key(*p));
        let mut scopes = BTreeSet::new();
        for t in tenants {
            scopes.extend(self.plugins.iter().map(|p| (t, p)));
        }
        for p in plugins {
            scopes.extend(self.tenants.iter().map(|t| (t, p)));
        }
        scopes
            .into_iter()
            .map(|(t, p)| KvScope {
                tenant: t.as_str().into(),
                plugin: p.as_str().into(),
            })
            .collect()
    }
}

impl PluginData {
    /// Clears `scopes`, on a blocking thread (the store's calls block).
    ///
    /// # Errors
    /// [`ControlError::PluginData`] at the first scope the store could not
    /// clear.
    pub(crate) async fn clear(&self, scopes: Vec<KvScope>) -> Result<(), ControlError> {
        if scopes.is_empty() {
            return Ok(());
        }
        let kv = self.0.clone();
        let count = scopes.len();
        let held = tokio::task::spawn_blocking(move || kv.clear_all(&scopes))
            .await
            .map_err(|e| ControlError::PluginData { source: e.into() })?
            .map_err(|e| ControlError::PluginData { source: e.into() })?;
        tracing::info!(target: "cog_control", scopes = count, held, "plugin data cleared");
        Ok(())
    }
}
