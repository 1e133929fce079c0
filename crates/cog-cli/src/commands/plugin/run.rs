//! `cog plugin run`, and plugin validation in the sandbox.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use clap::Args;
use cog_control::{PluginLang, PluginLimits};
use cog_sandbox::{Exchange, Phase, Plugin, Python, Runtime};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use serde::Deserialize;

use crate::exit::{Exit, Result};
use crate::output::{Out, Progress};

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// The `.wasm` module or `.py` source.
    file: PathBuf,
    /// What the file is (default: `python` for `.py`, else `wasm`).
    #[arg(long, value_parser = super::parse_lang)]
    lang: Option<PluginLang>,
    /// The request, as JSON: `{"method", "uri", "headers": {..}, "body",
    /// "tenant"}`; for the response phase also `"status"`,
    /// `"response_headers"`, `"response_body"`.
    #[arg(long)]
    request: PathBuf,
    /// Configuration handed to the plugin.
    #[arg(long, default_value = "")]
    config: String,
    /// Which hook to run.
    #[arg(long, value_enum, default_value_t = RunPhase::Request)]
    phase: RunPhase,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RunPhase {
    Request,
    Response,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestDoc {
    #[serde(default = "get")]
    method: String,
    #[serde(default = "root")]
    uri: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default = "tenant")]
    tenant: String,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    response_headers: BTreeMap<String, String>,
    #[serde(default)]
    response_body: Option<String>,
}

fn get() -> String {
    "GET".into()
}
fn root() -> String {
    "/".into()
}
fn tenant() -> String {
    "local".into()
}

fn headers(map: &BTreeMap<String, String>, what: &str) -> Result<HeaderMap> {
    let mut out = HeaderMap::new();
    for (k, v) in map {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| Exit::Usage(format!("{what}: `{k}` is not a header name")))?;
        let value = HeaderValue::from_str(v).map_err(|_| {
            Exit::Usage(format!("{what}: the value of `{k}` is not a header value"))
        })?;
        out.append(name, value);
    }
    Ok(out)
}

fn headers_json(map: &HeaderMap) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (k, v) in map {
        out.insert(
            k.as_str().to_owned(),
            String::from_utf8_lossy(v.as_bytes()).into(),
        );
    }
    out.into()
}

/// Where the CPython for WASI is: `COG_PYTHON_WASI`, else
/// `target/python-wasi` (where `scripts/setup` puts it).
fn python_dir() -> PathBuf {
    std::env::var_os("COG_PYTHON_WASI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/python-wasi"))
}

/// Where compiled interpreters are cached: `COG_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/cog`, else `~/.cache/cog`.
fn cache_dir() -> Option<PathBuf> {
    let var = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("COG_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("cog")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/cog")))
}

/// This user's key for cached artifacts (`artifact.key`, 32 random bytes,
/// readable by the user only), made at first use.
fn artifact_key(dir: &std::path::Path) -> Option<Vec<u8>> {
    let path = dir.join("artifact.key");
    if let Ok(key) = std::fs::read(&path) {
        return (key.len() == 32).then_some(key);
    }
    std::fs::create_dir_all(dir).ok()?;
    let key: [u8; 32] = rand::random();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).ok()?;
    std::io::Write::write_all(&mut file, &key).ok()?;
    Some(key.to_vec())
}

/// A sandbox for plugins in `lang` (for Python, with the interpreter,
/// its compiled module cached for the next command).
fn runtime(lang: PluginLang) -> Result<Runtime> {
    let mut runtime = Runtime::new();
    if lang == PluginLang::Wasm {
        return Ok(runtime);
    }
    if let Some(dir) = cache_dir()
        && let Some(key) = artifact_key(&dir)
    {
        runtime = runtime
            .artifact_dir(dir.join("artifacts"))
            .artifact_key(&key);
    }
    let dir = python_dir();
    let python = Python::open(&dir).map_err(|e| {
        Exit::Usage(format!(
            "no CPython for WASI at {}: {e} (set COG_PYTHON_WASI; scripts/setup fetches one)",
            dir.display()
        ))
    })?;
    Ok(runtime.python(python))
}

fn load(
    runtime: &Runtime,
    name: &str,
    lang: PluginLang,
    bytes: &[u8],
    limits: cog_sandbox::Limits,
) -> Result<Plugin> {
    match lang {
        PluginLang::Wasm => runtime.load(name, bytes, limits),
        PluginLang::Python => runtime.load_python(name, bytes, limits),
    }
    .map_err(|e| Exit::Plugin(format!("{name}: {e}")))
}

/// Loads the plugin under every set of limits it may run with: a plugin
/// the sandbox refuses is never stored.
pub(crate) fn validate(
    name: &str,
    lang: PluginLang,
    bytes: &[u8],
    limits: &[Option<PluginLimits>],
) -> Result {
    let progress = Progress::start("checking the plugin in the sandbox");
    check(name, lang, bytes, limits)?;
    progress.finish();
    Ok(())
}

/// [`validate`] without the progress line (`cog serve` checks uploads
/// with it).
pub(crate) fn check(
    name: &str,
    lang: PluginLang,
    bytes: &[u8],
    limits: &[Option<PluginLimits>],
) -> Result {
    let runtime = runtime(lang)?;
    for l in limits {
        let limits = cog_control::sandbox_limits_for(lang, l.as_ref(), None);
        load(&runtime, name, lang, bytes, limits)?;
    }
    Ok(())
}

pub(crate) fn run(args: &RunArgs, out: &Out) -> Result {
    let wasm = std::fs::read(&args.file)
        .map_err(|e| Exit::Usage(format!("{}: {e}", args.file.display())))?;
    let what = args.request.display().to_string();
    let text =
        std::fs::read_to_string(&args.request).map_err(|e| Exit::Usage(format!("{what}: {e}")))?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    let doc: RequestDoc = serde_path_to_error_free(de, &what)?;
    let method = Method::from_bytes(doc.method.as_bytes())
        .map_err(|_| Exit::Usage(format!("{what}: `{}` is not a method", doc.method)))?;
    let uri: Uri = doc
        .uri
        .parse()
        .map_err(|_| Exit::Usage(format!("{what}: `{}` is not a URI", doc.uri)))?;
    let mut ex = Exchange::new(method, uri, doc.tenant.as_str());
    ex.request_headers = headers(&doc.headers, &what)?;
    ex.request_body = doc.body.map(Bytes::from);
    if args.phase == RunPhase::Response {
        ex.status = Some(
            StatusCode::from_u16(doc.status.unwrap_or(200))
                .map_err(|_| Exit::Usage(format!("{what}: bad status")))?,
        );
        ex.response_headers = headers(&doc.response_headers, &what)?;
        ex.response_body = doc.response_body.map(Bytes::from);
    }
    let name = args
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let lang = args.lang.unwrap_or_else(|| PluginLang::of_path(&args.file));
    let progress = Progress::start("compiling the plugin");
    let limits = cog_control::sandbox_limits_for(lang, None, None);
    let plugin = load(&runtime(lang)?, &name, lang, &wasm, limits)?
        .with_config(args.config.clone().into_bytes());
    progress.finish();
    let phase = match args.phase {
        RunPhase::Request => Phase::Request,
        RunPhase::Response => Phase::Response,
    };
    let result = plugin.call(phase, &mut ex);
    let body = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    let json = serde_json::json!({
        "ok": result.is_ok(),
        "error": result.as_ref().err().map(|e| crate::exit::chain(e)),
        "rejected": ex.rejected.as_ref().map(|r| serde_json::json!({
            "status": r.status.as_u16(),
            "body": String::from_utf8_lossy(&r.body),
        })),
        "request": {
            "headers": headers_json(&ex.request_headers),
            "body": body(&ex.request_body),
        },
        "response": {
            "status": ex.status.map(|s| s.as_u16()),
            "headers": headers_json(&ex.response_headers),
            "body": body(&ex.response_body),
        },
    });
    if out.json() {
        out.json_value(&json);
    } else {
        let mut s = String::new();
        match (&result, &ex.rejected) {
            (Err(e), _) => s.push_str(&format!("failed: {}\n", crate::exit::chain(e))),
            (Ok(()), Some(r)) => s.push_str(&format!(
                "rejected: {} {}\n",
                r.status.as_u16(),
                String::from_utf8_lossy(&r.body)
            )),
            (Ok(()), None) => s.push_str("passed\n"),
        }
        let (label, map, b) = match phase {
            Phase::Request => ("request", &ex.request_headers, &ex.request_body),
            Phase::Response => ("response", &ex.response_headers, &ex.response_body),
        };
        s.push_str(&format!("{label} headers:\n"));
        for (k, v) in map {
            s.push_str(&format!(
                "  {k}: {}\n",
                String::from_utf8_lossy(v.as_bytes())
            ));
        }
        if let Some(b) = body(b) {
            s.push_str(&format!("{label} body:\n  {b}\n"));
        }
        out.text(&s);
    }
    match result {
        Ok(()) => Ok(()),
        Err(e) => Err(Exit::Plugin(format!("{name}: {e}"))),
    }
}

fn serde_path_to_error_free<'de, T: Deserialize<'de>>(
    de: &mut serde_json::Deserializer<serde_json::de::StrRead<'de>>,
    what: &str,
) -> Result<T> {
    T::deserialize(de).map_err(|e| Exit::Usage(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_artifact_key_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let key = artifact_key(dir.path()).expect("made");
        assert_eq!(key.len(), 32);
        assert_eq!(
            artifact_key(dir.path()),
            Some(key),
            "the same key next time"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("artifact.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A key file of the wrong size is not used.
        std::fs::write(dir.path().join("artifact.key"), b"short").unwrap();
        assert_eq!(artifact_key(dir.path()), None);
    }
}
