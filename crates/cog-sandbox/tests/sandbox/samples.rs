//! The sample plugins' committed wasm builds must match their sources
//! (`scripts/build-plugins` rebuilds them and refreshes `dist/SOURCES`).
//! Their behaviour is tested in `tests/python/samples.rs`, next to their
//! Python twins.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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
