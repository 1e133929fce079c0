//! `cog export`: the store as a declarative file.

use clap::{Args, ValueEnum};
use cog_control::document::{self, Format};

use super::Ctx;
use crate::exit::Result;

/// Arguments of `cog export`.
#[derive(Args, Debug)]
pub(crate) struct ExportArgs {
    /// yaml, toml or json.
    #[arg(long, value_enum, default_value_t = DocFormat::Yaml)]
    format: DocFormat,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum DocFormat {
    Yaml,
    Toml,
    Json,
}

impl From<DocFormat> for Format {
    fn from(f: DocFormat) -> Format {
        match f {
            DocFormat::Yaml => Format::Yaml,
            DocFormat::Toml => Format::Toml,
            DocFormat::Json => Format::Json,
        }
    }
}

pub(crate) async fn exec(args: &ExportArgs, ctx: &Ctx<'_>) -> Result {
    let state = ctx.backend.state().await?;
    ctx.out
        .text(&document::render(&state.spec, args.format.into()));
    Ok(())
}
