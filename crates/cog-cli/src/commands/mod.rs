//! One module per noun (and per larger verb), each owning its clap
//! arguments and its `exec`; [`execute`] is the dispatch table.

pub(crate) mod apply;
pub(crate) mod audit;
pub(crate) mod diff;
pub(crate) mod export;
pub(crate) mod key;
pub(crate) mod placement;
pub(crate) mod plan;
pub(crate) mod plugin;
pub(crate) mod serve;
pub(crate) mod tenant;
pub(crate) mod token;
pub(crate) mod usage;

use std::io::{IsTerminal, Write};

use cog_control::ControlError;

use crate::backend::Backend;

use crate::exit::{Exit, Result};
use crate::output::Out;

/// What every command runs with: the opened store (or the API in front
/// of one), the output, and the global flags it needs.
pub(crate) struct Ctx<'a> {
    pub(crate) backend: &'a Backend,
    pub(crate) out: &'a Out,
    /// `--yes`: destructive changes need no confirmation.
    pub(crate) yes: bool,
    /// `--store`, as given.
    pub(crate) store: &'a str,
}

impl Ctx<'_> {
    /// Asks before a destructive change; refuses without a terminal.
    pub(crate) fn confirm(&self, what: &str) -> Result {
        if self.yes {
            return Ok(());
        }
        if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
            return Err(Exit::NotConfirmed(format!(
                "{what}: not confirmed (no terminal to ask on; pass --yes)"
            )));
        }
        eprint!("{what}? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if matches!(answer.trim(), "y" | "Y" | "yes") {
            Ok(())
        } else {
            Err(Exit::NotConfirmed(format!("{what}: cancelled")))
        }
    }
}

/// A command that needs the store, with the store opened.
#[derive(Debug)]
pub(crate) enum StoreCommand<'a> {
    Plan(&'a plan::PlanCmd),
    Tenant(&'a tenant::TenantCmd),
    Key(&'a key::KeyCmd),
    Plugin(&'a plugin::PluginCmd),
    Usage(&'a usage::UsageArgs),
    Apply(&'a apply::ApplyArgs),
    Diff(&'a diff::DiffArgs),
    Export(&'a export::ExportArgs),
    Token(&'a token::TokenCmd),
    Audit(&'a audit::AuditArgs),
    Placement(&'a placement::PlacementCmd),
    Serve(&'a serve::ServeArgs),
}

impl StoreCommand<'_> {
    /// Whether it may delete a tenant or a plugin (and so clear plugin
    /// data) or move a partition (and so copy it): the others need no
    /// connection to it.
    pub(crate) fn touches_plugin_data(&self) -> bool {
        matches!(
            self,
            StoreCommand::Tenant(tenant::TenantCmd::Delete { .. })
                | StoreCommand::Plugin(plugin::PluginCmd::Delete { .. })
                | StoreCommand::Placement(placement::PlacementCmd::Move { .. })
                | StoreCommand::Apply(_)
                | StoreCommand::Serve(_)
        )
    }
}

/// Runs `command` against the opened store.
pub(crate) async fn execute(command: StoreCommand<'_>, ctx: &Ctx<'_>) -> Result {
    match command {
        StoreCommand::Plan(cmd) => plan::exec(cmd, ctx).await,
        StoreCommand::Tenant(cmd) => tenant::exec(cmd, ctx).await,
        StoreCommand::Key(cmd) => key::exec(cmd, ctx).await,
        StoreCommand::Plugin(cmd) => plugin::exec(cmd, ctx).await,
        StoreCommand::Usage(args) => usage::exec(args, ctx).await,
        StoreCommand::Apply(args) => apply::exec(args, ctx).await,
        StoreCommand::Diff(args) => diff::exec(args, ctx).await,
        StoreCommand::Export(args) => export::exec(args, ctx).await,
        StoreCommand::Token(cmd) => token::exec(cmd, ctx).await,
        StoreCommand::Audit(args) => audit::exec(args, ctx).await,
        StoreCommand::Placement(cmd) => placement::exec(cmd, ctx).await,
        StoreCommand::Serve(args) => serve::exec(args, ctx).await,
    }
}

pub(crate) fn missing(kind: &'static str, id: &str) -> Exit {
    ControlError::NotFound {
        kind,
        id: id.to_owned(),
    }
    .into()
}

pub(crate) fn join<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    items.iter().map(f).collect::<Vec<_>>().join(" ")
}

pub(crate) fn parse_pair(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))
}
