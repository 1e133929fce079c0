//! Reads a Prometheus scrape body with the Prometheus project's reference
//! parser (the Python `prometheus_client` package's OpenMetrics parser),
//! so tests check `/metrics` the way a scraper reads it rather than with
//! the code that wrote it.
//!
//! `scripts/setup` installs the parser into `target/pyenv`; `COG_PYTHON`
//! names another interpreter that has it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What the parser did with the body.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// No interpreter with the parser.
    #[error("no Python with prometheus_client at {0} (run scripts/setup, or set COG_PYTHON)")]
    NoParser(String),
    /// The reference parser refused the body.
    #[error("the OpenMetrics parser refused the body: {0}")]
    Refused(String),
}

/// One metric family as the parser saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family name (`http_server_request_duration_seconds`).
    pub name: String,
    /// `counter`, `gauge`, `histogram`, …
    pub kind: String,
    /// `# UNIT`, empty when none.
    pub unit: String,
    /// `# HELP`.
    pub help: String,
    /// Every sample line.
    pub samples: Vec<Sample>,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample name (`…_bucket`, `…_total`, …).
    pub name: String,
    /// Labels, as unescaped by the parser, sorted by name.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Family {
    /// The sample named `name` whose labels include every pair of `labels`.
    pub fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Sample> {
        self.samples.iter().find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
    }
}

const SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "kind": f.type, "unit": f.unit, "help": f.documentation,
                "samples": [[s.name, sorted(s.labels.items()), s.value] for s in f.samples]})
print(json.dumps(out))
"#;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("COG_PYTHON") {
        return p.into();
    }
    // crates/cog-testkit → the workspace's target/.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/python")
}

/// Parses `body` as OpenMetrics text.
///
/// # Errors
/// When the parser is missing or refuses the body.
pub fn parse(body: &str) -> Result<Vec<Family>, ParseError> {
    let python = python();
    let mut child = Command::new(&python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|_| ParseError::NoParser(python.display().to_string()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(body.as_bytes())
        .map_err(|e| ParseError::Refused(e.to_string()))?;
    let out = child
        .wait_with_output()
        .map_err(|e| ParseError::Refused(e.to_string()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named") {
        return Err(ParseError::NoParser(python.display().to_string()));
    }
    if !out.status.success() {
        return Err(ParseError::Refused(stderr.into_owned()));
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| ParseError::Refused(format!("unreadable parser output: {e}")))?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    Ok(json
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| Family {
            name: text(&f["name"]),
            kind: text(&f["kind"]),
            unit: text(&f["unit"]),
            help: text(&f["help"]),
            samples: f["samples"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| Sample {
                    name: text(&s[0]),
                    labels: s[1]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|kv| (text(&kv[0]), text(&kv[1])))
                        .collect(),
                    value: s[2].as_f64().unwrap_or(f64::NAN),
                })
                .collect(),
        })
        .collect())
}
