//! `cog`: manage the tenants, plans, API keys and plugins of a cog control
//! plane, from a terminal or from files in git.
//!
//! Data goes to standard output (`-o json` is stable, for scripts),
//! diagnostics to standard error. Exit codes: see [`Exit`].

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use cog_control::document::{self, Format};
use cog_control::{
    Attach, Change, Control, ControlError, KeyStatus, LimitSpec, OnFailure, Plan, PluginLimits,
    PluginSpec, Spec, Status, Tenant, Window,
};

mod output;
mod run;

use output::{Out, Table};

/// Manage a cog control plane: plans, tenants, API keys, plugins.
///
/// Exit codes: 0 success; 1 `diff` found changes; 2 bad usage or invalid
/// input; 3 the object does not exist, already exists or is in use; 4 the
/// store failed (unreachable, unreadable); 5 a destructive command was not
/// confirmed; 6 a plugin was refused.
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
    Plan(PlanCmd),
    /// Tenants: the API's customers.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// API keys (shown once, stored hashed).
    #[command(subcommand)]
    Key(KeyCmd),
    /// WebAssembly plugins run for tenants.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// A tenant's remaining budget per limit, from the shared limiter state
    /// in Redis.
    Usage {
        /// The tenant.
        tenant: String,
        /// Where the limiter keeps its state (default: the store, when it
        /// is Redis).
        #[arg(long, env = "COG_LIMITER")]
        limiter: Option<String>,
    },
    /// Makes the store match a declarative file (YAML, TOML or JSON).
    Apply(ApplyArgs),
    /// Shows what `apply` would change. Exit 0: nothing; 1: changes.
    Diff(DiffArgs),
    /// Writes the store's plans, tenants and plugins as a declarative file.
    Export {
        /// yaml, toml or json.
        #[arg(long, value_enum, default_value_t = DocFormat::Yaml)]
        format: DocFormat,
    },
    /// Shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum DocFormat {
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

#[derive(Args, Debug)]
struct PlanArgs {
    /// A rate limit: `NAME=RATE/WINDOW[,burst=N][,cost=N]`, e.g.
    /// `rps=10/1s,burst=20`. Repeatable.
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
}

impl PlanArgs {
    fn plugin_limits(&self) -> Option<PluginLimits> {
        (self.plugin_fuel.is_some()
            || self.plugin_memory.is_some()
            || self.plugin_deadline.is_some())
        .then_some(PluginLimits {
            fuel: self.plugin_fuel,
            memory_bytes: self.plugin_memory,
            deadline: self.plugin_deadline,
        })
    }
}

#[derive(Subcommand, Debug)]
enum PlanCmd {
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

#[derive(Subcommand, Debug)]
enum TenantCmd {
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
    /// Deletes a tenant and its keys.
    Delete {
        /// Its id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCmd {
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

#[derive(Subcommand, Debug)]
enum PluginCmd {
    /// Validates a module in the sandbox and installs it.
    Install {
        /// The `.wasm` file.
        file: PathBuf,
        /// Runs for this tenant. Repeatable.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// Runs for every tenant on this plan. Repeatable.
        #[arg(long = "plan")]
        plans: Vec<String>,
        /// Its name (default: the file's stem).
        #[arg(long)]
        name: Option<String>,
        /// A version label.
        #[arg(long, default_value = "")]
        version: String,
        /// Configuration handed to the plugin.
        #[arg(long, default_value = "")]
        config: String,
        /// Installed but not run until enabled.
        #[arg(long)]
        disabled: bool,
        /// When it fails (or cannot be loaded): `skip` it, or `fail` the
        /// request.
        #[arg(long = "on-error", default_value = "skip", value_parser = parse_on_failure)]
        on_error: OnFailure,
    },
    /// Lists plugins.
    List,
    /// Shows one plugin.
    Show {
        /// Its name.
        name: String,
    },
    /// Changes its configuration, version label or who it runs for.
    Update {
        /// Its name.
        name: String,
        /// New configuration.
        #[arg(long)]
        config: Option<String>,
        /// New version label.
        #[arg(long)]
        version: Option<String>,
        /// Also runs for this tenant. Repeatable.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// Also runs for this plan's tenants. Repeatable.
        #[arg(long = "plan")]
        plans: Vec<String>,
        /// No longer runs for this tenant or plan (`tenant:ID`, `plan:NAME`).
        #[arg(long = "detach")]
        detach: Vec<String>,
        /// New failure policy: `skip` or `fail`.
        #[arg(long = "on-error", value_parser = parse_on_failure)]
        on_error: Option<OnFailure>,
    },
    /// Runs it again.
    Enable {
        /// Its name.
        name: String,
    },
    /// Stops running it (it stays installed).
    Disable {
        /// Its name.
        name: String,
    },
    /// Uninstalls it.
    Delete {
        /// Its name.
        name: String,
    },
    /// Runs a module locally on a request described in JSON and prints
    /// what it did.
    Run(run::RunArgs),
}

#[derive(Args, Debug)]
struct ApplyArgs {
    /// A file, a directory of `.yaml`/`.yml`/`.toml`/`.json` files, or `-`
    /// (YAML on standard input).
    #[arg(short = 'f', long = "file")]
    file: String,
    /// Shows the changes without making them.
    #[arg(long)]
    dry_run: bool,
    /// Also deletes plans, tenants and plugins the file does not list.
    #[arg(long)]
    prune: bool,
}

#[derive(Args, Debug)]
struct DiffArgs {
    /// A file, a directory, or `-`.
    #[arg(short = 'f', long = "file")]
    file: String,
    /// Also shows what `apply --prune` would delete.
    #[arg(long)]
    prune: bool,
}

fn parse_pair(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))
}

/// How the command ended.
#[derive(Debug)]
enum Exit {
    /// 0.
    Ok,
    /// 1: `diff` found changes.
    Changes,
    /// 2: bad usage or invalid input.
    Usage(String),
    /// 3: not found, exists, in use.
    State(String),
    /// 4: the store failed.
    Store(String),
    /// 5: not confirmed.
    NotConfirmed(String),
    /// 6: a plugin was refused.
    Plugin(String),
}

impl From<ControlError> for Exit {
    fn from(e: ControlError) -> Exit {
        let text = e.to_string();
        match e {
            ControlError::Invalid(_) | ControlError::Parse { .. } | ControlError::BadUrl(_) => {
                Exit::Usage(text)
            }
            ControlError::NotFound { .. }
            | ControlError::Exists { .. }
            | ControlError::InUse { .. } => Exit::State(text),
            ControlError::Plugin(_) => Exit::Plugin(text),
            // Corrupt, Io, Redis, Schema, Conflict: the store failed.
            _ => Exit::Store(text),
        }
    }
}

type Result<T = ()> = std::result::Result<T, Exit>;

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
    eprintln!("error: {message}");
    code
}

async fn dispatch(cli: &Cli, out: &Out) -> Exit {
    let result = match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "cog", &mut script);
            out.text(&String::from_utf8_lossy(&script));
            Ok(())
        }
        Command::Plugin(PluginCmd::Run(args)) => run::run(args, out),
        command => match Control::open(&cli.store).await {
            Ok(control) => execute(cli, command, &control, out).await,
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => e,
    }
}

/// Asks before a destructive change; refuses without a terminal.
fn confirm(cli: &Cli, what: &str) -> Result {
    if cli.yes {
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

async fn execute(cli: &Cli, command: &Command, c: &Control, out: &Out) -> Result {
    match command {
        Command::Plan(cmd) => plan(cli, cmd, c, out).await,
        Command::Tenant(cmd) => tenant(cli, cmd, c, out).await,
        Command::Key(cmd) => key(cli, cmd, c, out).await,
        Command::Plugin(cmd) => plugin(cli, cmd, c, out).await,
        Command::Usage { tenant, limiter } => usage(cli, tenant, limiter.as_deref(), c, out).await,
        Command::Apply(args) => apply(cli, args, c, out).await,
        Command::Diff(args) => diff(args, c, out).await,
        Command::Export { format } => {
            let state = c.state().await?;
            out.text(&document::render(&state.spec, (*format).into()));
            Ok(())
        }
        Command::Completions { .. } => unreachable!("handled before opening the store"),
    }
}

fn limit_text(l: &LimitSpec) -> String {
    let mut s = format!("{}={}/{}", l.name, l.rate, l.window);
    if let Some(b) = l.burst {
        s.push_str(&format!(",burst={b}"));
    }
    if let Some(c) = l.cost {
        s.push_str(&format!(",cost={c}"));
    }
    s
}

fn join<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    items.iter().map(f).collect::<Vec<_>>().join(" ")
}

fn plan_row(name: &str, p: &Plan) -> Vec<String> {
    vec![
        name.to_owned(),
        join(&p.limits, limit_text),
        join(&p.quotas, limit_text),
        p.cache_budget_bytes
            .map(|b| b.to_string())
            .unwrap_or_default(),
    ]
}

fn plan_json(name: &str, p: &Plan) -> serde_json::Value {
    let mut v = serde_json::to_value(p).expect("a plan serializes");
    v["name"] = name.into();
    v
}

async fn plan(cli: &Cli, cmd: &PlanCmd, c: &Control, out: &Out) -> Result {
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
                    if let Some(l) = args.plugin_limits() {
                        p.plugin_limits = Some(l);
                    }
                })
                .await?;
            out.done(&format!("plan {name} updated"), plan_json(name, &p));
        }
        PlanCmd::Delete { name } => {
            confirm(cli, &format!("delete plan {name}"))?;
            c.delete_plan(name).await?;
            out.done(
                &format!("plan {name} deleted"),
                serde_json::json!({"name": name, "deleted": true}),
            );
        }
    }
    Ok(())
}

fn missing(kind: &'static str, id: &str) -> Exit {
    ControlError::NotFound {
        kind,
        id: id.to_owned(),
    }
    .into()
}

fn status_text(s: Status) -> &'static str {
    match s {
        Status::Active => "active",
        Status::Suspended => "suspended",
    }
}

fn tenant_json(id: &str, t: &Tenant) -> serde_json::Value {
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

async fn tenant(cli: &Cli, cmd: &TenantCmd, c: &Control, out: &Out) -> Result {
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
            let t = c.update_tenant(id, |t| t.plan = plan.clone()).await?;
            out.done(
                &format!("tenant {id} moved to plan {plan}"),
                tenant_json(id, &t),
            );
        }
        TenantCmd::Suspend { id } => {
            confirm(cli, &format!("suspend tenant {id}"))?;
            let t = c.set_status(id, Status::Suspended).await?;
            out.done(&format!("tenant {id} suspended"), tenant_json(id, &t));
        }
        TenantCmd::Resume { id } => {
            let t = c.set_status(id, Status::Active).await?;
            out.done(&format!("tenant {id} resumed"), tenant_json(id, &t));
        }
        TenantCmd::Delete { id } => {
            confirm(cli, &format!("delete tenant {id} and its keys"))?;
            c.delete_tenant(id).await?;
            out.done(
                &format!("tenant {id} deleted"),
                serde_json::json!({"id": id, "deleted": true}),
            );
        }
    }
    Ok(())
}

/// Unix seconds now.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn time_text(unix: u64) -> String {
    // Seconds since the epoch, as UTC `YYYY-MM-DDTHH:MM:SSZ`.
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

async fn key(cli: &Cli, cmd: &KeyCmd, c: &Control, out: &Out) -> Result {
    match cmd {
        KeyCmd::Create { tenant, expires } => {
            let key = c.create_key(tenant, expires.map(|w| w.0)).await?;
            if out.json() {
                out.json_value(
                    &serde_json::json!({"id": key.id, "tenant": tenant, "key": key.secret}),
                );
            } else {
                eprintln!(
                    "key {} created for tenant {tenant}; it is shown once, store it now:",
                    key.id
                );
                out.text(&format!("{}\n", key.secret));
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
            confirm(cli, &format!("revoke key {id}"))?;
            c.revoke_key(id).await?;
            out.done(
                &format!("key {id} revoked"),
                serde_json::json!({"id": id, "revoked": true}),
            );
        }
    }
    Ok(())
}

fn parse_on_failure(s: &str) -> std::result::Result<OnFailure, String> {
    match s {
        "skip" => Ok(OnFailure::Skip),
        "fail" => Ok(OnFailure::Fail),
        other => Err(format!("{other:?}: expected skip or fail")),
    }
}

fn plugin_json(name: &str, p: &PluginSpec) -> serde_json::Value {
    let mut v = serde_json::to_value(p).expect("a plugin serializes");
    v["name"] = name.into();
    v["enabled"] = p.enabled.into();
    v
}

fn attach_text(a: &Attach) -> String {
    a.tenants
        .iter()
        .map(|t| format!("tenant:{t}"))
        .chain(a.plans.iter().map(|p| format!("plan:{p}")))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn plugin(cli: &Cli, cmd: &PluginCmd, c: &Control, out: &Out) -> Result {
    match cmd {
        PluginCmd::Install {
            file,
            tenants,
            plans,
            name,
            version,
            config,
            disabled,
            on_error,
        } => {
            let name = match name {
                Some(n) => n.clone(),
                None => file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .ok_or_else(|| Exit::Usage(format!("{}: no file name", file.display())))?,
            };
            let wasm =
                std::fs::read(file).map_err(|e| Exit::Usage(format!("{}: {e}", file.display())))?;
            // Checked against every plan it may run under.
            let state = c.state().await?;
            let mut plan_limits: Vec<Option<PluginLimits>> = plans
                .iter()
                .chain(
                    tenants
                        .iter()
                        .filter_map(|t| state.spec.tenants.get(t).map(|t| &t.plan)),
                )
                .map(|p| {
                    state
                        .spec
                        .plans
                        .get(p)
                        .and_then(|p| p.plugin_limits.clone())
                })
                .collect();
            if plan_limits.is_empty() {
                plan_limits.push(None);
            }
            let spec = PluginSpec {
                digest: String::new(),
                version: version.clone(),
                attach: Attach {
                    tenants: tenants.clone(),
                    plans: plans.clone(),
                },
                config: config.clone(),
                limits: None,
                enabled: !disabled,
                file: None,
                on_error: *on_error,
            };
            run::validate(&name, &wasm, &plan_limits)?;
            let digest = c.install_plugin(&name, &wasm, spec.clone()).await?;
            let _ = cli;
            out.done(
                &format!("plugin {name} installed ({digest})"),
                plugin_json(
                    &name,
                    &PluginSpec {
                        digest: digest.clone(),
                        ..spec
                    },
                ),
            );
        }
        PluginCmd::List => {
            let state = c.state().await?;
            let mut t = Table::new(&["NAME", "VERSION", "STATUS", "RUNS FOR", "DIGEST"]);
            let mut json = Vec::new();
            for (name, p) in &state.spec.plugins {
                t.row(vec![
                    name.clone(),
                    p.version.clone(),
                    if p.enabled { "enabled" } else { "disabled" }.into(),
                    attach_text(&p.attach),
                    p.digest.chars().take(19).collect(),
                ]);
                json.push(plugin_json(name, p));
            }
            out.list(t, json);
        }
        PluginCmd::Show { name } => {
            let state = c.state().await?;
            let p = state
                .spec
                .plugins
                .get(name)
                .ok_or_else(|| missing("plugin", name))?;
            out.record(
                &[
                    ("name", name.clone()),
                    ("version", p.version.clone()),
                    (
                        "status",
                        if p.enabled { "enabled" } else { "disabled" }.into(),
                    ),
                    ("runs for", attach_text(&p.attach)),
                    ("digest", p.digest.clone()),
                    ("config", p.config.clone()),
                ],
                plugin_json(name, p),
            );
        }
        PluginCmd::Update {
            name,
            config,
            version,
            tenants,
            plans,
            detach,
            on_error,
        } => {
            if let Some(bad) = detach
                .iter()
                .find(|d| !d.starts_with("tenant:") && !d.starts_with("plan:"))
            {
                return Err(Exit::Usage(format!(
                    "--detach {bad}: expected tenant:ID or plan:NAME"
                )));
            }
            let p = c
                .update_plugin(name, |p| {
                    if let Some(cfg) = config {
                        p.config = cfg.clone();
                    }
                    if let Some(v) = version {
                        p.version = v.clone();
                    }
                    if let Some(policy) = on_error {
                        p.on_error = *policy;
                    }
                    for t in tenants {
                        if !p.attach.tenants.contains(t) {
                            p.attach.tenants.push(t.clone());
                        }
                    }
                    for pl in plans {
                        if !p.attach.plans.contains(pl) {
                            p.attach.plans.push(pl.clone());
                        }
                    }
                    for d in detach {
                        match d.split_once(':') {
                            Some(("tenant", t)) => p.attach.tenants.retain(|x| x != t),
                            Some(("plan", pl)) => p.attach.plans.retain(|x| x != pl),
                            _ => {}
                        }
                    }
                })
                .await?;
            out.done(&format!("plugin {name} updated"), plugin_json(name, &p));
        }
        PluginCmd::Enable { name } | PluginCmd::Disable { name } => {
            let enabled = matches!(cmd, PluginCmd::Enable { .. });
            let p = c.update_plugin(name, |p| p.enabled = enabled).await?;
            let word = if enabled { "enabled" } else { "disabled" };
            out.done(&format!("plugin {name} {word}"), plugin_json(name, &p));
        }
        PluginCmd::Delete { name } => {
            confirm(cli, &format!("delete plugin {name}"))?;
            c.delete_plugin(name).await?;
            out.done(
                &format!("plugin {name} deleted"),
                serde_json::json!({"name": name, "deleted": true}),
            );
        }
        PluginCmd::Run(_) => unreachable!("runs without a store"),
    }
    Ok(())
}

fn policy_text(kind: &cog_ratelimit::LimitKind) -> String {
    use cog_ratelimit::LimitKind;
    match *kind {
        LimitKind::Gcra {
            count,
            period,
            burst,
        } => {
            format!("{count}/{} burst {burst}", Window(period))
        }
        LimitKind::SlidingWindow { max, window } => format!("{max}/{} sliding", Window(window)),
        LimitKind::Concurrency { max, .. } => format!("{max} in flight"),
        _ => "other".into(),
    }
}

async fn usage(cli: &Cli, tenant: &str, limiter: Option<&str>, c: &Control, out: &Out) -> Result {
    let url = limiter
        .map(str::to_owned)
        .or_else(|| cli.store.starts_with("redis").then(|| cli.store.clone()))
        .ok_or_else(|| {
            Exit::Usage(
                "usage reads the shared limiter state in Redis: pass --limiter redis://… \
                 (with the file store, limits are counted inside each service process)"
                    .into(),
            )
        })?;
    let directory = cog_control::Directory::start(c.store().clone()).await?;
    let ctx = directory
        .tenant(tenant)
        .ok_or_else(|| missing("tenant", tenant))?;
    let client = cog_ratelimit::connect(&url)
        .await
        .map_err(|e| Exit::Store(format!("limiter {url}: {e}")))?;
    let store = cog_ratelimit::RedisStore::new(client);
    let mut t = Table::new(&["LIMIT", "POLICY", "REMAINING", "RESETS IN"]);
    let mut json = Vec::new();
    if let Some(quota) = &ctx.quota {
        use cog_ratelimit::Store as _;
        let decision = store
            .inspect(tenant, quota)
            .await
            .map_err(|e| Exit::Store(format!("limiter {url}: {e}")))?;
        for (limit, status) in quota.limits().iter().zip(decision.statuses()) {
            let name = limit.name().into_owned();
            let policy = policy_text(limit.kind());
            t.row(vec![
                name.clone(),
                policy,
                status.remaining.to_string(),
                format!("{:.1}s", status.reset_after.as_secs_f64()),
            ]);
            json.push(serde_json::json!({
                "name": name,
                "remaining": status.remaining,
                "reset_after_ms": status.reset_after.as_millis() as u64,
            }));
        }
    }
    out.list(t, json);
    Ok(())
}

/// Reads a document, a directory of them (merged), or standard input;
/// plugin `file`s are read relative to the document, and their digests
/// filled in.
fn read_spec(source: &str) -> Result<(Spec, std::collections::BTreeMap<String, Vec<u8>>)> {
    let mut docs: Vec<(PathBuf, String, Format)> = Vec::new();
    if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Exit::Usage(format!("standard input: {e}")))?;
        docs.push((PathBuf::from("."), text, Format::Yaml));
    } else {
        let path = Path::new(source);
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Exit::Usage(format!("{source}: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "toml" | "json")
                    )
                })
                .collect();
            v.sort();
            v
        } else {
            vec![path.to_owned()]
        };
        for f in files {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| Exit::Usage(format!("{}: {e}", f.display())))?;
            let format = Format::of(&f);
            docs.push((f, text, format));
        }
    }
    let mut spec = Spec::default();
    let mut blobs = std::collections::BTreeMap::new();
    for (path, text, format) in docs {
        let what = path.display().to_string();
        let mut part = parse_partial(&text, format, &what)?;
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        for (name, p) in &mut part.plugins {
            if let Some(file) = &p.file {
                let wasm = std::fs::read(base.join(file)).map_err(|e| {
                    Exit::Usage(format!("{what}: plugins.{name}.file `{file}`: {e}"))
                })?;
                p.digest = cog_control::model::digest(&wasm);
                blobs.insert(p.digest.clone(), wasm);
            }
        }
        if let Some((kind, dup)) = merge(&mut spec, part).into_iter().next() {
            return Err(Exit::Usage(format!(
                "{what}: {kind} `{dup}` is defined twice"
            )));
        }
    }
    spec.validate().map_err(|e| Exit::Usage(e.to_string()))?;
    Ok((spec, blobs))
}

/// Parses one document without cross-document checks (a tenant may be in
/// one file and its plan in another): those run once all are merged.
fn parse_partial(text: &str, format: Format, what: &str) -> Result<Spec> {
    Ok(document::parse_unchecked(text, format, what)?)
}

fn merge(into: &mut Spec, part: Spec) -> Vec<(&'static str, String)> {
    let mut dups = Vec::new();
    for (k, v) in part.plans {
        if into.plans.insert(k.clone(), v).is_some() {
            dups.push(("plan", k));
        }
    }
    for (k, v) in part.tenants {
        if into.tenants.insert(k.clone(), v).is_some() {
            dups.push(("tenant", k));
        }
    }
    for (k, v) in part.plugins {
        if into.plugins.insert(k.clone(), v).is_some() {
            dups.push(("plugin", k));
        }
    }
    dups
}

fn changes_out(out: &Out, changes: &[Change], applied: bool) {
    if out.json() {
        out.json_value(&serde_json::json!({"changes": changes, "applied": applied}));
        return;
    }
    if changes.is_empty() {
        eprintln!("no changes");
        return;
    }
    let mut text = String::new();
    for ch in changes {
        let sign = match ch.action {
            "create" => '+',
            "delete" => '-',
            _ => '~',
        };
        text.push_str(&format!("{sign} {} {}\n", ch.kind, ch.id));
    }
    out.text(&text);
}

async fn apply(cli: &Cli, args: &ApplyArgs, c: &Control, out: &Out) -> Result {
    let (spec, blobs) = read_spec(&args.file)?;
    let planned = c.diff(&spec, args.prune).await?;
    if args.dry_run || planned.is_empty() {
        changes_out(out, &planned, false);
        return Ok(());
    }
    if planned.iter().any(|ch| ch.action == "delete") {
        let n = planned.iter().filter(|ch| ch.action == "delete").count();
        confirm(cli, &format!("apply, deleting {n} object(s)"))?;
    }
    // Plugins are checked in the sandbox before anything is written.
    let progress = output::Progress::start("validating plugins in the sandbox");
    for (name, p) in &spec.plugins {
        if let Some(wasm) = blobs.get(&p.digest) {
            let limits: Vec<Option<PluginLimits>> = p
                .attach
                .plans
                .iter()
                .chain(
                    p.attach
                        .tenants
                        .iter()
                        .filter_map(|t| spec.tenants.get(t).map(|t| &t.plan)),
                )
                .map(|pl| spec.plans.get(pl).and_then(|pl| pl.plugin_limits.clone()))
                .chain([None])
                .collect();
            run::validate(name, wasm, &limits)?;
        }
    }
    progress.finish();
    let changes = c.apply(&spec, &blobs, args.prune).await?;
    changes_out(out, &changes, true);
    Ok(())
}

async fn diff(args: &DiffArgs, c: &Control, out: &Out) -> Result {
    let (spec, _) = read_spec(&args.file)?;
    let changes = c.diff(&spec, args.prune).await?;
    changes_out(out, &changes, false);
    if changes.is_empty() {
        Ok(())
    } else {
        Err(Exit::Changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn dates_print_in_utc() {
        assert_eq!(time_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(time_text(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(time_text(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
