//! The multi-region simulation: three real redis-servers as three regions
//! (eu, us, ap), the links between them through proxies adding 1 / 40 /
//! 80 ms, several instances per region, each with a
//! `cog_ratelimit::region::GlobalStore` (deciding on a leased `RedisStore`
//! of its own region) and a `cog_cache::TieredCache` whose invalidations
//! reach every region.
//!
//! ```text
//! cargo run --release -p example-regions -- [--phase 10] [--limit 600]
//!     [--demand 2.0] [--instances 2] [--report docs/regions.md] [--svg docs/regions.svg]
//! ```
//!
//! Phases of `--phase` seconds: a baseline (one region, plain leased
//! store: the single-region latency), links up, ap cut off, healed. It
//! measures the decision latency the multi-region mode adds, what the
//! fleet admits against the exact global allowance (`limit·t + burst`),
//! each side's admissions during the partition, how long an invalidation
//! takes to reach every region, and how long shares take to agree after
//! healing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cog_cache::TieredCache;
use cog_ratelimit::region::{GlobalStore, RegionSet};
use cog_ratelimit::store::{Leasing, RedisStore, Store, connect};
use cog_ratelimit::{Limit, Quota};
use cog_testkit::Regions;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Cache = TieredCache<String, String>;

const NAMES: [&str; 3] = ["eu", "us", "ap"];
/// Share of the demand each region sends.
const WEIGHTS: [f64; 3] = [0.5, 0.3, 0.2];
const ROUND: Duration = Duration::from_millis(250);
const BUCKET_MS: u64 = 250;

struct Options {
    phase: Duration,
    limit: u64,
    demand: f64,
    instances: usize,
    report: Option<String>,
    svg: Option<String>,
}

fn options() -> Result<Options, Error> {
    let mut o = Options {
        phase: Duration::from_secs(10),
        limit: 600,
        demand: 2.0,
        instances: 2,
        report: None,
        svg: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--phase" => o.phase = Duration::from_secs(value()?.parse()?),
            "--limit" => o.limit = value()?.parse()?,
            "--demand" => o.demand = value()?.parse()?,
            "--instances" => o.instances = value()?.parse()?,
            "--report" => o.report = Some(value()?),
            "--svg" => o.svg = Some(value()?),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if o.instances == 0 || o.limit < 10 {
        return Err("--instances must be positive and --limit at least 10".into());
    }
    // NaN, infinite or not above 0 would panic where a request gap becomes
    // a `Duration`.
    if !(o.demand > 0.0 && o.demand.is_finite()) {
        return Err(format!("--demand {}: a multiple of the limit above 0", o.demand).into());
    }
    Ok(o)
}

struct Instance {
    region: usize,
    store: GlobalStore,
    cache: Cache,
}

/// Decision latencies (µs), and admissions per region per bucket.
#[derive(Default)]
struct Tally {
    latencies: Vec<u32>,
    admitted: Vec<[u64; 3]>,
}

fn percentile(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    // ns → ms
    f64::from(v[i]) / 1e6
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Error> {
    let o = options()?;
    let regions = Regions::start(3, Regions::one_forty_eighty).await?;
    let leasing = Leasing::new().lease_time(Duration::from_millis(100));
    let quota = Quota::single(Limit::per_second(o.limit).burst(o.limit / 10))?;
    let burst = o.limit / 10;
    let total_rate = o.limit as f64 * o.demand;
    // Baseline: one region (eu's Redis), plain leased stores, the same
    // instances and demand as the run: the single-region latency at the
    // same load against the limit.
    let per_instance = |region: usize| total_rate * WEIGHTS[region] / o.instances as f64;
    let baseline = {
        let end = Instant::now() + o.phase;
        let mut tasks = Vec::new();
        for region in 0..3 {
            for _ in 0..o.instances {
                let store = RedisStore::new(connect(&regions.url(0)).await?)
                    .timeout(Duration::from_millis(100))
                    .leased(leasing);
                let q = quota.clone();
                let gap = Duration::from_secs_f64(1.0 / per_instance(region));
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut due = Instant::now();
                    while Instant::now() < end {
                        let t = Instant::now();
                        let _ = store.check("baseline", &q, 1).await;
                        lat.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
                        due += gap;
                        tokio::time::sleep_until(due.into()).await;
                    }
                    lat
                }));
            }
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await?);
        }
        lat
    };
    let mut instances = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        for _ in 0..o.instances {
            let local = connect(&regions.url(i)).await?;
            let mut set = RegionSet::new(*name, local.clone()).sync_interval(ROUND);
            let mut cache = TieredCache::builder()
                .redis(local.clone())
                .schema("v1")
                .redis_retry_interval(Duration::from_millis(100));
            for j in (0..3).filter(|&j| j != i) {
                set = set.region(NAMES[j], connect(&regions.link_url(i, j)).await?);
                cache = cache.region(connect(&regions.link_url(i, j)).await?);
            }
            let store = GlobalStore::new(
                set,
                RedisStore::new(local)
                    .timeout(Duration::from_millis(100))
                    .leased(leasing),
            );
            let cache: Cache = cache.build()?;
            cache.invalidations_ready().await;
            instances.push(Arc::new(Instance {
                region: i,
                store,
                cache,
            }));
        }
    }
    eprintln!(
        "3 regions × {} instances, global limit {}/s (burst {burst}), demand {total_rate:.0}/s (eu {:.0} %, us {:.0} %, ap {:.0} %), phases of {:?}",
        o.instances,
        o.limit,
        WEIGHTS[0] * 100.0,
        WEIGHTS[1] * 100.0,
        WEIGHTS[2] * 100.0,
        o.phase
    );

    // The three phases, one timeline.
    let start = Instant::now();
    let buckets = (3 * o.phase.as_millis() as u64).div_ceil(BUCKET_MS) as usize + 1;
    let stop = Arc::new(AtomicBool::new(false));
    let mut drivers = Vec::new();
    for inst in &instances {
        let (inst, quota, stop) = (inst.clone(), quota.clone(), stop.clone());
        let gap = Duration::from_secs_f64(1.0 / per_instance(inst.region));
        drivers.push(tokio::spawn(async move {
            let mut tally = Tally {
                latencies: Vec::new(),
                admitted: vec![[0; 3]; buckets],
            };
            let mut due = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = inst
                    .store
                    .check("tenant", &quota, 1)
                    .await
                    .is_ok_and(|d| d.is_allowed());
                let took = t.elapsed();
                let at = (t - start).as_millis() as u64 / BUCKET_MS;
                if ok && let Some(b) = tally.admitted.get_mut(at as usize) {
                    b[inst.region] += 1;
                }
                tally
                    .latencies
                    .push(took.as_nanos().min(u128::from(u32::MAX)) as u32);
                due += gap;
                tokio::time::sleep_until(due.into()).await;
            }
            tally
        }));
    }

    // Invalidation probe: a key in every region, invalidated in one of
    // them (round robin), timed until no region has it.
    let first: Vec<Arc<Instance>> = (0..3).map(|r| instances[r * o.instances].clone()).collect();
    let probe_windows = Arc::new(windows::Windows::default());
    let probe = {
        let (first, stop, windows) = (first.clone(), stop.clone(), probe_windows.clone());
        let cut = Arc::new(AtomicBool::new(false));
        let probe_cut = cut.clone();
        let handle = tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(400)).await;
                if probe_cut.load(Ordering::Relaxed) {
                    continue;
                }
                n += 1;
                let key = format!("k{n}");
                for (r, inst) in first.iter().enumerate() {
                    inst.cache.insert(key.clone(), format!("v{r}")).await;
                }
                let from = (n % 3) as usize;
                let t = Instant::now();
                first[from].cache.invalidate(&key).await;
                loop {
                    let mut any = false;
                    for inst in &first {
                        any |= inst.cache.get(&key).await.is_some();
                    }
                    if !any || t.elapsed() > Duration::from_secs(5) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                // A probe the partition caught half-way measures the cut,
                // not the links.
                if !probe_cut.load(Ordering::Relaxed) {
                    windows.push(t.elapsed());
                }
            }
        });
        (handle, cut)
    };

    // Phase 1: links up.
    tokio::time::sleep_until((start + o.phase).into()).await;
    // Phase 2: ap cut off from eu and us, both ways.
    probe.1.store(true, Ordering::Relaxed);
    regions.isolate(2, true);
    tokio::time::sleep_until((start + 2 * o.phase).into()).await;
    // Phase 3: healed; time until the regions' shares agree again.
    regions.isolate(2, false);
    let healed = Instant::now();
    let mut converged = None;
    while healed.elapsed() < o.phase {
        let sum: f64 = first.iter().map(|i| i.store.share("tenant", &quota)).sum();
        if (sum - 1.0).abs() < 0.01 && converged.is_none() {
            converged = Some(healed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        if start.elapsed() >= 3 * o.phase {
            break;
        }
    }
    // The invalidations made in eu and us during the partition (the
    // probe's last ones) have reached ap by now?
    let drained = first.iter().all(|i| i.cache.regions_pending() == 0);
    tokio::time::sleep_until((start + 3 * o.phase).into()).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally {
        latencies: Vec::new(),
        admitted: vec![[0; 3]; buckets],
    };
    for d in drivers {
        let t = d.await?;
        all.latencies.extend(t.latencies);
        for (a, b) in all.admitted.iter_mut().zip(t.admitted) {
            for r in 0..3 {
                a[r] += b[r];
            }
        }
    }
    let _ = probe.0.await;

    // Figures.
    let phase_buckets = (o.phase.as_millis() as u64 / BUCKET_MS) as usize;
    let sum = |from: usize, to: usize, regions: &[usize]| -> u64 {
        all.admitted[from..to.min(all.admitted.len())]
            .iter()
            .map(|b| regions.iter().map(|&r| b[r]).sum::<u64>())
            .sum()
    };
    let secs = o.phase.as_secs_f64();
    // Skip each phase's first two seconds (shares settling) for the steady
    // figure; the whole phase for the worst case.
    let settle = (2_000 / BUCKET_MS) as usize;
    let steady = |p: usize, regions: &[usize]| {
        sum(p * phase_buckets + settle, (p + 1) * phase_buckets, regions)
    };
    let steady_secs = secs - (settle as u64 * BUCKET_MS) as f64 / 1000.0;
    let allowance = |t: f64| o.limit as f64 * t + burst as f64;
    let all3 = [0, 1, 2];
    let up = sum(0, phase_buckets, &all3);
    let cut_ab = sum(phase_buckets, 2 * phase_buckets, &[0, 1]);
    let cut_c = sum(phase_buckets, 2 * phase_buckets, &[2]);
    let healed_total = sum(2 * phase_buckets, 3 * phase_buckets, &all3);
    let mut base = baseline;
    let mut multi = all.latencies;
    let mut windows = probe_windows.take();
    windows.sort();
    let w = |p: f64| -> Duration {
        if windows.is_empty() {
            Duration::ZERO
        } else {
            windows[((windows.len() - 1) as f64 * p).round() as usize]
        }
    };

    let mut r = String::new();
    r.push_str(&format!(
        "setup: 3 regions × {} instances, links eu–us 1 ms, eu–ap 40 ms, us–ap 80 ms (each way), sync every {} ms, leased local stores (100 ms); global limit {}/s, burst {burst}; demand {total_rate:.0}/s (eu 50 %, us 30 %, ap 20 %); phases of {secs:.0} s\n\n",
        o.instances,
        ROUND.as_millis(),
        o.limit
    ));
    r.push_str("| decision latency | p50 | p99 | p99.9 |\n|---|---|---|---|\n");
    r.push_str(&format!(
        "| single region (leased `RedisStore`) | {:.4} ms | {:.3} ms | {:.3} ms |\n",
        percentile(&mut base, 0.5),
        percentile(&mut base, 0.99),
        percentile(&mut base, 0.999)
    ));
    r.push_str(&format!(
        "| multi-region (`GlobalStore` over it) | {:.4} ms | {:.3} ms | {:.3} ms |\n\n",
        percentile(&mut multi, 0.5),
        percentile(&mut multi, 0.99),
        percentile(&mut multi, 0.999)
    ));
    r.push_str(
        "| phase | admitted | exact allowance (limit·t + burst) | over |\n|---|---|---|---|\n",
    );
    let row = |name: &str, got: u64, allow: f64| {
        format!(
            "| {name} | {got} | {allow:.0} | {:+.1} % |\n",
            100.0 * (got as f64 - allow) / allow
        )
    };
    r.push_str(&row("links up, whole phase", up, allowance(secs)));
    r.push_str(&row(
        "links up, after 2 s",
        steady(0, &all3),
        allowance(steady_secs),
    ));
    r.push_str(&row("partition: eu + us", cut_ab, allowance(secs)));
    r.push_str(&row("partition: ap alone", cut_c, allowance(secs)));
    r.push_str(&row(
        "partition: both sides",
        cut_ab + cut_c,
        allowance(secs),
    ));
    r.push_str(&row("healed, whole phase", healed_total, allowance(secs)));
    r.push_str(&row(
        "healed, after 2 s",
        steady(2, &all3),
        allowance(steady_secs),
    ));
    r.push_str(&format!(
        "\ninvalidation reaching every region ({} probes, links up): p50 {:?}, p99 {:?}, max {:?}\n",
        windows.len(),
        w(0.5),
        w(0.99),
        w(1.0)
    ));
    r.push_str(&format!(
        "invalidations queued for a cut-off region delivered after healing: {}\n",
        if drained {
            "yes"
        } else {
            "not yet at the end of the run"
        }
    ));
    r.push_str(&format!(
        "shares agreeing again after healing: {}\n",
        converged.map_or("not within the phase".to_owned(), |d| format!("{d:?}"))
    ));
    #[allow(clippy::print_stdout)]
    {
        print!("{r}");
    }
    if let Some(path) = &o.report {
        std::fs::write(path, &r)?;
    }
    if let Some(path) = &o.svg {
        std::fs::write(path, svg(&all.admitted, o.limit, phase_buckets))?;
        eprintln!("chart written to {path}");
    }
    Ok(())
}

/// Admitted per second per region (stacked), the limit, the partition.
fn svg(buckets: &[[u64; 3]], limit: u64, phase: usize) -> String {
    let (w, h, left, bottom) = (900.0, 320.0, 50.0, 30.0);
    let n = buckets.len().max(1) as f64;
    let per_s = 1000.0 / BUCKET_MS as f64;
    let top = buckets
        .iter()
        .map(|b| b.iter().sum::<u64>() as f64 * per_s)
        .fold(limit as f64 * 1.6, f64::max);
    let x = |i: f64| left + (w - left - 10.0) * i / n;
    let y = |v: f64| (h - bottom) - (h - bottom - 10.0) * v / top;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    s.push_str(&format!(
        "<rect x=\"{:.1}\" y=\"10\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#f3d6d6\"/><text x=\"{:.1}\" y=\"24\">ap cut off</text>\n",
        x(phase as f64),
        x(2.0 * phase as f64) - x(phase as f64),
        h - bottom - 10.0,
        x(phase as f64) + 4.0
    ));
    let colors = ["#1f77b4", "#ff7f0e", "#2ca02c"];
    // Stacked areas: eu, eu+us, eu+us+ap.
    for top_region in (0..3).rev() {
        let mut d = format!("M{:.1},{:.1}", x(0.0), y(0.0));
        for (i, b) in buckets.iter().enumerate() {
            let v: u64 = b[..=top_region].iter().sum();
            d.push_str(&format!(
                " L{:.1},{:.1} L{:.1},{:.1}",
                x(i as f64),
                y(v as f64 * per_s),
                x(i as f64 + 1.0),
                y(v as f64 * per_s)
            ));
        }
        d.push_str(&format!(" L{:.1},{:.1} Z", x(n), y(0.0)));
        s.push_str(&format!(
            "<path d=\"{d}\" fill=\"{}\" fill-opacity=\"0.75\"/>\n",
            colors[top_region]
        ));
    }
    s.push_str(&format!(
        "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\" stroke-dasharray=\"5,3\"/><text x=\"{:.1}\" y=\"{:.1}\">global limit {limit}/s</text>\n",
        x(0.0),
        x(n),
        y(limit as f64),
        y(limit as f64),
        x(0.0) + 4.0,
        y(limit as f64) - 4.0
    ));
    for (r, name) in NAMES.iter().enumerate() {
        s.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\">{name} admitted</text>\n",
            w - 120.0,
            14.0 + 14.0 * r as f64,
            colors[r],
            w - 106.0,
            23.0 + 14.0 * r as f64
        ));
    }
    for t in (0..=buckets.len()).step_by((4 * phase / 10).max(1)) {
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\">{:.0} s</text>\n",
            x(t as f64) - 6.0,
            h - 12.0,
            t as f64 / per_s
        ));
    }
    for v in [0.0, top / 2.0, top] {
        s.push_str(&format!(
            "<text x=\"4\" y=\"{:.1}\">{v:.0}/s</text>\n",
            y(v) + 4.0
        ));
    }
    s.push_str("</svg>\n");
    s
}

/// Invalidation windows, shared with the probe task.
mod windows {
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Default)]
    pub(crate) struct Windows(Mutex<Vec<Duration>>);

    impl Windows {
        pub(crate) fn push(&self, d: Duration) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(d);
        }

        pub(crate) fn take(&self) -> Vec<Duration> {
            std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
        }
    }
}
