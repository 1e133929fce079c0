//! The sample plugins of `examples/plugins`, from their committed wasm
//! builds — which must match their sources (`scripts/build-plugins`
//! rebuilds them and refreshes `dist/SOURCES`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use cog_sandbox::{Exchange, KvScope, Limits, MemoryKv, Phase, Runtime};
use sha2::{Digest, Sha256};

use crate::support::exchange;

const PLUGINS: [&str; 3] = ["headers", "redact", "blocklist"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dist(name: &str) -> Vec<u8> {
    std::fs::read(root().join(format!("examples/plugins/dist/{name}.wasm")))
        .unwrap_or_else(|e| panic!("{name}.wasm: {e} (run scripts/build-plugins)"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The files a plugin build depends on: the pdk and each plugin's crate.
fn source_files() -> Vec<PathBuf> {
    let mut dirs = vec![root().join("crates/cog-pdk")];
    dirs.extend(
        PLUGINS
            .iter()
            .map(|p| root().join("examples/plugins").join(p)),
    );
    let mut files = Vec::new();
    for dir in dirs {
        files.push(dir.join("Cargo.toml"));
        for entry in std::fs::read_dir(dir.join("src")).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    files.sort();
    files
}

/// `sources <hash>` and one `<plugin>.wasm <hash>` line per build.
fn manifest() -> String {
    let mut h = Sha256::new();
    for file in source_files() {
        let rel = file
            .strip_prefix(root())
            .unwrap_or(&file)
            .to_string_lossy()
            .into_owned();
        h.update(rel.as_bytes());
        h.update([0]);
        h.update(std::fs::read(&file).unwrap());
        h.update([0]);
    }
    let mut out = format!("sources {}\n", hex(&h.finalize()));
    for p in PLUGINS {
        out.push_str(&format!("{p}.wasm {}\n", hex(&Sha256::digest(dist(p)))));
    }
    out
}

#[test]
fn committed_builds_match_their_sources() {
    let path = root().join("examples/plugins/dist/SOURCES");
    let now = manifest();
    if std::env::var_os("COG_UPDATE_PLUGIN_SOURCES").is_some() {
        std::fs::write(&path, &now).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        committed, now,
        "the committed plugin builds are stale or were changed by hand: run scripts/build-plugins"
    );
}

#[test]
fn headers_plugin_adds_and_strips() {
    let rt = Runtime::new();
    let p = rt
        .load("headers", &dist("headers"), Limits::default())
        .unwrap()
        .with_config(
            "request add x-served-by: edge-1\nrequest strip x-internal-\nresponse add x-powered-by: cog\nresponse strip server",
        );
    let mut ex = exchange("acme");
    ex.request_headers
        .insert("x-internal-token", "t".parse().unwrap());
    ex.request_headers
        .insert("x-internal-user", "u".parse().unwrap());
    p.call(Phase::Request, &mut ex).unwrap();
    assert_eq!(ex.request_headers["x-served-by"], "edge-1");
    assert!(
        !ex.request_headers
            .keys()
            .any(|k| k.as_str().starts_with("x-internal-"))
    );
    assert_eq!(ex.request_headers["user-agent"], "test/1");
    ex.status = Some(http::StatusCode::OK);
    ex.response_headers
        .insert("server", "nginx".parse().unwrap());
    p.call(Phase::Response, &mut ex).unwrap();
    assert_eq!(ex.response_headers["x-powered-by"], "cog");
    assert!(ex.response_headers.get("server").is_none());
}

#[test]
fn redact_plugin_cleans_json_bodies() {
    let rt = Runtime::new();
    let p = rt
        .load("redact", &dist("redact"), Limits::default())
        .unwrap();
    let mut ex = exchange("acme");
    ex.status = Some(http::StatusCode::OK);
    ex.response_body = Some(Bytes::from_static(
        br#"{"user":"jane@example.com","card":"4111 1111 1111 1111","order":12345}"#,
    ));
    p.call(Phase::Response, &mut ex).unwrap();
    assert_eq!(
        ex.response_body.as_deref(),
        Some(&br#"{"user":"[email]","card":"[card]","order":12345}"#[..])
    );
}

#[test]
fn blocklist_plugin_is_per_tenant() {
    let kv = Arc::new(MemoryKv::new());
    let rt = Runtime::new().kv(kv.clone());
    let p = rt
        .load("blocklist", &dist("blocklist"), Limits::default())
        .unwrap();
    kv.put(
        &KvScope {
            tenant: "acme".into(),
            plugin: "blocklist".into(),
        },
        "block:mallory",
        "banned for abuse",
    );
    let call = |tenant: &str, user: &str| -> Exchange {
        let mut ex = exchange(tenant);
        ex.request_headers
            .insert("x-user-id", user.parse().unwrap());
        p.call(Phase::Request, &mut ex).unwrap();
        ex
    };
    let blocked = call("acme", "mallory").rejected.expect("blocked at acme");
    assert_eq!(blocked.status, 403);
    assert_eq!(blocked.body, "banned for abuse");
    assert!(call("acme", "alice").rejected.is_none());
    assert!(
        call("globex", "mallory").rejected.is_none(),
        "acme's list does not apply to globex"
    );
}
