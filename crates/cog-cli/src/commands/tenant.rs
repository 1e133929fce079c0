//! `cog tenant`: the API's customers.

use clap::Subcommand;
use cog_control::{KeyStatus, LimitSpec, Status, Tenant};

use super::plan::limit_text;
use super::{Ctx, join, missing, parse_pair};
use crate::exit::Result;
use crate::output::Table;
use crate::time::now;

#[derive(Subcommand, Debug)]
pub(crate) enum TenantCmd {
    /// Creates a tenant on a plan.
    Create {
        /// Its id.
        id: String,
        /// Its plan.
        #[arg(long)]
        plan: String,
        /// A name for people.
        #[arg(long)]
        name: Option<String>,
        /// A label `KEY=VALUE`. Repeatable.
        #[arg(long = "meta", value_parser = parse_pair)]
        meta: Vec<(String, String)>,
    },
    /// Lists tenants.
    List {
        /// Only those on this plan.
        #[arg(long)]
        plan: Option<String>,
    },
    /// Shows one tenant.
    Show {
        /// Its id.
        id: String,
    },
    /// Changes a tenant's name, labels or limit overrides.
    Update {
        /// Its id.
        id: String,
        /// A name for people.
        #[arg(long)]
        name: Option<String>,
        /// Sets a label `KEY=VALUE`. Repeatable.
        #[arg(long = "meta", value_parser = parse_pair)]
        meta: Vec<(String, String)>,
        /// Overrides the plan's limit of the same name (or adds one).
        #[arg(long = "override", value_parser = LimitSpec::parse)]
        overrides: Vec<LimitSpec>,
        /// Drops the override of this name. Repeatable.
        #[arg(long = "clear-override")]
        clear: Vec<String>,
    },
    /// Moves a tenant to another plan.
    SetPlan {
        /// Its id.
        id: String,
        /// The new plan.
        plan: String,
    },
    /// Refuses the tenant's requests (403) until resumed.
    Suspend {
        /// Its id.
        id: String,
    },
    /// Serves a suspended tenant again.
    Resume {
        /// Its id.
        id: String,
    },
    /// Deletes a tenant, its keys and what plugins stored for it.
    Delete {
        /// Its id.
        id: String,
    },
}

pub(crate) fn status_text(s: Status) -> &'static str {
    match s {
        Status::Active => "active",
        Status::Suspended => "suspended",
    }
}

pub(crate) fn tenant_json(id: &str, t: &Tenant) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "plan": t.plan,
        "display_name": t.display_name,
        "status": status_text(t.status),
        "metadata": t.metadata,
        "overrides": t.overrides,
        "quota_overrides": t.quota_overrides,
    })
}

pub(crate) async fn exec(cmd: &TenantCmd, ctx: &Ctx<'_>) -> Result {
    let (c, out) = (ctx.backend, ctx.out);
    match cmd {
        TenantCmd::Create {
            id,
            plan,
            name,
            meta,
        } => {
            let mut t = Tenant::new(plan.clone());
            t.display_name = name.clone().unwrap_or_default();
            t.metadata = meta.iter().cloned().collect();
            c.create_tenant(id, t.clone()).await?;
            out.done(
                &format!("tenant {id} created on plan {plan}"),
                tenant_json(id, &t),
            );
        }
        TenantCmd::List { plan } => {
            let state = c.state().await?;
            let mut t = Table::new(&["ID", "PLAN", "STATUS", "NAME", "KEYS"]);
            let mut json = Vec::new();
            for (id, tenant) in &state.spec.tenants {
                if plan.as_ref().is_some_and(|p| *p != tenant.plan) {
                    continue;
                }
                let keys = state
                    .keys
                    .values()
                    .filter(|k| &k.tenant == id && k.status(now()) == KeyStatus::Active)
                    .count();
                t.row(vec![
                    id.clone(),
                    tenant.plan.clone(),
                    status_text(tenant.status).into(),
                    tenant.display_name.clone(),
                    keys.to_string(),
                ]);
                let mut j = tenant_json(id, tenant);
                j["keys"] = keys.into();
                json.push(j);
            }
            out.list(t, json);
        }
        TenantCmd::Show { id } => {
            let state = c.state().await?;
            let t = state
                .spec
                .tenants
                .get(id)
                .ok_or_else(|| missing("tenant", id))?;
            out.record(
                &[
                    ("id", id.clone()),
                    ("plan", t.plan.clone()),
                    ("status", status_text(t.status).into()),
                    ("name", t.display_name.clone()),
                    (
                        "metadata",
                        t.metadata
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                    ("overrides", join(&t.overrides, limit_text)),
                ],
                tenant_json(id, t),
            );
        }
        TenantCmd::Update {
            id,
            name,
            meta,
            overrides,
            clear,
        } => {
            let t = c
                .update_tenant(id, |t| {
                    if let Some(n) = name {
                        t.display_name = n.clone();
                    }
                    for (k, v) in meta {
                        t.metadata.insert(k.clone(), v.clone());
                    }
                    t.overrides.retain(|o| !clear.contains(&o.name));
                    for o in overrides {
                        match t.overrides.iter_mut().find(|x| x.name == o.name) {
                            Some(x) => *x = o.clone(),
                            None => t.overrides.push(o.clone()),
                        }
                    }
                })
                .await?;
            out.done(&format!("tenant {id} updated"), tenant_json(id, &t));
        }
        TenantCmd::SetPlan { id, plan } => {
            // Plugins attached to it run under the new plan's limits.
            super::plugin::recheck(ctx, |s| {
                if let Some(t) = s.tenants.get_mut(id) {
                    t.plan = plan.clone();
                }
            })
            .await?;
            let t = c.update_tenant(id, |t| t.plan = plan.clone()).await?;
            out.done(
                &format!("tenant {id} moved to plan {plan}"),
                tenant_json(id, &t),
            );
        }
        TenantCmd::Suspend { id } => {
            ctx.confirm(&format!("suspend tenant {id}"))?;
            let t = c.set_status(id, Status::Suspended).await?;
            out.done(&format!("tenant {id} suspended"), tenant_json(id, &t));
        }
        TenantCmd::Resume { id } => {
            let t = c.set_status(id, Status::Active).await?;
            out.done(&format!("tenant {id} resumed"), tenant_json(id, &t));
        }
        TenantCmd::Delete { id } => {
            ctx.confirm(&format!("delete tenant {id}, its keys and its plugin data"))?;
            c.delete_tenant(id).await?;
            out.done(
                &format!("tenant {id} deleted"),
                serde_json::json!({"id": id, "deleted": true}),
            );
        }
    }
    Ok(())
}
