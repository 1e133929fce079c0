//! The short chaos run (every scenario, ~40 s): the runner's invariants
//! hold — over-admission within the documented bound, no acknowledged
//! control-plane write lost, memory and file descriptors bounded — and
//! the report names every scenario with its figures.

use std::process::Command;

#[test]
fn every_scenario_once_with_the_invariants_checked() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("chaos.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(["--scale", "0.4", "--connections", "1000", "--rate", "400"])
        .args(["--min-availability", "0.99"])
        .arg("--svg")
        .arg(&svg)
        .current_dir(dir.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}\n{log}");
    for scenario in [
        "Redis killed, restarted empty",
        "Redis paused (SIGSTOP)",
        "+200 ms to Redis, then one instance partitioned",
        "Redis out of memory (noeviction)",
        "an instance killed (SIGKILL), restarted",
        "a plugin that never returns",
        "whole run",
    ] {
        assert!(
            report.contains(&format!("| {scenario} |")),
            "{scenario} missing:\n{report}"
        );
    }
    assert!(report.contains("on 1000 connections"), "{report}");
    assert!(report.contains("— holds"), "{report}");
    assert!(report.contains("0 lost"), "{report}");
    assert!(report.contains("— bounded"), "{report}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
}
