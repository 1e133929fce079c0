//! `cog audit`: the writes the store recorded, oldest first.

use clap::Args;

use super::Ctx;
use crate::exit::Result;
use crate::output::Table;
use crate::time::time_text;

/// Arguments of `cog audit`.
#[derive(Args, Debug)]
pub(crate) struct AuditArgs {
    /// Only the last N writes.
    #[arg(long)]
    last: Option<usize>,
}

pub(crate) async fn exec(args: &AuditArgs, ctx: &Ctx<'_>) -> Result {
    let audit = ctx.backend.audit().await?;
    let skip = args.last.map_or(0, |n| audit.len().saturating_sub(n));
    let mut t = Table::new(&["REVISION", "AT", "ACTOR", "ACTION", "TARGET"]);
    let mut json = Vec::new();
    for e in audit.iter().skip(skip) {
        t.row(vec![
            e.revision.to_string(),
            time_text(e.at / 1000),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
        ]);
        json.push(serde_json::to_value(e).unwrap_or_default());
    }
    ctx.out.list(t, json);
    Ok(())
}
