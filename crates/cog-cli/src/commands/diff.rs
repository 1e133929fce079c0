//! `cog diff`: what `apply` would change.

use clap::Args;

use super::Ctx;
use super::apply::{changes_out, read_spec};
use crate::exit::{Exit, Result};

#[derive(Args, Debug)]
pub(crate) struct DiffArgs {
    /// A file, a directory, or `-`.
    #[arg(short = 'f', long = "file")]
    file: String,
    /// Also shows what `apply --prune` would delete.
    #[arg(long)]
    prune: bool,
}

pub(crate) async fn exec(args: &DiffArgs, ctx: &Ctx<'_>) -> Result {
    let (c, out) = (ctx.backend, ctx.out);
    let (spec, _) = read_spec(&args.file)?;
    let changes = c.diff(&spec, args.prune).await?;
    changes_out(out, &changes, false);
    if changes.is_empty() {
        Ok(())
    } else {
        Err(Exit::Changes)
    }
}
