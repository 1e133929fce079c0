//! `cog`: manage the tenants, plans, API keys and plugins of a cog control
//! plane, from a terminal or from files in git.
//!
//! Data goes to standard output (`-o json` is stable, for scripts),
//! diagnostics to standard error. Exit codes: see [`exit::Exit`].

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use cog_control::Control;

mod backend;
mod commands;
mod exit;
mod output;
mod plugin_data;
mod remote;
mod time;

use backend::Backend;
use commands::{Ctx, StoreCommand};
use exit::Exit;
use output::Out;
use remote::Remote;

/// Manage a cog control plane: plans, tenants, API keys, plugins.
///
/// Works on the store (`--store`) or through a running admin API
/// (`--server`, token in `COG_TOKEN`), with the same verbs and output.
///
/// Exit codes: 0 success; 1 `diff` found changes; 2 bad usage or invalid
/// input (a token the server refuses too); 3 the object does not exist,
/// already exists or is in use; 4 the store (or the server) failed
/// (unreachable, unreadable); 5 a destructive command was not confirmed;
/// 6 a plugin was refused.
#[derive(Parser, Debug)]
#[command(name = "cog", version)]
struct Cli {
    /// The store: `file:PATH` or `redis://HOST:PORT`.
    #[arg(
        long,
        env = "COG_STORE",
        default_value = "file:./cog-state.json",
        global = true
    )]
    store: String,
    /// A running admin API (`cog serve`) to work through instead of the
    /// store, e.g. `http://127.0.0.1:8081`; the admin token comes from
    /// `COG_TOKEN`. Takes precedence over `--store`.
    #[arg(long, env = "COG_SERVER", global = true)]
    server: Option<String>,
    /// Where the services' plugins keep their data: a `redis://` URL,
    /// `NAME=URL,…` as the services' `COG_DEPLOYMENTS`, or `none`.
    /// Deleting a tenant or a plugin (`delete`, `apply --prune`, the admin
    /// API of `cog serve`) clears what plugins stored for it there first;
    /// if that fails, nothing is deleted. With `NAME=URL,…`, `placement
    /// move` copies the partition's plugin data to its new deployment
    /// (as the services do on first use, within their 24 h window).
    /// Default: the store, when it is Redis.
    #[arg(long, env = "COG_PLUGIN_DATA", global = true)]
    plugin_data: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table, global = true)]
    output: OutputFormat,
    /// Do not ask before destructive changes.
    #[arg(short = 'y', long, global = true)]
    yes: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    /// Aligned columns, for people.
    Table,
    /// JSON, stable, for scripts.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Subscription plans: the limits their tenants get.
    #[command(subcommand)]
    Plan(commands::plan::PlanCmd),
    /// Tenants: the API's customers.
    #[command(subcommand)]
    Tenant(commands::tenant::TenantCmd),
    /// API keys (shown once, stored hashed).
    #[command(subcommand)]
    Key(commands::key::KeyCmd),
    /// WebAssembly plugins run for tenants.
    #[command(subcommand)]
    Plugin(commands::plugin::PluginCmd),
    /// A tenant's remaining budget per limit, from the shared limiter state
    /// in Redis.
    Usage(commands::usage::UsageArgs),
    /// Makes the store match a declarative file (YAML, TOML or JSON).
    Apply(commands::apply::ApplyArgs),
    /// Shows what `apply` would change. Exit 0: nothing; 1: changes.
    Diff(commands::diff::DiffArgs),
    /// Writes the store's plans, tenants and plugins as a declarative file.
    Export(commands::export::ExportArgs),
    /// Admin API tokens (shown once, stored hashed).
    #[command(subcommand)]
    Token(commands::token::TokenCmd),
    /// The writes the store recorded: who, what, when, which revision.
    Audit(commands::audit::AuditArgs),
    /// Which Redis deployment holds each of the 256 tenant partitions.
    #[command(subcommand)]
    Placement(commands::placement::PlacementCmd),
    /// Runs the admin HTTP API over the store (OpenAPI at /openapi.json).
    Serve(commands::serve::ServeArgs),
    /// Shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(4);
        }
    };
    let out = Out::new(cli.output == OutputFormat::Json);
    let code = match runtime.block_on(dispatch(&cli, &out)) {
        Exit::Ok => 0,
        Exit::Changes => 1,
        Exit::Usage(m) => fail(2, &m),
        Exit::State(m) => fail(3, &m),
        Exit::Store(m) => fail(4, &m),
        Exit::NotConfirmed(m) => fail(5, &m),
        Exit::Plugin(m) => fail(6, &m),
    };
    ExitCode::from(code)
}

fn fail(code: u8, message: &str) -> u8 {
    // Messages quote stored text and the server's problem details.
    eprintln!("error: {}", output::shown(message, true));
    code
}

async fn dispatch(cli: &Cli, out: &Out) -> Exit {
    let command = match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "cog", &mut script);
            out.text(&String::from_utf8_lossy(&script));
            return Exit::Ok;
        }
        // Runs a plugin file locally: no store.
        Command::Plugin(commands::plugin::PluginCmd::Run(args)) => {
            return match commands::plugin::run::run(args, out) {
                Ok(()) => Exit::Ok,
                Err(e) => e,
            };
        }
        Command::Plan(cmd) => StoreCommand::Plan(cmd),
        Command::Tenant(cmd) => StoreCommand::Tenant(cmd),
        Command::Key(cmd) => StoreCommand::Key(cmd),
        Command::Plugin(cmd) => StoreCommand::Plugin(cmd),
        Command::Usage(args) => StoreCommand::Usage(args),
        Command::Apply(args) => StoreCommand::Apply(args),
        Command::Diff(args) => StoreCommand::Diff(args),
        Command::Export(args) => StoreCommand::Export(args),
        Command::Token(cmd) => StoreCommand::Token(cmd),
        Command::Audit(args) => StoreCommand::Audit(args),
        Command::Placement(cmd) => StoreCommand::Placement(cmd),
        Command::Serve(args) => StoreCommand::Serve(args),
    };
    let backend = match &cli.server {
        Some(url) => match Remote::new(url, std::env::var("COG_TOKEN").ok()) {
            Ok(remote) => Backend::Server(Box::new(remote)),
            Err(e) => return e,
        },
        None => match Control::open(&cli.store).await {
            Ok(control) if command.touches_plugin_data() => {
                match plugin_data::attach(control, cli.plugin_data.as_deref(), &cli.store).await {
                    Ok(control) => Backend::Store(control.actor("cli")),
                    Err(e) => return e,
                }
            }
            Ok(control) => Backend::Store(control.actor("cli")),
            Err(e) => return e.into(),
        },
    };
    let ctx = Ctx {
        backend: &backend,
        out,
        yes: cli.yes,
        store: &cli.store,
    };
    match commands::execute(command, &ctx).await {
        Ok(()) => Exit::Ok,
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
