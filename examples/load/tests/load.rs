//! The load generator's own promises: it never touches Redis data it did
//! not write, and its memory stays fixed however long it runs.

use std::time::Duration;

use cog_testkit::RedisServer;
use fred::interfaces::{ClientLike, KeysInterface};

#[path = "../src/support.rs"]
mod support;

use support::{InFlight, Latencies, NotEmpty, Samples, prepare_redis};

#[tokio::test]
async fn a_database_with_foreign_keys_is_refused_unless_told_to_flush_it() {
    let server = RedisServer::start().unwrap();
    let other_db = format!("{}/3", server.url());
    let client = cog_testkit::fred_client(&server.url()).await;
    let _: () = client
        .set("someone:else", "precious", None, None, false)
        .await
        .unwrap();
    let neighbour = cog_testkit::fred_client(&other_db).await;
    let _: () = neighbour
        .set("another:app", "also precious", None, None, false)
        .await
        .unwrap();

    // Refused, and nothing deleted.
    let refused = prepare_redis(&server.url(), false).await.unwrap_err();
    assert!(matches!(refused, NotEmpty::Keys(1)), "{refused}");
    assert!(refused.to_string().contains("--flush-redis"));
    let kept: Option<String> = client.get("someone:else").await.unwrap();
    assert_eq!(kept.as_deref(), Some("precious"));

    // An empty database is used as is.
    prepare_redis(&format!("{}/5", server.url()), false)
        .await
        .unwrap();

    // Told to: that database is emptied, and no other.
    prepare_redis(&server.url(), true).await.unwrap();
    let gone: Option<String> = client.get("someone:else").await.unwrap();
    assert_eq!(gone, None);
    let other: Option<String> = neighbour.get("another:app").await.unwrap();
    assert_eq!(other.as_deref(), Some("also precious"));
    let _ = client.quit().await;
    let _ = neighbour.quit().await;
}

#[test]
fn latency_percentiles_stay_accurate_in_fixed_memory() {
    let mut h = Latencies::default();
    let bytes = h.footprint();
    // A spread of latencies from 1 µs to ~2 s, in a known order.
    let mut all: Vec<u32> = (0..200_000u32)
        .map(|i| 1 + (i.wrapping_mul(2_654_435_761) % 2_000_000))
        .collect();
    for &us in &all {
        h.record(us);
    }
    assert_eq!(h.footprint(), bytes, "no growth with the count");
    all.sort_unstable();
    for p in [0.5, 0.9, 0.99, 0.999] {
        let exact = f64::from(all[((all.len() as f64 * p).ceil() as usize) - 1]) / 1000.0;
        let got = h.percentile_ms(p);
        assert!(
            (got - exact).abs() <= exact / 64.0 + 0.001,
            "p{p}: {got} ms vs exact {exact} ms"
        );
    }
    assert_eq!(
        h.percentile_ms(1.0),
        f64::from(*all.last().unwrap()) / 1000.0
    );
    // Small values are exact.
    let mut small = Latencies::default();
    for us in [3, 3, 7, 63] {
        small.record(us);
    }
    assert_eq!(small.percentile_ms(0.5), 0.003);
    assert_eq!(small.percentile_ms(0.75), 0.007);
}

#[test]
fn chart_samples_are_thinned_not_accumulated() {
    let mut s = Samples::default();
    for i in 0..5_000_000u32 {
        s.offer(i as f32 / 1e5, i);
    }
    let points = s.points();
    assert!(points.len() <= 20_000, "{}", points.len());
    // Still spread over the whole run.
    assert!(points.last().unwrap().0 > 49.0, "{:?}", points.last());
}

#[tokio::test]
async fn finished_requests_are_reaped_as_new_ones_go_out() {
    let mut in_flight = InFlight::default();
    let mut done = 0u64;
    for i in 0..5_000u64 {
        in_flight.spawn(async move { i }, |_| done += 1);
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(in_flight.len() <= 200, "{} held at {i}", in_flight.len());
    }
    in_flight.finish(|_| done += 1).await;
    assert_eq!(done, 5_000);
}

/// The simulation modes run end to end (debug build, briefly): three
/// regions with ap cut off half-way, and two deployments with the noisy
/// tenant's partition moved under the load — each reporting what it
/// measured, with no request failing.
#[test]
fn regions_and_deployments_runs_report_per_phase() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_load"))
            .args(["--duration", "4", "--rate", "150", "--concurrency", "8"])
            .args(args)
            .env_remove("COG_REDIS_URL")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(", 5xx or failed: 0\n"), "{text}");
        text
    };
    let regions = run(&["--regions", "--partition", "1:3"]);
    for line in ["eu: ", "us: ", "ap: ", "from ap cut off: ", "from healed: "] {
        assert!(regions.contains(line), "{line}: {regions}");
    }
    let moved = run(&["--deployments", "--instances", "2", "--move-at", "2"]);
    assert!(moved.contains("from moved: "), "{moved}");
}

/// Numbers that cannot be times, weights or shares are refused by name,
/// with exit code 2 — not a panic where one becomes a `Duration`.
#[test]
fn numbers_out_of_range_are_refused_by_name() {
    for (args, flag) in [
        (&["--regions", "--partition", "-1:3"][..], "--partition"),
        (&["--regions", "--partition", "1:inf"][..], "--partition"),
        (&["--deployments", "--move-at", "-2"][..], "--move-at"),
        (&["--rate", "NaN"][..], "--rate"),
        (&["--zipf", "-1"][..], "--zipf"),
        (&["--mix", "1,-1,1"][..], "--mix"),
        (&["--mix", "0,0,0"][..], "--mix"),
        (&["--items", "1.5"][..], "--items"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_load"))
            .args(args)
            .env_remove("COG_REDIS_URL")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(flag) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}
