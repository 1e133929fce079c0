//! The short chaos runs (every scenario of the single-Redis topology,
//! ~40 s; one Sentinel failover and one Cluster failover, ~15 s each):
//! the runner's invariants hold —
//! over-admission within the documented bound, no acknowledged
//! control-plane write lost, memory and file descriptors bounded, the
//! instances deciding on the promoted primary — and the report names every
//! scenario with its figures.

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

#[test]
fn a_sentinel_failover_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(["--topology", "sentinel", "--scale", "0.4"])
        .args(["--connections", "1000", "--rate", "400"])
        .args(["--min-availability", "0.99"])
        .current_dir(dir.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    // The runner fails the run (exit 2) when the instances do not decide
    // on the promoted primary afterwards.
    assert!(out.status.success(), "{report}\n{log}");
    assert!(
        report.contains("| Sentinel failover: primary killed, replica promoted |"),
        "{report}"
    );
    assert!(
        report.contains("— holds") && report.contains("0 lost"),
        "{report}"
    );
}

#[test]
fn a_cluster_failover_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(["--topology", "cluster", "--scale", "0.4"])
        .args(["--connections", "1000", "--rate", "400"])
        .args(["--min-availability", "0.99"])
        .current_dir(dir.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    // Exit 2 when no replica takes the slots, or the instances do not
    // decide on the new master afterwards.
    assert!(out.status.success(), "{report}\n{log}");
    assert!(
        report.contains("| Cluster failover: a master killed, its replica takes the slots |"),
        "{report}"
    );
    assert!(
        report.contains("— holds") && report.contains("0 lost"),
        "{report}"
    );
}

/// A rate or scale that cannot become a time is refused by name, before
/// anything starts — not a panic.
#[test]
fn a_rate_or_scale_that_is_no_number_is_refused() {
    for (flag, value) in [
        ("--scale", "NaN"),
        ("--scale", "-1"),
        ("--rate", "inf"),
        ("--rate", "NaN"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_chaos"))
            .args([flag, value])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value}");
        assert!(
            err.contains(flag) && !err.contains("panicked"),
            "{flag} {value}: {err}"
        );
    }
}
