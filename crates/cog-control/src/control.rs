//! [`Control`]: reading and changing the control plane.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::diff::{Change, diff};
use crate::error::{ControlError, Invalid};
use crate::keys::{self, NewKey};
use crate::model::{
    AUDIT_KEEP, AdminToken, ApiKey, AuditEntry, MAX_PLUGIN_BYTES, PlacementTable, Plan, PluginLang,
    PluginSpec, Scope, Spec, State, Status, Tenant,
};
use crate::store::{Store, Version};
use cog_core::placement::Placement;

/// The control plane: typed operations over a [`Store`].
///
/// Every change is read–modify–write with a revision check, retried when
/// another writer got there first, and validated as a whole before it is
/// written: a change that would leave a tenant on a missing plan, or a
/// plugin attached to a missing tenant, is refused.
///
/// Every write is recorded in the state's audit log ([`AuditEntry`]: who,
/// what, when, the resulting revision), in the same commit as the change.
#[derive(Clone, Debug)]
pub struct Control {
    store: Arc<dyn Store>,
    actor: Arc<str>,
    if_version: Option<Version>,
    /// The version the last write through this handle produced.
    committed: Arc<parking_lot::Mutex<Version>>,
    /// The newest state committed through this handle or any clone of it
    /// (kept across [`actor`](Self::actor)): readers that cache the state
    /// need not reload what they wrote themselves.
    newest: Arc<parking_lot::Mutex<Option<Arc<State>>>>,
    /// A state already read, for the first attempt of the next write
    /// (checked by the store's compare-and-swap like any other).
    base: Option<Arc<State>>,
    /// Where plugins keep their data: cleared for deleted tenants and
    /// plugins.
    #[cfg(feature = "sandbox")]
    plugin_data: Option<crate::plugin_data::PluginData>,
}

fn now() -> u64 {
    now_ms() / 1000
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The revision of the placement table that follows one at `last` (0:
/// none): one more, or the time in ms when that is later. Revisions go up
/// with every change and are never handed out twice, even after the store
/// went back (restored from a backup, failed over to a replica without its
/// last writes) and forgot a table routers had followed: the next table is
/// newer than that one for every router, and a move is never taken for a
/// lost one of the same number (see `cog_core::placement::Router::reset_placement`).
fn next_placement_revision(last: u64) -> u64 {
    last.saturating_add(1).max(now_ms())
}

impl Control {
    /// Over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Control {
            store,
            actor: "library".into(),
            if_version: None,
            committed: Arc::default(),
            newest: Arc::default(),
            base: None,
            #[cfg(feature = "sandbox")]
            plugin_data: None,
        }
    }

    /// Clears what plugins stored in `kv` — the store the services'
    /// [`Runtime`](cog_sandbox::Runtime) keeps plugin data in — for the
    /// tenants and plugins a write deletes (`delete_tenant`,
    /// `delete_plugin`, `apply` with prune, any `update`): each plugin's
    /// scope of a deleted tenant, each tenant's scope of a deleted plugin.
    /// A tenant or plugin created later under the same name starts empty
    /// instead of finding the old one's data.
    ///
    /// The scopes are cleared before the write is committed: when `kv`
    /// fails, the write fails with [`ControlError::PluginData`] and
    /// nothing is deleted (try again). Should the commit then fail, the
    /// data is gone and the tenant or plugin still there — what was asked
    /// for, half done; the retry finishes it. A service instance that has
    /// not yet seen the deletion may still write for the deleted tenant in
    /// the moments before its directory catches up.
    ///
    /// Scopes are cleared one by one, each within `kv`'s own timeout: a
    /// `cog_sandbox::RedisKv` made for plugins waits 20 ms,
    /// short for an admin call on a busy server — give this one longer
    /// (the CLI waits a second).
    ///
    /// Feature `sandbox`.
    #[cfg(feature = "sandbox")]
    #[must_use]
    pub fn plugin_data(mut self, kv: Arc<dyn cog_sandbox::KvStore>) -> Self {
        self.plugin_data = Some(crate::plugin_data::PluginData(kv));
        self
    }

    /// Records writes made through this handle as `actor`'s in the audit
    /// log (default `library`; the CLI says `cli`, the admin API
    /// `token:<id>`).
    #[must_use]
    pub fn actor(mut self, actor: impl Into<Arc<str>>) -> Self {
        self.actor = actor.into();
        self.committed = Arc::default();
        self
    }

    /// The revision the last write through this handle (or its clones
    /// since [`actor`](Self::actor)) produced; 0 before any.
    pub fn last_revision(&self) -> u64 {
        self.committed.lock().revision
    }

    /// [`last_revision`](Self::last_revision) with the stamp of its commit
    /// (the admin API's `ETag`).
    pub fn last_version(&self) -> Version {
        *self.committed.lock()
    }

    /// The newest state committed through this handle or any clone of it,
    /// at the version it was committed as; `None` before the first write.
    /// After the store went back (a failover to a replica behind it, a
    /// restored backup), it may be a state the store lost, even of a higher
    /// revision than the store's: use it only if its
    /// [`version`](State::version) [`matches`](crate::store::Version::matches)
    /// the store's.
    pub fn newest_committed(&self) -> Option<Arc<State>> {
        self.newest.lock().clone()
    }

    /// Writes through this handle start from `state` (one the caller has
    /// just read) instead of reading the store again. The store's
    /// compare-and-swap still decides: if it moved on, the write reads it
    /// and runs again, as on any conflict.
    #[must_use]
    pub fn based_on(mut self, state: Arc<State>) -> Self {
        self.base = Some(state);
        self
    }

    /// Writes through this handle only go through while the store is at
    /// `revision` (an HTTP `If-Match`): otherwise they fail with
    /// [`ControlError::Stale`] instead of being retried on the newer state.
    /// After the store went back and was written up to `revision` again,
    /// that holds too: [`if_version`](Self::if_version) tells the two
    /// apart.
    #[must_use]
    pub fn if_revision(mut self, revision: Option<u64>) -> Self {
        self.if_version = revision.map(|revision| Version {
            revision,
            stamp: None,
        });
        self
    }

    /// [`if_revision`](Self::if_revision), and only while the store holds
    /// the commit of `version`'s stamp when it has one ([`State::version`]
    /// of a state read): a commit of the same revision made after the store
    /// went back (a failover to a replica behind it) is
    /// [`ControlError::Stale`] too.
    #[must_use]
    pub fn if_version(mut self, version: Option<Version>) -> Self {
        self.if_version = version;
        self
    }

    /// Opens the store `url` names (`file:PATH` or `redis://…`).
    ///
    /// # Errors
    /// See [`store::open`](crate::store::open).
    pub async fn open(url: &str) -> Result<Self, ControlError> {
        Ok(Self::new(crate::store::open(url).await?))
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The current state.
    ///
    /// # Errors
    /// The store failed or holds garbage.
    pub async fn state(&self) -> Result<State, ControlError> {
        self.store.load().await
    }

    /// Applies `change` to the current state and writes the result,
    /// retrying on a concurrent write (`change` may run several times).
    ///
    /// # Errors
    /// What `change` returns, a state that does not validate, or the store.
    pub async fn update<T>(
        &self,
        change: impl FnMut(&mut State) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        self.write("update", "", change).await
    }

    /// [`update`](Self::update), recorded in the audit log as `action` on
    /// `target`.
    ///
    /// # Errors
    /// As [`update`](Self::update); [`ControlError::Stale`] when
    /// [`if_revision`](Self::if_revision) no longer holds.
    pub async fn write<T>(
        &self,
        action: &str,
        target: &str,
        mut change: impl FnMut(&mut State) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let mut backoff = Duration::from_millis(1);
        let mut base = self.base.clone();
        loop {
            // A base at another revision than If-Match names may be stale
            // rather than the store: only the store can say Stale.
            let (mut state, from_base) = match base.take() {
                Some(b) if self.if_version.is_none_or(|e| e.matches(&b.version())) => {
                    ((*b).clone(), true)
                }
                _ => (self.store.load().await?, false),
            };
            if let Some(expected) = self.if_version
                && !expected.matches(&state.version())
            {
                return Err(ControlError::Stale {
                    expected: expected.revision,
                    found: state.revision,
                });
            }
            let before = plugin_digests(&state);
            #[cfg(feature = "sandbox")]
            let names = self
                .plugin_data
                .as_ref()
                .map(|_| crate::plugin_data::Names::of(&state));
            let checked = change(&mut state)
                .and_then(|out| state.validate().map(|()| out).map_err(ControlError::from));
            let out = match checked {
                Ok(out) => out,
                // The base may be behind the store: only the store's own
                // state can refuse a change.
                Err(_) if from_base => continue,
                Err(e) => return Err(e),
            };
            #[cfg(feature = "sandbox")]
            if let (Some(data), Some(names)) = (&self.plugin_data, &names) {
                data.clear(names.gone(&state)).await?;
            }
            // Stores bump the revision by one on every commit.
            state.audit.push(AuditEntry {
                at: now_ms(),
                actor: self.actor.to_string(),
                action: action.to_owned(),
                target: target.to_owned(),
                revision: state.revision + 1,
            });
            let excess = state.audit.len().saturating_sub(AUDIT_KEEP);
            state.audit.drain(..excess);
            match self.store.commit(&state).await {
                Ok(version) => {
                    *self.committed.lock() = version;
                    let after = plugin_digests(&state);
                    state.revision = version.revision;
                    state.stamp = version.stamp;
                    {
                        let mut newest = self.newest.lock();
                        if newest
                            .as_ref()
                            .is_none_or(|n| n.revision <= version.revision)
                        {
                            *newest = Some(Arc::new(state));
                        }
                    }
                    let dropped: Vec<String> = before.difference(&after).cloned().collect();
                    if !dropped.is_empty() {
                        self.delete_unreferenced(dropped).await;
                    }
                    return Ok(out);
                }
                Err(ControlError::Conflict { .. }) => {
                    let jitter = rand::random::<u64>() % (backoff.as_micros() as u64 + 1);
                    tokio::time::sleep(Duration::from_micros(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes the stored bytes of `digests` that no plugin refers to any
    /// more, checked against the store's latest state (a concurrent
    /// install of the same bytes keeps them). Failures are logged: the
    /// bytes stay, and the next change that drops them tries again.
    async fn delete_unreferenced(&self, digests: Vec<String>) {
        let latest = match self.store.load().await {
            Ok(s) => plugin_digests(&s),
            Err(e) => {
                tracing::warn!(target: "cog_control", error = &e as &dyn std::error::Error, "plugin bytes not collected");
                return;
            }
        };
        for digest in digests.iter().filter(|d| !latest.contains(*d)) {
            if let Err(e) = self.store.delete_blob(digest).await {
                tracing::warn!(target: "cog_control", %digest, error = &e as &dyn std::error::Error, "plugin bytes not deleted");
            }
        }
    }

    /// Where tenants' data lives: the placement table, if deployments were
    /// added.
    ///
    /// # Errors
    /// The store failed or holds garbage.
    pub async fn placement(&self) -> Result<Option<PlacementTable>, ControlError> {
        Ok(self.state().await?.placement)
    }

    /// Adds Redis deployment `name` to the placement table: the first one
    /// creates the table with every partition on it; later
    /// ones hold no partition until one is moved there. Configure the
    /// instances with a connection to it before moving anything.
    ///
    /// # Errors
    /// An invalid name, or one the table has already.
    pub async fn add_deployment(&self, name: &str) -> Result<PlacementTable, ControlError> {
        self.write("placement.add", name, |s| {
            let last = s.placement.as_ref().map_or(0, |t| t.revision);
            let next = match &s.placement {
                None => Placement::new([name]),
                Some(table) => {
                    if table.deployments.iter().any(|d| d == name) {
                        return Err(exists("deployment", name));
                    }
                    table.to_placement()?.with_deployment(name)
                }
            }
            .map_err(|e| Invalid::new("placement.deployments", e.to_string()))?
            .at_revision(next_placement_revision(last));
            let table = PlacementTable::of(&next);
            s.placement = Some(table.clone());
            Ok(table)
        })
        .await
    }

    /// Moves `partition` to deployment `to`, at a newer placement revision
    /// (one more, or the time in ms when later: never one a lost table had; no
    /// change, and no new revision, when it is there already). One
    /// compare-and-swap write: concurrent moves never lose each other.
    ///
    /// With [`plugin_data`](Self::plugin_data) over the deployments (a
    /// `cog_sandbox::PlacedKv` with the services' copy window), each
    /// plugin's scope of the partition's tenants is then copied to `to`,
    /// once across the fleet as the services' first use of it would:
    /// otherwise a scope not used within the window would stay behind.
    ///
    /// # Errors
    /// No placement table, or no deployment `to` in it.
    /// [`ControlError::PluginData`] when the move was made but the copy
    /// failed (each scope is still copied on its first use within the
    /// window).
    pub async fn move_partition(
        &self,
        partition: u8,
        to: &str,
    ) -> Result<PlacementTable, ControlError> {
        let (table, from, scopes) = self
            .write("placement.move", &format!("{partition}"), |s| {
                let table = s
                    .placement
                    .as_ref()
                    .ok_or_else(|| not_found("placement", "table"))?;
                if !table.deployments.iter().any(|d| d == to) {
                    return Err(not_found("deployment", to));
                }
                let before = table.to_placement()?;
                let mut next = before
                    .moved(partition, to)
                    .map_err(|e| Invalid::new("placement", e.to_string()))?;
                if next.revision() != table.revision {
                    next = next.at_revision(next_placement_revision(table.revision));
                }
                let table = PlacementTable::of(&next);
                s.placement = Some(table.clone());
                // The partition's plugin scopes in the state this write
                // commits (not the handle's newest state: after the store
                // went back, that may be a lost one).
                #[cfg(feature = "sandbox")]
                let scopes = self
                    .plugin_data
                    .as_ref()
                    .map(|_| crate::plugin_data::of_partition(s, partition));
                #[cfg(not(feature = "sandbox"))]
                let scopes = ();
                Ok((table, before.deployment_of(partition).to_owned(), scopes))
            })
            .await?;
        // Scopes not used within the services' copy window would stay
        // behind: each is copied now, as its first use would.
        #[cfg(feature = "sandbox")]
        if let (Some(data), Some(scopes)) = (&self.plugin_data, scopes)
            && from != to
        {
            data.copy_moved(from, to.to_owned(), table.revision, scopes)
                .await?;
        }
        #[cfg(not(feature = "sandbox"))]
        let _ = (from, scopes);
        Ok(table)
    }

    /// Creates plan `name`.
    ///
    /// # Errors
    /// It exists, or the plan is invalid.
    pub async fn create_plan(&self, name: &str, plan: Plan) -> Result<(), ControlError> {
        self.write("plan.create", name, |s| {
            if s.spec.plans.contains_key(name) {
                return Err(exists("plan", name));
            }
            s.spec.plans.insert(name.to_owned(), plan.clone());
            Ok(())
        })
        .await
    }

    /// Changes plan `name` with `edit`.
    ///
    /// # Errors
    /// It does not exist, or the result is invalid.
    pub async fn update_plan(
        &self,
        name: &str,
        edit: impl Fn(&mut Plan),
    ) -> Result<Plan, ControlError> {
        self.write("plan.update", name, |s| {
            let plan = s
                .spec
                .plans
                .get_mut(name)
                .ok_or_else(|| not_found("plan", name))?;
            edit(plan);
            Ok(plan.clone())
        })
        .await
    }

    /// Deletes plan `name`.
    ///
    /// # Errors
    /// It does not exist, or tenants are on it.
    pub async fn delete_plan(&self, name: &str) -> Result<(), ControlError> {
        self.write("plan.delete", name, |s| {
            let users: Vec<&str> = s
                .spec
                .tenants
                .iter()
                .filter(|(_, t)| t.plan == name)
                .map(|(id, _)| id.as_str())
                .collect();
            if !users.is_empty() {
                return Err(ControlError::InUse {
                    kind: "plan",
                    id: name.to_owned(),
                    by: format!("tenants {}", users.join(", ")),
                });
            }
            s.spec
                .plans
                .remove(name)
                .ok_or_else(|| not_found("plan", name))?;
            for p in s.spec.plugins.values_mut() {
                p.attach.plans.retain(|p| p != name);
            }
            Ok(())
        })
        .await
    }

    /// Creates tenant `id`.
    ///
    /// # Errors
    /// It exists, or its plan does not.
    pub async fn create_tenant(&self, id: &str, tenant: Tenant) -> Result<(), ControlError> {
        self.write("tenant.create", id, |s| {
            if s.spec.tenants.contains_key(id) {
                return Err(exists("tenant", id));
            }
            s.spec.tenants.insert(id.to_owned(), tenant.clone());
            Ok(())
        })
        .await
    }

    /// Changes tenant `id` with `edit`.
    ///
    /// # Errors
    /// It does not exist, or the result is invalid.
    pub async fn update_tenant(
        &self,
        id: &str,
        edit: impl Fn(&mut Tenant),
    ) -> Result<Tenant, ControlError> {
        self.write("tenant.update", id, |s| {
            let t = s
                .spec
                .tenants
                .get_mut(id)
                .ok_or_else(|| not_found("tenant", id))?;
            edit(t);
            Ok(t.clone())
        })
        .await
    }

    /// Suspends or resumes tenant `id`.
    ///
    /// # Errors
    /// It does not exist.
    pub async fn set_status(&self, id: &str, status: Status) -> Result<Tenant, ControlError> {
        let action = match status {
            Status::Active => "tenant.resume",
            Status::Suspended => "tenant.suspend",
        };
        self.write(action, id, |s| {
            let t = s
                .spec
                .tenants
                .get_mut(id)
                .ok_or_else(|| not_found("tenant", id))?;
            t.status = status;
            Ok(t.clone())
        })
        .await
    }

    /// Creates an admin API token with `scope`; `name` says what it is
    /// for. The returned secret is the only copy (the store keeps its
    /// hash).
    ///
    /// # Errors
    /// The store failed.
    pub async fn create_token(&self, name: &str, scope: Scope) -> Result<NewKey, ControlError> {
        self.write("token.create", name, |s| {
            let token = loop {
                let t = keys::generate_token();
                if !s.tokens.contains_key(&t.id) {
                    break t;
                }
            };
            s.tokens.insert(
                token.id.clone(),
                AdminToken {
                    name: name.to_owned(),
                    hash: keys::hash(&token.secret),
                    scope,
                    created: now(),
                    revoked: false,
                },
            );
            Ok(token)
        })
        .await
    }

    /// Revokes admin token `id` (it stays listed, refused).
    ///
    /// # Errors
    /// No such token.
    pub async fn revoke_token(&self, id: &str) -> Result<(), ControlError> {
        self.write("token.revoke", id, |s| {
            s.tokens
                .get_mut(id)
                .ok_or_else(|| not_found("token", id))?
                .revoked = true;
            Ok(())
        })
        .await
    }

    /// Deletes tenant `id`, its keys and its plugin attachments (and, with
    /// [`plugin_data`](Self::plugin_data), what its plugins stored).
    ///
    /// # Errors
    /// It does not exist.
    pub async fn delete_tenant(&self, id: &str) -> Result<(), ControlError> {
        self.write("tenant.delete", id, |s| {
            s.spec
                .tenants
                .remove(id)
                .ok_or_else(|| not_found("tenant", id))?;
            remove_tenant_refs(s, id);
            Ok(())
        })
        .await
    }

    /// Issues a key for `tenant`, valid for `ttl` (forever if `None`). The
    /// returned secret is the only copy.
    ///
    /// # Errors
    /// No such tenant.
    pub async fn create_key(
        &self,
        tenant: &str,
        ttl: Option<Duration>,
    ) -> Result<NewKey, ControlError> {
        self.write("key.create", tenant, |s| {
            if !s.spec.tenants.contains_key(tenant) {
                return Err(not_found("tenant", tenant));
            }
            let key = loop {
                let k = keys::generate();
                if !s.keys.contains_key(&k.id) {
                    break k;
                }
            };
            let created = now();
            s.keys.insert(
                key.id.clone(),
                ApiKey {
                    tenant: tenant.to_owned(),
                    hash: keys::hash(&key.secret),
                    created,
                    expires: ttl.map(|t| created + t.as_secs()),
                    revoked: false,
                },
            );
            Ok(key)
        })
        .await
    }

    /// Revokes key `id` (it stays listed, refused).
    ///
    /// # Errors
    /// No such key.
    pub async fn revoke_key(&self, id: &str) -> Result<(), ControlError> {
        self.write("key.revoke", id, |s| {
            s.keys
                .get_mut(id)
                .ok_or_else(|| not_found("key", id))?
                .revoked = true;
            Ok(())
        })
        .await
    }

    /// Stores plugin bytes and records plugin `name` (replacing an older
    /// version of it); `spec.lang` says what the bytes are. The caller
    /// validates the plugin first (the CLI runs it through the sandbox).
    ///
    /// # Errors
    /// Too large, not wasm (or for Python, not UTF-8 text), or references
    /// that do not exist.
    pub async fn install_plugin(
        &self,
        name: &str,
        wasm: &[u8],
        spec: PluginSpec,
    ) -> Result<String, ControlError> {
        let lang = spec.lang;
        let (p, _) = self
            .install_plugin_with(name, wasm, lang, |p| *p = spec.clone())
            .await?;
        Ok(p.digest)
    }

    /// Stores plugin bytes in `lang` and records them as plugin `name`:
    /// `edit` sees the installed plugin (or, for a new one, the
    /// [default](PluginSpec::default)) in the state being written, so what
    /// it keeps of an older version is read in the same commit. Returns
    /// the plugin and whether it is new.
    ///
    /// # Errors
    /// As [`install_plugin`](Self::install_plugin).
    pub async fn install_plugin_with(
        &self,
        name: &str,
        bytes: &[u8],
        lang: PluginLang,
        edit: impl Fn(&mut PluginSpec),
    ) -> Result<(PluginSpec, bool), ControlError> {
        crate::model::check_name(&format!("plugins.{name}"), name)?;
        check_plugin(lang, bytes)?;
        let digest = crate::digest(bytes);
        self.store.put_blob(&digest, bytes).await?;
        let written = self
            .write("plugin.install", name, |s| {
                let old = s.spec.plugins.get(name);
                let created = old.is_none();
                let mut spec = old.cloned().unwrap_or_default();
                edit(&mut spec);
                spec.lang = lang;
                spec.digest = digest.clone();
                spec.file = None;
                s.spec.plugins.insert(name.to_owned(), spec.clone());
                Ok((spec, created))
            })
            .await;
        let out = match written {
            Ok(out) => out,
            Err(e) => {
                // Refused (invalid, stale, …): the bytes stored for it
                // would be referred to by nothing, and kept for ever.
                self.delete_unreferenced(vec![digest]).await;
                return Err(e);
            }
        };
        // Again (idempotent): a writer that dropped the last other
        // reference to these bytes before this commit may have deleted
        // them in between.
        self.store.put_blob(&digest, bytes).await?;
        Ok(out)
    }

    /// Changes plugin `name` with `edit`.
    ///
    /// # Errors
    /// It does not exist, or the result is invalid.
    pub async fn update_plugin(
        &self,
        name: &str,
        edit: impl Fn(&mut PluginSpec),
    ) -> Result<PluginSpec, ControlError> {
        self.write("plugin.update", name, |s| {
            let p = s
                .spec
                .plugins
                .get_mut(name)
                .ok_or_else(|| not_found("plugin", name))?;
            edit(p);
            Ok(p.clone())
        })
        .await
    }

    /// Removes plugin `name` (its bytes too, unless another plugin uses
    /// them; with [`plugin_data`](Self::plugin_data), what it stored for
    /// every tenant).
    ///
    /// # Errors
    /// It does not exist.
    pub async fn delete_plugin(&self, name: &str) -> Result<(), ControlError> {
        self.write("plugin.delete", name, |s| {
            s.spec
                .plugins
                .remove(name)
                .ok_or_else(|| not_found("plugin", name))?;
            Ok(())
        })
        .await
    }

    /// What [`apply`](Self::apply) would change.
    ///
    /// # Errors
    /// The store failed.
    pub async fn diff(&self, desired: &Spec, prune: bool) -> Result<Vec<Change>, ControlError> {
        Ok(diff(&self.state().await?.spec, desired, prune))
    }

    /// Makes the store match `desired`: creates and updates what it lists;
    /// with `prune`, deletes plans, tenants (and their keys) and plugins it
    /// does not list. Plugin bytes named by `file` must be in `blobs`
    /// (digest → bytes) or already stored.
    ///
    /// # Errors
    /// `desired` is invalid, or the store failed. Nothing is written then.
    pub async fn apply(
        &self,
        desired: &Spec,
        blobs: &BTreeMap<String, Vec<u8>>,
        prune: bool,
    ) -> Result<Vec<Change>, ControlError> {
        desired.validate()?;
        // Only bytes a plugin of `desired` names are stored, each checked
        // first: nothing is stored for a document refused here.
        let mut named = Vec::new();
        for (digest, bytes) in blobs {
            let Some(p) = desired.plugins.values().find(|p| p.digest == *digest) else {
                continue;
            };
            if crate::digest(bytes) != *digest {
                return Err(Invalid::new(
                    "blobs",
                    format!("the bytes given for {digest} have another digest"),
                )
                .into());
            }
            check_plugin(p.lang, bytes)?;
            named.push((digest, bytes));
        }
        let mut applied = Ok(Vec::new());
        for (digest, bytes) in &named {
            if let Err(e) = self.store.put_blob(digest, bytes).await {
                applied = Err(e);
                break;
            }
        }
        if applied.is_ok() {
            applied = self.apply_stored(desired, blobs, prune).await;
        }
        if applied.is_err() {
            // Refused (invalid, stale, …), or the store failed part way
            // through storing them: the bytes just stored would be
            // referred to by nothing, and kept for ever.
            let digests = named.iter().map(|(d, _)| (*d).clone()).collect();
            self.delete_unreferenced(digests).await;
            return applied;
        }
        // Again (idempotent), as in `install_plugin_with`: a writer that
        // dropped the last other reference to these bytes before this
        // commit may have deleted them in between.
        for (digest, bytes) in &named {
            self.store.put_blob(digest, bytes).await?;
        }
        applied
    }

    /// [`apply`](Self::apply) once the given bytes are stored.
    async fn apply_stored(
        &self,
        desired: &Spec,
        blobs: &BTreeMap<String, Vec<u8>>,
        prune: bool,
    ) -> Result<Vec<Change>, ControlError> {
        for (name, p) in &desired.plugins {
            if !blobs.contains_key(&p.digest) && self.store.get_blob(&p.digest).await?.is_none() {
                return Err(Invalid::new(
                    format!("plugins.{name}.digest"),
                    format!("no plugin bytes stored for {}", p.digest),
                )
                .into());
            }
        }
        self.write("apply", "", |s| {
            let changes = diff(&s.spec, desired, prune);
            let next = s.spec.applied(desired, prune);
            let gone: Vec<String> = s
                .spec
                .tenants
                .keys()
                .filter(|t| !next.tenants.contains_key(*t))
                .cloned()
                .collect();
            s.spec = next;
            for t in gone {
                remove_tenant_refs(s, &t);
            }
            Ok(changes)
        })
        .await
    }
}

/// Refuses bytes that cannot be a plugin in `lang` or are too large.
pub(crate) fn check_plugin(lang: PluginLang, bytes: &[u8]) -> Result<(), ControlError> {
    if bytes.len() > MAX_PLUGIN_BYTES {
        return Err(ControlError::Plugin(format!(
            "{} bytes is over the {MAX_PLUGIN_BYTES}-byte limit",
            bytes.len()
        )));
    }
    if lang == PluginLang::Python {
        if std::str::from_utf8(bytes).is_err() || bytes.contains(&0) {
            return Err(ControlError::Plugin(
                "not Python source (it must be UTF-8 text without NUL bytes)".into(),
            ));
        }
        return Ok(());
    }
    if !bytes.starts_with(b"\0asm\x01\0\0\0") {
        return Err(ControlError::Plugin(
            "not a WebAssembly module (no `\\0asm` version 1 header)".into(),
        ));
    }
    Ok(())
}

fn remove_tenant_refs(s: &mut State, tenant: &str) {
    s.keys.retain(|_, k| k.tenant != tenant);
    for p in s.spec.plugins.values_mut() {
        p.attach.tenants.retain(|t| t != tenant);
    }
}

fn exists(kind: &'static str, id: &str) -> ControlError {
    ControlError::Exists {
        kind,
        id: id.to_owned(),
    }
}

fn not_found(kind: &'static str, id: &str) -> ControlError {
    ControlError::NotFound {
        kind,
        id: id.to_owned(),
    }
}

/// The digests of every plugin's bytes in `state`.
fn plugin_digests(state: &State) -> std::collections::BTreeSet<String> {
    state
        .spec
        .plugins
        .values()
        .map(|p| p.digest.clone())
        .filter(|d| !d.is_empty())
        .collect()
}
