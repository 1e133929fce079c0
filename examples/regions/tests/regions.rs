//! The simulation, short: it runs, and what it reports holds up.

use std::process::Command;

#[test]
fn a_short_simulation_keeps_the_global_limit_and_heals() {
    let out = Command::new(env!("CARGO_BIN_EXE_regions"))
        .args(["--phase", "4", "--limit", "400"])
        .output()
        .expect("the simulation runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let over = |phase: &str| -> f64 {
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("| {phase} |")))
            .unwrap_or_else(|| panic!("no {phase} row in\n{report}"));
        let cell = line.split('|').nth(4).unwrap().trim();
        cell.trim_end_matches(" %").parse().unwrap()
    };
    // Links up and healed: at the limit, not over it (a few % for the
    // first rounds' equal split).
    assert!(over("links up, whole phase") <= 5.0, "{report}");
    assert!(over("healed, after 2 s") <= 2.0, "{report}");
    // A partition: over, but at most limit × regions.
    assert!(over("partition: both sides") <= 200.0, "{report}");
    assert!(report.contains("delivered after healing: yes"), "{report}");
    assert!(
        !report.contains("not within the phase"),
        "shares did not agree again: {report}"
    );
}

/// A demand that cannot be a rate is refused by name, not a panic.
#[test]
fn a_demand_that_is_no_rate_is_refused() {
    for demand in ["-1", "0", "NaN", "inf"] {
        let out = Command::new(env!("CARGO_BIN_EXE_regions"))
            .args(["--demand", demand])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{demand}");
        assert!(
            err.contains("--demand") && !err.contains("panicked"),
            "{demand}: {err}"
        );
    }
}
