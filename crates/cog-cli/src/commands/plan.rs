//! `cog plan`: subscription plans.

use clap::{Args, Subcommand};
use cog_control::{LimitSpec, Plan, PluginLimits, Window};

use super::{Ctx, join, missing};
use crate::exit::Result;
use crate::output::Table;

#[derive(Args, Debug)]
pub(crate) struct PlanArgs {
    /// A rate limit: `NAME=RATE/WINDOW[,burst=N][,cost=N]`, e.g.
    /// `rps=10/1s,burst=20`. Repeatable. A request costs the largest
    /// `cost` of the plan (default 1), on every limit and quota.
    #[arg(long = "limit", value_parser = LimitSpec::parse)]
    limits: Vec<LimitSpec>,
    /// A long-window quota: `NAME=COUNT/WINDOW`, e.g. `daily=10000/1d`.
    #[arg(long = "quota", value_parser = LimitSpec::parse)]
    quotas: Vec<LimitSpec>,
    /// The most L1 cache bytes one tenant may hold.
    #[arg(long)]
    cache_budget: Option<u64>,
    /// Metering points per plugin call.
    #[arg(long)]
    plugin_fuel: Option<u64>,
    /// Plugin memory cap in bytes.
    #[arg(long)]
    plugin_memory: Option<u64>,
    /// Plugin deadline per call, e.g. `50ms`.
    #[arg(long)]
    plugin_deadline: Option<Window>,
    /// KV entries one plugin may keep per tenant.
    #[arg(long)]
    plugin_kv_entries: Option<u64>,
    /// Bytes of KV keys and values one plugin may keep per tenant.
    #[arg(long)]
    plugin_kv_bytes: Option<u64>,
}

impl PlanArgs {
    fn plugin_limits(&self) -> Option<PluginLimits> {
        let limits = PluginLimits {
            fuel: self.plugin_fuel,
            memory_bytes: self.plugin_memory,
            deadline: self.plugin_deadline,
            kv_entries: self.plugin_kv_entries,
            kv_bytes: self.plugin_kv_bytes,
        };
        (limits != PluginLimits::default()).then_some(limits)
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum PlanCmd {
    /// Creates a plan.
    Create {
        /// Its name.
        name: String,
        #[command(flatten)]
        args: PlanArgs,
    },
    /// Lists plans.
    List,
    /// Shows one plan.
    Show {
        /// Its name.
        name: String,
    },
    /// Changes a plan: given limits replace those of the same name, other
    /// options replace their setting.
    Update {
        /// Its name.
        name: String,
        #[command(flatten)]
        args: PlanArgs,
        /// Removes the limit or quota of this name. Repeatable.
        #[arg(long = "remove")]
        remove: Vec<String>,
    },
    /// Deletes a plan no tenant is on.
    Delete {
        /// Its name.
        name: String,
    },
}

pub(crate) fn limit_text(l: &LimitSpec) -> String {
    let mut s = format!("{}={}/{}", l.name, l.rate, l.window);
    if let Some(b) = l.burst {
        s.push_str(&format!(",burst={b}"));
    }
    if let Some(c) = l.cost {
        s.push_str(&format!(",cost={c}"));
    }
    s
}

pub(crate) fn plan_row(name: &str, p: &Plan) -> Vec<String> {
    vec![
        name.to_owned(),
        join(&p.limits, limit_text),
        join(&p.quotas, limit_text),
        p.cache_budget_bytes
            .map(|b| b.to_string())
            .unwrap_or_default(),
    ]
}

pub(crate) fn plan_json(name: &str, p: &Plan) -> serde_json::Value {
    let mut v = serde_json::to_value(p).expect("a plan serializes");
    v["name"] = name.into();
    v
}

pub(crate) async fn exec(cmd: &PlanCmd, ctx: &Ctx<'_>) -> Result {
    let (c, out) = (ctx.backend, ctx.out);
    match cmd {
        PlanCmd::Create { name, args } => {
            let p = Plan {
                limits: args.limits.clone(),
                quotas: args.quotas.clone(),
                cache_budget_bytes: args.cache_budget,
                plugin_limits: args.plugin_limits(),
            };
            c.create_plan(name, p.clone()).await?;
            out.done(&format!("plan {name} created"), plan_json(name, &p));
        }
        PlanCmd::List => {
            let state = c.state().await?;
            let mut t = Table::new(&["NAME", "LIMITS", "QUOTAS", "CACHE BUDGET"]);
            let mut json = Vec::new();
            for (name, p) in &state.spec.plans {
                t.row(plan_row(name, p));
                json.push(plan_json(name, p));
            }
            out.list(t, json);
        }
        PlanCmd::Show { name } => {
            let state = c.state().await?;
            let p = state
                .spec
                .plans
                .get(name)
                .ok_or_else(|| missing("plan", name))?;
            let tenants = state
                .spec
                .tenants
                .values()
                .filter(|t| &t.plan == name)
                .count();
            out.record(
                &[
                    ("name", name.clone()),
                    ("limits", join(&p.limits, limit_text)),
                    ("quotas", join(&p.quotas, limit_text)),
                    (
                        "cache budget",
                        p.cache_budget_bytes
                            .map(|b| b.to_string())
                            .unwrap_or_default(),
                    ),
                    (
                        "plugin limits",
                        p.plugin_limits
                            .as_ref()
                            .map(|l| serde_json::to_string(l).unwrap_or_default())
                            .unwrap_or_default(),
                    ),
                    ("tenants", tenants.to_string()),
                ],
                plan_json(name, p),
            );
        }
        PlanCmd::Update { name, args, remove } => {
            if let Some(l) = args.plugin_limits() {
                // Its plugins run under these: checked first.
                super::plugin::recheck(ctx, |s| {
                    if let Some(p) = s.plans.get_mut(name) {
                        p.plugin_limits = Some(l.over(p.plugin_limits.as_ref()));
                    }
                })
                .await?;
            }
            let p = c
                .update_plan(name, |p| {
                    p.limits.retain(|l| !remove.contains(&l.name));
                    p.quotas.retain(|l| !remove.contains(&l.name));
                    for (list, new) in
                        [(&mut p.limits, &args.limits), (&mut p.quotas, &args.quotas)]
                    {
                        for l in new {
                            match list.iter_mut().find(|x| x.name == l.name) {
                                Some(x) => *x = l.clone(),
                                None => list.push(l.clone()),
                            }
                        }
                    }
                    if args.cache_budget.is_some() {
                        p.cache_budget_bytes = args.cache_budget;
                    }
                    // Only the limits given change; the others stay.
                    if let Some(l) = args.plugin_limits() {
                        p.plugin_limits = Some(l.over(p.plugin_limits.as_ref()));
                    }
                })
                .await?;
            out.done(&format!("plan {name} updated"), plan_json(name, &p));
        }
        PlanCmd::Delete { name } => {
            ctx.confirm(&format!("delete plan {name}"))?;
            c.delete_plan(name).await?;
            out.done(
                &format!("plan {name} deleted"),
                serde_json::json!({"name": name, "deleted": true}),
            );
        }
    }
    Ok(())
}
