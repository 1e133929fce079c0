//! `cog token`: admin API tokens, shown once and stored hashed.

use clap::{Subcommand, ValueEnum};
use cog_control::Scope;

use super::Ctx;
use crate::exit::Result;
use crate::output::Table;
use crate::time::time_text;

/// What a token may do.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ScopeArg {
    /// Read everything.
    Read,
    /// Read and change everything.
    Write,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCmd {
    /// Makes a token for the admin API (`cog serve`); it is shown once.
    Create {
        /// What it is for (listed, and named in the audit log by id).
        #[arg(long)]
        name: String,
        /// What it may do.
        #[arg(long, value_enum, default_value_t = ScopeArg::Read)]
        scope: ScopeArg,
    },
    /// Lists tokens (never the tokens themselves).
    List,
    /// Revokes a token by id.
    Revoke {
        /// The token's id (its visible prefix).
        id: String,
    },
}

pub(crate) async fn exec(cmd: &TokenCmd, ctx: &Ctx<'_>) -> Result {
    let (c, out) = (ctx.backend.control("token")?, ctx.out);
    match cmd {
        TokenCmd::Create { name, scope } => {
            let scope = match scope {
                ScopeArg::Read => Scope::Read,
                ScopeArg::Write => Scope::Write,
            };
            let token = c.create_token(name, scope).await?;
            if out.json() {
                out.json_value(&serde_json::json!({
                    "id": token.id, "name": name, "scope": scope.as_str(), "token": token.secret,
                }));
            } else {
                eprintln!(
                    "token {} ({}) created; it is shown once, store it now:",
                    token.id,
                    scope.as_str()
                );
                out.text(&format!("{}\n", token.secret));
            }
        }
        TokenCmd::List => {
            let state = c.state().await?;
            let mut t = Table::new(&["ID", "NAME", "SCOPE", "CREATED", "STATUS"]);
            let mut json = Vec::new();
            for (id, tok) in &state.tokens {
                let status = if tok.revoked { "revoked" } else { "active" };
                t.row(vec![
                    id.clone(),
                    tok.name.clone(),
                    tok.scope.as_str().into(),
                    time_text(tok.created),
                    status.into(),
                ]);
                json.push(serde_json::json!({
                    "id": id, "name": tok.name, "scope": tok.scope.as_str(),
                    "created": tok.created, "status": status,
                }));
            }
            out.list(t, json);
        }
        TokenCmd::Revoke { id } => {
            ctx.confirm(&format!("revoke token {id}"))?;
            c.revoke_token(id).await?;
            out.done(
                &format!("token {id} revoked"),
                serde_json::json!({"id": id, "revoked": true}),
            );
        }
    }
    Ok(())
}
