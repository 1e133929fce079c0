//! The chaos run: three demo instances on loopback sharing a real Redis
//! through fault-injecting proxies, driven by 1 000 open-loop connections,
//! with faults done to Redis, to the links, to an instance and to a
//! tenant's plugin on a schedule — and availability, latency, recovery and
//! the invariants measured, not eyeballed.
//!
//! ```text
//! cargo run --release -p example-chaos -- [--duration 600] [--connections 1000]
//!     [--rate 1000] [--scale 1.0] [--report docs/chaos.md] [--svg docs/chaos.svg]
//!     [--min-availability 0.999] [--topology single|sentinel|cluster]
//! ```
//!
//! `--topology sentinel` puts the data in a primary and a replica under
//! Redis Sentinel (the instances find the primary through it, no proxies)
//! and does one fault: the primary killed, the replica promoted, the old
//! primary started again as a replica — and checks that the instances
//! decide on the new primary afterwards. `--topology cluster` does the same
//! in a Redis Cluster of three masters with a replica each: a master
//! killed, its replica taking its slots.
//!
//! Scenarios, in order, repeated until `--duration` is spent (one round
//! when it is 0): Redis killed and restarted empty; Redis paused 5 s; 200 ms
//! added to every Redis link, then one instance partitioned from Redis;
//! Redis out of memory 10 s; an instance killed and restarted; a plugin
//! that never returns installed for one tenant, then removed. `--scale`
//! stretches or shrinks every fault and gap (the test runs 0.4).
//!
//! Limits, cache and plugin data live in the data Redis (the one faults are
//! done to); the control plane lives in its own Redis, append-only with an
//! `fsync` per write, as a control plane whose writes must survive should.
//!
//! Invariants, each failing the run (exit 1): a tenant driven at three
//! times its limit is admitted no more than the documented bound of the
//! `Local` failure policy; every control-plane write acknowledged during
//! the run is there afterwards; the instances that ran throughout end
//! under load within 1.5× + 32 MiB of their resident memory after warm-up,
//! and at rest within 16 of the file descriptors they had at rest before
//! the load. `--min-availability` adds one more.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cog_control::{Control, LimitSpec, Plan, Tenant};
use tokio::sync::Mutex;

mod bound;
mod faults;
mod load;
mod report;
mod topology;

use faults::Fault;
use load::{Outcome, Shape};
use report::Window;
use topology::Topology;

const INSTANCES: usize = 3;
/// The tight tenant's plan: 20 a second, 20 at once.
const TIGHT_RATE: f64 = 20.0;
const TIGHT_BURST: f64 = 20.0;
const OPEN_TENANTS: usize = 8;

struct Options {
    duration: Duration,
    connections: usize,
    rate: f64,
    scale: f64,
    report: Option<String>,
    svg: Option<String>,
    min_availability: Option<f64>,
    topology: topology::Shape,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        duration: Duration::ZERO,
        connections: 1000,
        rate: 1000.0,
        scale: 1.0,
        report: None,
        svg: None,
        min_availability: None,
        topology: topology::Shape::Single,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--duration" => {
                o.duration = Duration::from_secs(value()?.parse().map_err(|e| bad(&e))?);
            }
            "--connections" => o.connections = value()?.parse().map_err(|e| bad(&e))?,
            "--rate" => o.rate = value()?.parse().map_err(|e| bad(&e))?,
            "--scale" => o.scale = value()?.parse().map_err(|e| bad(&e))?,
            "--report" => o.report = Some(value()?),
            "--svg" => o.svg = Some(value()?),
            "--topology" => {
                o.topology = match value()?.as_str() {
                    "single" => topology::Shape::Single,
                    "sentinel" => topology::Shape::Sentinel,
                    "cluster" => topology::Shape::Cluster,
                    other => {
                        return Err(format!("--topology {other}: single, sentinel or cluster"));
                    }
                };
            }
            "--min-availability" => {
                o.min_availability = Some(value()?.parse().map_err(|e| bad(&e))?);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    // `!(x > 0)`: NaN too (it would panic where it becomes a `Duration`).
    let positive = |x: f64| x > 0.0 && x.is_finite();
    if o.connections == 0 || !positive(o.rate) || !positive(o.scale) {
        return Err("--connections, --rate and --scale must be positive".into());
    }
    Ok(o)
}

/// Resident memory (KiB) and open file descriptors of `pid`.
fn footprint(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

struct Seeded {
    tenants: Vec<load::Tenant>,
    tight: usize,
    victim: String,
}

/// Plans, tenants and their keys for the run.
async fn seed(control: &Control, rate: f64) -> Result<Seeded, String> {
    let e = |e: cog_control::ControlError| e.to_string();
    let open = Plan {
        limits: vec![LimitSpec::parse("rps=1000000/1s").map_err(|e| e.to_string())?],
        ..Default::default()
    };
    let tight = Plan {
        limits: vec![
            LimitSpec::parse(&format!("rps={TIGHT_RATE}/1s,burst={TIGHT_BURST}"))
                .map_err(|e| e.to_string())?,
        ],
        ..Default::default()
    };
    control.create_plan("chaos-open", open).await.map_err(e)?;
    control.create_plan("chaos-tight", tight).await.map_err(e)?;
    let mut tenants = Vec::new();
    for i in 0..OPEN_TENANTS {
        let id = format!("t{i}");
        control
            .create_tenant(&id, Tenant::new("chaos-open"))
            .await
            .map_err(e)?;
        tenants.push(load::Tenant {
            key: control.create_key(&id, None).await.map_err(e)?.secret,
            weight: 1.0,
        });
    }
    control
        .create_tenant("tight", Tenant::new("chaos-tight"))
        .await
        .map_err(e)?;
    // Sent three times its limit.
    let tight_share = 3.0 * TIGHT_RATE / rate;
    let weight = tight_share * OPEN_TENANTS as f64 / (1.0 - tight_share).max(0.05);
    tenants.push(load::Tenant {
        key: control.create_key("tight", None).await.map_err(e)?.secret,
        weight,
    });
    Ok(Seeded {
        tight: tenants.len() - 1,
        tenants,
        victim: "t0".into(),
    })
}

/// Writes to the control plane every 200 ms until `stop`; the tenants
/// whose creation was acknowledged, and how many writes failed.
async fn writer(
    control: Control,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<String>, usize) {
    let mut acked = Vec::new();
    let mut failed = 0;
    let mut n = 0;
    while !*stop.borrow() {
        let id = format!("w{n}");
        n += 1;
        match control.create_tenant(&id, Tenant::new("chaos-open")).await {
            Ok(()) => acked.push(id),
            Err(_) => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (acked, failed)
}

async fn run(o: Options) -> Result<bool, String> {
    eprintln!(
        "starting Redis ({:?} data, control) and {INSTANCES} demo instances",
        o.topology
    );
    let topology = Topology::start(INSTANCES, o.topology).await?;
    let schedule: &[Fault] = match o.topology {
        topology::Shape::Single => &Fault::SINGLE,
        topology::Shape::Sentinel => &[Fault::Failover],
        topology::Shape::Cluster => &[Fault::ClusterFailover],
    };
    let control = Control::open(&topology.control.url())
        .await
        .map_err(|e| e.to_string())?
        .actor("chaos");
    let seeded = seed(&control, o.rate).await?;
    let instances: Vec<_> = topology.instances.iter().map(|i| i.addr).collect();
    // Every instance knows the keys before the clock starts.
    for addr in &instances {
        let key = &seeded.tenants[0].key;
        let mut ok = false;
        for _ in 0..100 {
            if probe(*addr, key).await == Some(200) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !ok {
            return Err(format!("instance {addr} never accepted a seeded key"));
        }
    }
    // File descriptors at rest, before any client connection.
    let rest_before: Vec<_> = topology
        .instances
        .iter()
        .map(|i| i.pid().and_then(footprint).map(|f| f.1))
        .collect();
    let topology = Arc::new(Mutex::new(topology));

    // The schedule.
    let warmup = Duration::from_secs_f64(5.0 * o.scale.max(0.4));
    let gap = Duration::from_secs_f64(8.0 * o.scale);
    let round: Duration = schedule.iter().map(|f| f.length(o.scale) + gap).sum();
    let rounds = if o.duration.is_zero() {
        1
    } else {
        ((o.duration.saturating_sub(warmup)).as_secs_f64() / round.as_secs_f64())
            .ceil()
            .max(1.0) as usize
    };
    let total = warmup + round * rounds as u32;
    eprintln!(
        "{rounds} round(s) of {} faults, {:.0} s in all, {} connections, {} requests/s",
        schedule.len(),
        total.as_secs_f64(),
        o.connections,
        o.rate
    );

    let start = Instant::now() + Duration::from_millis(200);
    // Set once the last fault is over: restarts take what they take.
    let end_ms = Arc::new(std::sync::atomic::AtomicU32::new(u32::MAX));
    let shape = Shape {
        connections: o.connections,
        rate: o.rate,
        tenants: Arc::new(seeded.tenants.clone()),
        instances: Arc::new(instances.clone()),
        items: 500,
        timeout: Duration::from_secs(5),
    };
    let load = tokio::spawn(load::run(shape, start, end_ms.clone()));
    let (stop_writes, stopped) = tokio::sync::watch::channel(false);
    let writes = tokio::spawn(writer(control.clone(), stopped));

    tokio::time::sleep_until((start + warmup).into()).await;
    let pids: Vec<Option<u32>> = topology
        .lock()
        .await
        .instances
        .iter()
        .map(|i| i.pid())
        .collect();
    let before: Vec<_> = pids.iter().map(|p| p.and_then(footprint)).collect();

    let mut windows = Vec::new();
    let mut partitioned = 0.0;
    let mut outages = Vec::new();
    for _ in 0..rounds {
        for &fault in schedule {
            let begun = start.elapsed().as_millis() as u32;
            eprintln!("{:>6.1} s  {}", f64::from(begun) / 1000.0, fault.name());
            let measured = faults::run(
                fault,
                fault.length(o.scale),
                &topology,
                &control,
                &seeded.victim,
            )
            .await
            .map_err(|e| format!("{}: {e}", fault.name()))?;
            let ended = start.elapsed().as_millis() as u32;
            partitioned += fault.partitioned(o.scale);
            if let Some(t) = measured {
                eprintln!("          the replica was promoted {t:.1} s after the kill");
            }
            if let Some(t) = measured.or(fault.outage(o.scale)) {
                outages.push((windows.len(), fault, t));
            }
            tokio::time::sleep(gap).await;
            windows.push(Window {
                name: fault.name(),
                start_ms: begun,
                end_ms: ended,
                // Requests due just before the next fault are in flight
                // when it strikes: they are that one's, not this one's.
                watch_until_ms: (start.elapsed().as_millis() as u32).saturating_sub(250),
            });
        }
    }
    // The instances' memory under load, once the last fault is over.
    let after: Vec<_> = {
        let t = topology.lock().await;
        t.instances
            .iter()
            .map(|i| i.pid().and_then(footprint))
            .collect()
    };
    let end_at = start.elapsed() + Duration::from_secs(1);
    end_ms.store(
        end_at.as_millis() as u32,
        std::sync::atomic::Ordering::Release,
    );
    let _ = stop_writes.send(true);
    let records = load.await.map_err(|e| e.to_string())?;
    // … and their file descriptors at rest again, the clients gone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rest_after: Vec<_> = {
        let t = topology.lock().await;
        t.instances
            .iter()
            .map(|i| i.pid().and_then(footprint).map(|f| f.1))
            .collect()
    };
    let (acked, refused_writes) = writes.await.map_err(|e| e.to_string())?;
    let end_ms = end_at.as_millis() as u32;

    // Figures.
    let rows: Vec<_> = windows
        .iter()
        .map(|w| report::figures(&records, w))
        .collect();
    let whole = report::figures(
        &records,
        &Window {
            name: "whole run",
            start_ms: 0,
            end_ms,
            watch_until_ms: end_ms,
        },
    );
    let mut out = String::new();
    out.push_str(&report::table(&rows, &whole));

    // The generator kept its schedule?
    let mut lags: Vec<u32> = records.iter().map(|r| r.lag_us).collect();
    lags.sort_unstable();
    let lag_p99 = lags.get(lags.len() * 99 / 100).copied().unwrap_or(0);
    let secs = f64::from(end_ms) / 1000.0;
    out.push_str(&format!(
        "\n{} requests over {secs:.0} s ({:.0}/s asked, {:.0}/s sent) on {} connections; \
         the generator's own lag (due → sent) p99 {:.1} ms, max {:.1} ms\n",
        records.len(),
        o.rate,
        records.len() as f64 / secs,
        o.connections,
        f64::from(lag_p99) / 1000.0,
        f64::from(lags.last().copied().unwrap_or(0)) / 1000.0,
    ));

    // Invariants.
    let mut ok = true;
    let admitted = records
        .iter()
        .filter(|r| usize::from(r.tenant) == seeded.tight && r.outcome == Outcome::Ok)
        .count() as f64;
    let sent = records
        .iter()
        .filter(|r| usize::from(r.tenant) == seeded.tight)
        .count();
    let exact = TIGHT_BURST + TIGHT_RATE * secs;
    // Each outage with its way back as measured: from when Redis was back
    // to the last decision the tight tenant got from an instance's local
    // fallback (its answer names its share of the quota, not the quota).
    let full = records
        .iter()
        .filter(|r| usize::from(r.tenant) == seeded.tight)
        .map(|r| r.quota)
        .max()
        .unwrap_or(0);
    let timed: Vec<(f64, f64)> = outages
        .iter()
        .map(|&(w, fault, t)| {
            let w = &windows[w];
            let back_ms = f64::from(w.start_ms) + t * 1000.0;
            // The instance cut off alone comes back later by design: its
            // share is the partition's term, not the fleet's way back.
            let cut = fault.partitioned(o.scale) > 0.0;
            let last = records
                .iter()
                .filter(|r| {
                    usize::from(r.tenant) == seeded.tight
                        && (w.start_ms..w.watch_until_ms).contains(&r.at_ms)
                        && r.quota > 0
                        && r.quota < full
                        && !(cut && r.instance == 0)
                })
                .map(|r| f64::from(r.at_ms))
                .fold(back_ms, f64::max);
            (t, (last - back_ms) / 1000.0)
        })
        .collect();
    let bound = exact
        + bound::extra(
            TIGHT_RATE,
            TIGHT_BURST,
            INSTANCES as f64,
            &timed,
            partitioned,
        );
    let holds = admitted <= bound;
    ok &= holds;
    out.push_str(&format!(
        "\nover-admission: the tight tenant (limit {TIGHT_RATE}/s, burst {TIGHT_BURST}) sent {sent}, \
         was admitted {admitted:.0}: {:+.0} on the exact limit {exact:.0}; the Local policy's bound \
         (docs/operations.md) for {} fleet-wide outage(s) and {partitioned:.1} s of one instance \
         partitioned is {bound:.0} — {}\n",
        admitted - exact,
        outages.len(),
        if holds { "holds" } else { "BROKEN" }
    ));
    for (&(w, _, t), &(_, back)) in outages.iter().zip(&timed) {
        out.push_str(&format!(
            "  {}: decided without Redis for {t:.1} s; the last local decision {back:.1} s after \
             Redis was back (the bound takes the longer of that and {:.1} s)\n",
            windows[w].name,
            bound::SWITCH
        ));
    }
    for (w, f) in windows.iter().zip(&rows) {
        let _ = f;
        let from = records.partition_point(|r| r.at_ms < w.start_ms);
        let to = records.partition_point(|r| r.at_ms < w.watch_until_ms);
        let got = records[from..to]
            .iter()
            .filter(|r| usize::from(r.tenant) == seeded.tight && r.outcome == Outcome::Ok)
            .count();
        let allowed = TIGHT_RATE * f64::from(w.watch_until_ms - w.start_ms) / 1000.0;
        out.push_str(&format!(
            "  {}: the tight tenant admitted {got} where {allowed:.0} were due\n",
            w.name
        ));
    }

    let state = control.state().await.map_err(|e| e.to_string())?;
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !state.spec.tenants.contains_key(*id))
        .collect();
    ok &= lost.is_empty();
    out.push_str(&format!(
        "control-plane writes: {} acknowledged, {} refused, {} lost{}\n",
        acked.len(),
        refused_writes,
        lost.len(),
        if lost.is_empty() { "" } else { " — BROKEN" }
    ));

    for i in 0..before.len() {
        let restarted = pids[i] != topology.lock().await.instances[i].pid();
        match (before[i], after[i], rest_before[i], rest_after[i]) {
            (Some((rss0, _)), Some((rss1, _)), Some(fd0), Some(fd1)) if !restarted => {
                let bounded = rss1 <= rss0 * 3 / 2 + 32 * 1024 && fd1 <= fd0 + 16;
                ok &= bounded;
                out.push_str(&format!(
                    "instance {i}: resident under load {:.1} → {:.1} MiB, file descriptors at rest \
                     {fd0} → {fd1} — {}\n",
                    rss0 as f64 / 1024.0,
                    rss1 as f64 / 1024.0,
                    if bounded { "bounded" } else { "GREW" }
                ));
            }
            _ => out.push_str(&format!(
                "instance {i}: restarted during the run, not compared\n"
            )),
        }
    }
    if let Some(min) = o.min_availability {
        let met = whole.availability >= min;
        ok &= met;
        out.push_str(&format!(
            "availability {:.3} % against {:.3} % — {}\n",
            whole.availability * 100.0,
            min * 100.0,
            if met { "met" } else { "MISSED" }
        ));
    }

    #[allow(clippy::print_stdout)]
    {
        println!("{out}");
    }
    if let Some(path) = &o.report {
        std::fs::write(path, &out).map_err(|e| format!("{path}: {e}"))?;
    }
    if let Some(path) = &o.svg {
        std::fs::write(path, report::svg(&records, &windows, end_ms))
            .map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(ok)
}

/// One authenticated request; its status.
async fn probe(addr: std::net::SocketAddr, key: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!(
        "GET /v1/items/0 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}

fn main() -> ExitCode {
    let instance = std::env::args().nth(1).as_deref() == Some("--instance");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if instance {
        // A demo instance, configured by the environment.
        return match runtime.block_on(example_demo::serve::run()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(o)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
