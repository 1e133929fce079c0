//! What the verbs run against: the store itself (`--store`), or a running
//! admin API (`--server`). Both answer the same calls with the same
//! results and errors, so a verb is written once.

use std::collections::BTreeMap;
use std::time::Duration;

use cog_control::{
    AuditEntry, Change, Control, PlacementTable, Plan, PluginSpec, Spec, State, Status, Tenant,
};

use crate::exit::{Exit, Result};
use crate::remote::Remote;

/// The store, or the API in front of one.
#[derive(Debug)]
pub(crate) enum Backend {
    /// `--store`: read and written directly, audited as `cli`.
    Store(Control),
    /// `--server`: through the admin API, audited as the token.
    Server(Box<Remote>),
}

impl Backend {
    /// The store itself, for the verbs that only work there (admin tokens,
    /// `serve`).
    pub(crate) fn control(&self, verb: &str) -> Result<&Control> {
        match self {
            Backend::Store(c) => Ok(c),
            Backend::Server(_) => Err(Exit::Usage(format!(
                "`cog {verb}` works on the store itself: pass --store, not --server"
            ))),
        }
    }

    /// Everything the store holds that the verbs show.
    pub(crate) async fn state(&self) -> Result<State> {
        match self {
            Backend::Store(c) => Ok(c.state().await?),
            Backend::Server(r) => r.state().await,
        }
    }

    /// The audit log, oldest first.
    pub(crate) async fn audit(&self) -> Result<Vec<AuditEntry>> {
        match self {
            Backend::Store(c) => Ok(c.state().await?.audit),
            Backend::Server(r) => r.audit().await,
        }
    }

    pub(crate) async fn placement(&self) -> Result<Option<PlacementTable>> {
        match self {
            Backend::Store(c) => Ok(c.placement().await?),
            Backend::Server(r) => r.placement().await,
        }
    }

    pub(crate) async fn add_deployment(&self, name: &str) -> Result<PlacementTable> {
        match self {
            Backend::Store(c) => Ok(c.add_deployment(name).await?),
            Backend::Server(r) => r.add_deployment(name).await,
        }
    }

    pub(crate) async fn move_partition(&self, partition: u8, to: &str) -> Result<PlacementTable> {
        match self {
            Backend::Store(c) => Ok(c.move_partition(partition, to).await?),
            Backend::Server(r) => r.move_partition(partition, to).await,
        }
    }

    pub(crate) async fn create_plan(&self, name: &str, plan: Plan) -> Result {
        match self {
            Backend::Store(c) => Ok(c.create_plan(name, plan).await?),
            Backend::Server(r) => r.create_plan(name, &plan).await,
        }
    }

    pub(crate) async fn update_plan(&self, name: &str, edit: impl Fn(&mut Plan)) -> Result<Plan> {
        match self {
            Backend::Store(c) => Ok(c.update_plan(name, edit).await?),
            Backend::Server(r) => r.update_plan(name, edit).await,
        }
    }

    pub(crate) async fn delete_plan(&self, name: &str) -> Result {
        match self {
            Backend::Store(c) => Ok(c.delete_plan(name).await?),
            Backend::Server(r) => r.delete_plan(name).await,
        }
    }

    pub(crate) async fn create_tenant(&self, id: &str, tenant: Tenant) -> Result {
        match self {
            Backend::Store(c) => Ok(c.create_tenant(id, tenant).await?),
            Backend::Server(r) => r.create_tenant(id, &tenant).await,
        }
    }

    pub(crate) async fn update_tenant(
        &self,
        id: &str,
        edit: impl Fn(&mut Tenant),
    ) -> Result<Tenant> {
        match self {
            Backend::Store(c) => Ok(c.update_tenant(id, edit).await?),
            Backend::Server(r) => r.update_tenant(id, edit).await,
        }
    }

    pub(crate) async fn set_status(&self, id: &str, status: Status) -> Result<Tenant> {
        match self {
            Backend::Store(c) => Ok(c.set_status(id, status).await?),
            Backend::Server(r) => r.set_status(id, status).await,
        }
    }

    pub(crate) async fn delete_tenant(&self, id: &str) -> Result {
        match self {
            Backend::Store(c) => Ok(c.delete_tenant(id).await?),
            Backend::Server(r) => r.delete_tenant(id).await,
        }
    }

    /// Issues a key: its id and the whole key (shown once).
    pub(crate) async fn create_key(
        &self,
        tenant: &str,
        ttl: Option<Duration>,
    ) -> Result<(String, String)> {
        match self {
            Backend::Store(c) => {
                let k = c.create_key(tenant, ttl).await?;
                Ok((k.id.clone(), k.secret.clone()))
            }
            Backend::Server(r) => r.create_key(tenant, ttl).await,
        }
    }

    pub(crate) async fn revoke_key(&self, id: &str) -> Result {
        match self {
            Backend::Store(c) => Ok(c.revoke_key(id).await?),
            Backend::Server(r) => r.revoke_key(id).await,
        }
    }

    /// Stores plugin bytes as plugin `name` made as `spec` says; the digest.
    pub(crate) async fn install_plugin(
        &self,
        name: &str,
        bytes: &[u8],
        spec: PluginSpec,
    ) -> Result<String> {
        match self {
            Backend::Store(c) => Ok(c.install_plugin(name, bytes, spec).await?),
            Backend::Server(r) => r.install_plugin(name, bytes, &spec).await,
        }
    }

    pub(crate) async fn update_plugin(
        &self,
        name: &str,
        edit: impl Fn(&mut PluginSpec),
    ) -> Result<PluginSpec> {
        match self {
            Backend::Store(c) => Ok(c.update_plugin(name, edit).await?),
            Backend::Server(r) => r.update_plugin(name, edit).await,
        }
    }

    pub(crate) async fn delete_plugin(&self, name: &str) -> Result {
        match self {
            Backend::Store(c) => Ok(c.delete_plugin(name).await?),
            Backend::Server(r) => r.delete_plugin(name).await,
        }
    }

    /// What applying `desired` would change; writes nothing.
    pub(crate) async fn diff(&self, desired: &Spec, prune: bool) -> Result<Vec<Change>> {
        Ok(cog_control::diff(&self.state().await?.spec, desired, prune))
    }

    /// Makes the store match `desired` (plugin bytes by digest in `blobs`).
    pub(crate) async fn apply(
        &self,
        desired: &Spec,
        blobs: &BTreeMap<String, Vec<u8>>,
        prune: bool,
    ) -> Result<Vec<Change>> {
        match self {
            Backend::Store(c) => Ok(c.apply(desired, blobs, prune).await?),
            Backend::Server(r) => r.apply(desired, blobs, prune).await,
        }
    }
}
