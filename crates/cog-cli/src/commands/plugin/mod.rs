//! `cog plugin`: WebAssembly and Python plugins run for tenants.

pub(crate) mod run;

use std::path::PathBuf;

use clap::Subcommand;
use cog_control::{Attach, OnFailure, PluginLang, PluginSpec, Spec};

use super::{Ctx, missing};
use crate::backend::Backend;
use crate::exit::{Exit, Result};
use crate::output::Table;

#[derive(Subcommand, Debug)]
pub(crate) enum PluginCmd {
    /// Validates a plugin in the sandbox and installs it.
    Install {
        /// The `.wasm` module or `.py` source.
        file: PathBuf,
        /// What the file is (default: `python` for `.py`, else `wasm`).
        #[arg(long, value_parser = parse_lang)]
        lang: Option<PluginLang>,
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
    /// Uninstalls it, clearing what it stored for every tenant.
    Delete {
        /// Its name.
        name: String,
    },
    /// Runs a module locally on a request described in JSON and prints
    /// what it did.
    Run(run::RunArgs),
}

pub(crate) fn parse_lang(s: &str) -> std::result::Result<PluginLang, String> {
    match s {
        "wasm" => Ok(PluginLang::Wasm),
        "python" => Ok(PluginLang::Python),
        other => Err(format!("{other:?}: expected wasm or python")),
    }
}

pub(crate) fn parse_on_failure(s: &str) -> std::result::Result<OnFailure, String> {
    match s {
        "skip" => Ok(OnFailure::Skip),
        "fail" => Ok(OnFailure::Fail),
        other => Err(format!("{other:?}: expected skip or fail")),
    }
}

pub(crate) fn plugin_json(name: &str, p: &PluginSpec) -> serde_json::Value {
    let mut v = serde_json::to_value(p).expect("a plugin serializes");
    v["name"] = name.into();
    v["enabled"] = p.enabled.into();
    v
}

pub(crate) fn attach_text(a: &Attach) -> String {
    a.tenants
        .iter()
        .map(|t| format!("tenant:{t}"))
        .chain(a.plans.iter().map(|p| format!("plan:{p}")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// On the store itself, what `cog serve` checks of a change: every plugin
/// `after` makes run under limits it was not checked under (another
/// plan's, a plan's new plugin limits) is loaded in the sandbox, its
/// stored bytes under those limits. Through `--server` the server checks;
/// both print the same (no progress line).
pub(crate) async fn recheck(ctx: &Ctx<'_>, after: impl FnOnce(&mut Spec)) -> Result {
    let Backend::Store(control) = ctx.backend else {
        return Ok(());
    };
    let before = control.state().await?.spec;
    let mut next = before.clone();
    after(&mut next);
    // A document the write will refuse as invalid loads nothing.
    if next.validate().is_err() {
        return Ok(());
    }
    for due in before.plugins_to_recheck(&next) {
        // Bytes that are not there are the directory's to report.
        if let Some(bytes) = control.store().get_blob(&due.digest).await? {
            run::check(&due.name, due.lang, &bytes, &due.limits)?;
        }
    }
    Ok(())
}

pub(crate) async fn exec(cmd: &PluginCmd, ctx: &Ctx<'_>) -> Result {
    let (c, out) = (ctx.backend, ctx.out);
    match cmd {
        PluginCmd::Install {
            file,
            lang,
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
            let plan_limits = state.spec.plugin_limits_of(&Attach {
                tenants: tenants.clone(),
                plans: plans.clone(),
            });
            let lang = lang.unwrap_or_else(|| PluginLang::of_path(file));
            let spec = PluginSpec {
                digest: String::new(),
                lang,
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
            run::validate(&name, lang, &wasm, &plan_limits)?;
            let digest = c.install_plugin(&name, &wasm, spec.clone()).await?;
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
            let edit = |p: &mut PluginSpec| {
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
            };
            recheck(ctx, |s| {
                if let Some(p) = s.plugins.get_mut(name) {
                    edit(p);
                }
            })
            .await?;
            let p = c.update_plugin(name, edit).await?;
            out.done(&format!("plugin {name} updated"), plugin_json(name, &p));
        }
        PluginCmd::Enable { name } | PluginCmd::Disable { name } => {
            let enabled = matches!(cmd, PluginCmd::Enable { .. });
            let p = c.update_plugin(name, |p| p.enabled = enabled).await?;
            let word = if enabled { "enabled" } else { "disabled" };
            out.done(&format!("plugin {name} {word}"), plugin_json(name, &p));
        }
        PluginCmd::Delete { name } => {
            ctx.confirm(&format!("delete plugin {name} and its data"))?;
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
