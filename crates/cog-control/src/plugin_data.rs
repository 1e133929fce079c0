//! The services' plugin data, from the control plane: cleared for deleted
//! tenants and plugins, copied ahead for a moved partition.

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

/// Every plugin's scope of each tenant of partition `in_partition`.
pub(crate) fn of_partition(state: &State, in_partition: u8) -> Vec<KvScope> {
    let tenants = state
        .spec
        .tenants
        .keys()
        .filter(|t| cog_core::placement::partition(t) == in_partition);
    let mut scopes = Vec::new();
    for t in tenants {
        scopes.extend(state.spec.plugins.keys().map(|p| KvScope {
            tenant: t.as_str().into(),
            plugin: p.as_str().into(),
        }));
    }
    scopes
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
        let held = blocking(move || kv.clear_all(&scopes), "nothing was deleted").await?;
        tracing::info!(target: "cog_control", scopes = count, held, "plugin data cleared");
        Ok(())
    }

    /// Copies `scopes` to `to` after their partition moved there from
    /// `from` at placement revision `revision`, on a blocking thread.
    ///
    /// # Errors
    /// [`ControlError::PluginData`] at the first scope the store could not
    /// copy.
    pub(crate) async fn copy_moved(
        &self,
        from: String,
        to: String,
        revision: u64,
        scopes: Vec<KvScope>,
    ) -> Result<(), ControlError> {
        if scopes.is_empty() {
            return Ok(());
        }
        let kv = self.0.clone();
        let count = scopes.len();
        blocking(
            move || kv.copy_moved(&from, &to, revision, &scopes),
            "the partition moved; its plugin data was not copied ahead (each scope still is, on its first use within the copy window)",
        )
        .await?;
        tracing::info!(target: "cog_control", scopes = count, "plugin data copied after a move");
        Ok(())
    }
}

/// Runs `f` on a blocking thread (the store's calls block); its failure
/// is [`ControlError::PluginData`] with `outcome`.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, cog_sandbox::KvError> + Send + 'static,
    outcome: &str,
) -> Result<T, ControlError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| ControlError::PluginData {
        outcome: outcome.to_owned(),
        source,
    };
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| failed(e.into()))?
        .map_err(|e| failed(e.into()))
}
