//! `cog key`: API keys, shown once and stored hashed.

use clap::Subcommand;
use cog_control::Window;

use super::{Ctx, missing};
use crate::exit::Result;
use crate::output::Table;
use crate::time::{now, time_text};

#[derive(Subcommand, Debug)]
pub(crate) enum KeyCmd {
    /// Issues a key; it is shown once.
    Create {
        /// The tenant it authenticates.
        #[arg(long)]
        tenant: String,
        /// Lifetime, e.g. `30d`; forever if not given.
        #[arg(long)]
        expires: Option<Window>,
    },
    /// Lists keys (never the keys themselves).
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Shows one key (never the key itself).
    Show {
        /// The key's id.
        id: String,
    },
    /// Revokes a key by id.
    Revoke {
        /// The key's id (its visible prefix).
        id: String,
    },
}

pub(crate) async fn exec(cmd: &KeyCmd, ctx: &Ctx<'_>) -> Result {
    let (c, out) = (ctx.backend, ctx.out);
    match cmd {
        KeyCmd::Create { tenant, expires } => {
            let (id, key) = c.create_key(tenant, expires.map(|w| w.0)).await?;
            if out.json() {
                out.json_value(&serde_json::json!({"id": id, "tenant": tenant, "key": key}));
            } else {
                eprintln!(
                    "key {} created for tenant {tenant}; it is shown once, store it now:",
                    id
                );
                out.text(&format!("{key}\n"));
            }
        }
        KeyCmd::List { tenant } => {
            let state = c.state().await?;
            let mut t = Table::new(&["ID", "TENANT", "CREATED", "EXPIRES", "STATUS"]);
            let mut json = Vec::new();
            for (id, k) in &state.keys {
                if tenant.as_ref().is_some_and(|x| *x != k.tenant) {
                    continue;
                }
                t.row(vec![
                    id.clone(),
                    k.tenant.clone(),
                    time_text(k.created),
                    k.expires.map(time_text).unwrap_or_else(|| "never".into()),
                    k.status(now()).as_str().into(),
                ]);
                json.push(serde_json::json!({
                    "id": id, "tenant": k.tenant, "created": k.created,
                    "expires": k.expires, "revoked": k.revoked,
                    "status": k.status(now()).as_str(),
                }));
            }
            out.list(t, json);
        }
        KeyCmd::Show { id } => {
            let state = c.state().await?;
            let k = state.keys.get(id).ok_or_else(|| missing("key", id))?;
            out.record(
                &[
                    ("id", id.clone()),
                    ("tenant", k.tenant.clone()),
                    ("created", time_text(k.created)),
                    (
                        "expires",
                        k.expires.map(time_text).unwrap_or_else(|| "never".into()),
                    ),
                    ("status", k.status(now()).as_str().into()),
                ],
                serde_json::json!({
                    "id": id, "tenant": k.tenant, "created": k.created,
                    "expires": k.expires, "revoked": k.revoked,
                    "status": k.status(now()).as_str(),
                }),
            );
        }
        KeyCmd::Revoke { id } => {
            ctx.confirm(&format!("revoke key {id}"))?;
            c.revoke_key(id).await?;
            out.done(
                &format!("key {id} revoked"),
                serde_json::json!({"id": id, "revoked": true}),
            );
        }
    }
    Ok(())
}
