//! `cog apply`: make the store match declarative files.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;
use cog_control::document::{self, Format};
use cog_control::{Change, Spec};

use super::Ctx;
use crate::exit::{Exit, Result};
use crate::output::Out;

#[derive(Args, Debug)]
pub(crate) struct ApplyArgs {
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

/// Reads a document, a directory of them (merged), or standard input;
/// plugin `file`s are read relative to the document, and their digests
/// filled in.
pub(crate) fn read_spec(
    source: &str,
) -> Result<(Spec, std::collections::BTreeMap<String, Vec<u8>>)> {
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
                p.digest = cog_control::digest(&wasm);
                if cog_control::PluginLang::of_path(Path::new(file))
                    == cog_control::PluginLang::Python
                {
                    p.lang = cog_control::PluginLang::Python;
                }
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
pub(crate) fn parse_partial(text: &str, format: Format, what: &str) -> Result<Spec> {
    Ok(document::parse_unchecked(text, format, what)?)
}

pub(crate) fn merge(into: &mut Spec, part: Spec) -> Vec<(&'static str, String)> {
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

pub(crate) fn changes_out(out: &Out, changes: &[Change], applied: bool) {
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

pub(crate) async fn exec(args: &ApplyArgs, ctx: &Ctx<'_>) -> Result {
    let (c, out) = (ctx.backend, ctx.out);
    let (spec, blobs) = read_spec(&args.file)?;
    let planned = c.diff(&spec, args.prune).await?;
    if args.dry_run || planned.is_empty() {
        changes_out(out, &planned, false);
        return Ok(());
    }
    if planned.iter().any(|ch| ch.action == "delete") {
        let n = planned.iter().filter(|ch| ch.action == "delete").count();
        ctx.confirm(&format!("apply, deleting {n} object(s)"))?;
    }
    // Plugins are checked in the sandbox before anything is written.
    let progress = crate::output::Progress::start("validating plugins in the sandbox");
    for (name, p) in &spec.plugins {
        if let Some(wasm) = blobs.get(&p.digest) {
            // Under every plan it runs for (the defaults when none), with
            // its own limits over each: what it will run under, as
            // `plugin install` and the server check.
            let limits = spec.plugin_limits_for(&p.attach, p.limits.as_ref());
            super::plugin::run::validate(name, p.lang, wasm, &limits)?;
        }
    }
    progress.finish();
    // … and those it names by stored bytes, under what it moves them to.
    super::plugin::recheck(ctx, |s| *s = s.applied(&spec, args.prune)).await?;
    let changes = c.apply(&spec, &blobs, args.prune).await?;
    changes_out(out, &changes, true);
    Ok(())
}
