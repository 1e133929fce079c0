//! Load generator for the demo: real HTTP, a tenant mix, zipf-distributed
//! keys; reports latency percentiles, throughput, cache hit ratios,
//! upstream calls saved, 429s, and the rate-limit decision's own latency.
//!
//! ```text
//! cargo run --release -p example-load -- [--duration 30] [--rate 2500 | --max]
//!     [--concurrency 64] [--keys 2000] [--zipf 1.1] [--mix 50,30,20] [--items 0.2]
//!     [--svg docs/load.svg] [--flush-redis] [--instances 1] [--leased-ms 100]
//!     [--regions [--partition 10:20]] [--deployments [--move-at 10]]
//! ```
//!
//! `--instances N` runs N demo instances in this process, sharing Redis and
//! the control file, and spreads the connections over them;
//! `--leased-ms` turns on the leased rate-limit mode with that lease time.
//!
//! `--regions` starts three redis-servers as three regions (eu, us, ap)
//! behind the testkit's proxies (1 / 40 / 80 ms between them), runs
//! `--instances` demo instances per region — each deciding global limits
//! on its own region's Redis (`COG_REGION`), the control plane in eu — and
//! reports latency per region and what the noisy tenant's global limit
//! admitted; `--partition FROM:TO` cuts ap off from second FROM to TO.
//! `--deployments` starts two redis-servers tenants are placed on by the
//! control plane (`COG_DEPLOYMENTS`); `--move-at S` moves the noisy
//! tenant's partition to the other one at second S, under the load.
//! With Redis, the report counts the rate limiter's Redis calls per request
//! and what the noisy tenant was admitted against what its limit allows.
//!
//! By default requests go out on a fixed schedule (`--rate`, 2 500/s), each
//! on its own task, and each latency is measured from when the request was
//! *due*, so a stall is not hidden by the requests it delayed (no
//! coordinated omission). With `--max`, each of `--concurrency`
//! connections sends its next request as soon as the last one is answered
//! (closed loop: the maximum throughput, with the machine saturated).
//!
//! The demo runs in this process (so its cache and model counters can be
//! read) and is driven over real HTTP on a loopback port. With
//! `COG_REDIS_URL` set, it shares everything through that Redis, as in
//! production — an empty database, so the report is about this run: it
//! refuses one that holds keys unless `--flush-redis` (which empties that
//! database only, `FLUSHDB`). Memory stays fixed however long it runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng;

mod support;
mod topology;

use example_demo::app;

use support::{InFlight, Latencies, Samples, micros, since};

struct Options {
    duration: Duration,
    concurrency: usize,
    rate: Option<f64>,
    keys: usize,
    zipf: f64,
    mix: Vec<f64>,
    items: f64,
    upstream: Duration,
    svg: Option<String>,
    flush_redis: bool,
    instances: usize,
    lease: Option<Duration>,
    regions: bool,
    partition: Option<(f64, f64)>,
    deployments: bool,
    move_at: Option<f64>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        duration: Duration::from_secs(30),
        concurrency: 64,
        rate: Some(2500.0),
        keys: 2000,
        zipf: 1.1,
        mix: vec![50.0, 30.0, 20.0],
        items: 0.2,
        upstream: Duration::from_millis(200),
        svg: None,
        flush_redis: false,
        instances: 1,
        lease: None,
        regions: false,
        partition: None,
        deployments: false,
        move_at: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--duration" => {
                o.duration = Duration::from_secs(value()?.parse().map_err(|e| bad(&e))?)
            }
            "--concurrency" => o.concurrency = value()?.parse().map_err(|e| bad(&e))?,
            "--rate" => o.rate = Some(value()?.parse().map_err(|e| bad(&e))?),
            "--max" => o.rate = None,
            "--keys" => o.keys = value()?.parse().map_err(|e| bad(&e))?,
            "--zipf" => o.zipf = value()?.parse().map_err(|e| bad(&e))?,
            "--items" => o.items = value()?.parse().map_err(|e| bad(&e))?,
            "--upstream-ms" => {
                o.upstream = Duration::from_millis(value()?.parse().map_err(|e| bad(&e))?)
            }
            "--mix" => {
                o.mix = value()?
                    .split(',')
                    .map(|w| w.trim().parse::<f64>().map_err(|e| bad(&e)))
                    .collect::<Result<_, _>>()?
            }
            "--svg" => o.svg = Some(value()?),
            "--flush-redis" => o.flush_redis = true,
            "--instances" => o.instances = value()?.parse().map_err(|e| bad(&e))?,
            "--leased-ms" => {
                o.lease = Some(Duration::from_millis(
                    value()?.parse().map_err(|e| bad(&e))?,
                ))
            }
            "--regions" => o.regions = true,
            "--deployments" => o.deployments = true,
            "--partition" => {
                let v = value()?;
                let (from, to) = v.split_once(':').ok_or_else(|| bad(&"expected FROM:TO"))?;
                o.partition = Some((
                    from.parse().map_err(|e| bad(&e))?,
                    to.parse().map_err(|e| bad(&e))?,
                ));
            }
            "--move-at" => o.move_at = Some(value()?.parse().map_err(|e| bad(&e))?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.mix.is_empty() || o.keys == 0 || o.concurrency == 0 || o.instances == 0 {
        return Err("--mix, --keys and --concurrency must not be empty or zero".into());
    }
    // Times and weights: a negative or non-finite one would panic where it
    // becomes a `Duration`, or skew every draw.
    let numbers = [
        ("--rate", o.rate),
        ("--zipf", Some(o.zipf)),
        ("--items", Some(o.items)),
    ]
    .into_iter()
    .chain(
        o.partition
            .into_iter()
            .flat_map(|(a, b)| [("--partition", Some(a)), ("--partition", Some(b))]),
    )
    .chain([("--move-at", o.move_at)])
    .chain(o.mix.iter().map(|w| ("--mix", Some(*w))));
    for (flag, v) in numbers {
        if let Some(v) = v.filter(|v| !v.is_finite() || *v < 0.0) {
            return Err(format!("{flag}: {v} is not a number of 0 or more"));
        }
    }
    if o.items > 1.0 || o.mix.iter().sum::<f64>() == 0.0 {
        return Err("--items is a share (0 to 1); --mix needs a weight above 0".into());
    }
    if o.regions && o.deployments {
        return Err("--regions and --deployments: one at a time".into());
    }
    if o.partition.is_some() && !o.regions || o.move_at.is_some() && !o.deployments {
        return Err("--partition needs --regions, --move-at needs --deployments".into());
    }
    Ok(o)
}

/// Draws ranks 0..n with probability ∝ 1/(rank+1)^s (inverse CDF).
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1)
    }
}

#[derive(Default)]
struct Tally {
    latencies: Latencies,
    statuses: BTreeMap<u16, u64>,
    completes: u64,
    /// The noisy tenant's requests, and how many were admitted.
    noisy_sent: u64,
    noisy_ok: u64,
    /// The noisy tenant's admissions per second of the run.
    noisy_per_s: Vec<u64>,
    /// (seconds since start, latency µs) for the chart, thinned.
    samples: Samples,
}

impl Tally {
    /// Counts a noisy tenant's admission, by second of the run.
    fn noisy(&mut self, started: Instant, at: Instant, admitted: bool) {
        if !admitted {
            return;
        }
        self.noisy_ok += 1;
        let second = at.saturating_duration_since(started).as_secs() as usize;
        if self.noisy_per_s.len() <= second {
            self.noisy_per_s.resize(second + 1, 0);
        }
        self.noisy_per_s[second] += 1;
    }

    fn record(&mut self, started: Instant, at: Instant, status: u16, took: Duration) {
        let us = micros(took);
        self.latencies.record(us);
        *self.statuses.entry(status).or_default() += 1;
        self.samples.offer(since(started, at), us);
    }
}

/// Sends one request and reads the whole answer; 0 when it failed.
async fn send<C>(client: &Client<C, Full<Bytes>>, req: Request<Full<Bytes>>) -> u16
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    match client.request(req).await {
        Ok(res) => {
            let s = res.status();
            let _ = res.into_body().collect().await;
            s.as_u16()
        }
        Err(_) => 0,
    }
}

#[tokio::main]
async fn main() -> Result<(), app::Error> {
    let o = options().unwrap_or_else(|e| {
        eprintln!("load: {e}");
        std::process::exit(2)
    });
    let dir = std::env::temp_dir().join(format!("cog-load-{}", std::process::id()));
    let config = app::Config {
        redis_url: std::env::var("COG_REDIS_URL")
            .ok()
            .filter(|u| !u.is_empty()),
        store: format!("file:{}", dir.join("state.json").display()),
        upstream: o.upstream,
        database: Duration::from_millis(5),
        poll: Duration::from_secs(1),
        redis_timeout: Duration::from_millis(100),
        python: None,
        control_url: None,
        instances: o.instances.max(2) as u64,
        lease: o.lease,
        ..app::Config::default()
    };
    let topology = topology::Topology::start(o.regions, o.deployments).await?;
    if let (topology::Topology::Single, Some(url)) = (&topology, &config.redis_url) {
        support::prepare_redis(url, o.flush_redis).await?;
    }
    let demo = Arc::new(app::build(&topology.config(&config, 0)).await?);
    // One tenant per mix entry: all on a plan the load fits in, except the
    // last (when there are several), a noisy tenant on `free` (10/s) —
    // that is where the 429s come from.
    demo.control
        .create_plan(
            "load",
            cog_control::Plan {
                limits: vec![cog_control::LimitSpec::parse(
                    "requests=1000000/1s,burst=1000000",
                )?],
                ..Default::default()
            },
        )
        .await?;
    let mut keys = Vec::new();
    for i in 0..o.mix.len() {
        let id = format!("load{i}");
        let plan = if i + 1 == o.mix.len() && i > 0 {
            "free"
        } else {
            "load"
        };
        demo.control
            .create_tenant(&id, cog_control::Tenant::new(plan))
            .await?;
        keys.push(demo.control.create_key(&id, None).await?.secret);
    }
    if let topology::Topology::Deployments(_) = &topology {
        for name in topology::DEPLOYMENTS {
            demo.control.add_deployment(name).await?;
        }
    }
    demo.directory.refresh().await?;

    // The other instances read the tenants from the shared control store;
    // with regions, `--instances` in each.
    let mut routers = Vec::new();
    let mut groups = Vec::new();
    for group in 0..topology.groups() {
        for i in 0..o.instances {
            let router = if group == 0 && i == 0 {
                demo.router.clone()
            } else {
                let other = app::build(&topology.config(&config, group)).await?;
                other.directory.refresh().await?;
                other.router.clone()
            };
            routers.push(router);
            groups.push(group);
        }
    }
    let mut addrs = Vec::new();
    for router in routers {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, router).await });
    }
    let addr = addrs[0];
    let noisy = (o.mix.len() > 1).then(|| o.mix.len() - 1);
    // Redis calls and the probe: for one Redis only.
    let single_redis = match topology {
        topology::Topology::Single => config.redis_url.clone(),
        _ => None,
    };
    let scripts_before = match &single_redis {
        Some(url) => Some(support::script_calls(url).await?),
        None => None,
    };

    // The rate-limit decision's own latency (one `EVALSHA` round trip),
    // measured beside the load on a thread and runtime of its own, so it
    // does not queue behind the load's tasks.
    let duration = o.duration;
    let probe = single_redis.clone().map(|url| {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let client = cog_ratelimit::store::connect(&url).await.expect("redis");
                let store = cog_ratelimit::store::RedisStore::new(client);
                let quota =
                    cog_ratelimit::Quota::single(cog_ratelimit::Limit::per_second(1_000_000))
                        .expect("a quota");
                let mut lat = Latencies::default();
                let end = Instant::now() + duration;
                while Instant::now() < end {
                    let t = Instant::now();
                    let _ =
                        cog_ratelimit::store::Store::check(&store, "load-probe", &quota, 1).await;
                    lat.record(micros(t.elapsed()));
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                lat
            })
        })
    });

    let total_weight: f64 = o.mix.iter().sum();
    let zipf = Arc::new(Zipf::new(o.keys, o.zipf));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(o.concurrency)
        .build_http();
    let started = Instant::now();
    let deadline = started + o.duration;
    eprintln!(
        "driving http://{addr} for {:?}: {} connections{}, {} tenants (mix {:?}), {} keys (zipf {}), {}% items, backends: {}",
        o.duration,
        o.concurrency,
        o.rate.map(|r| format!(" at {r} req/s")).unwrap_or_default(),
        o.mix.len(),
        o.mix,
        o.keys,
        o.zipf,
        (o.items * 100.0) as u32,
        topology.describe(&config)
    );
    // The faults and moves the run asks for, on time.
    let events = {
        let (partition, move_at) = (o.partition, o.move_at);
        let control = demo.control.clone();
        let noisy_tenant = format!("load{}", o.mix.len() - 1);
        let regions = match &topology {
            topology::Topology::Regions(r) => Some(r),
            _ => None,
        };
        let at =
            move |s: f64| tokio::time::sleep_until((started + Duration::from_secs_f64(s)).into());
        async move {
            if let (Some((from, to)), Some(r)) = (partition, regions) {
                at(from).await;
                r.isolate(2, true);
                eprintln!("{from} s: ap cut off");
                at(to).await;
                r.isolate(2, false);
                eprintln!("{to} s: ap back");
            }
            if let Some(s) = move_at {
                at(s).await;
                let p = cog_core::placement::partition(&noisy_tenant);
                match control.move_partition(p, topology::DEPLOYMENTS[1]).await {
                    Ok(t) => eprintln!(
                        "{s} s: partition {p} ({noisy_tenant}) moved to {} (placement revision {})",
                        topology::DEPLOYMENTS[1],
                        t.revision
                    ),
                    Err(e) => eprintln!("{s} s: the move failed: {e}"),
                }
            }
        }
    };

    let mut workers = Vec::new();
    for w in 0..o.concurrency {
        let (client, zipf, keys, mix) = (client.clone(), zipf.clone(), keys.clone(), o.mix.clone());
        let items = o.items;
        let addr = addrs[w % addrs.len()];
        // Open loop: this connection's share of the rate, staggered.
        let interval = o
            .rate
            .map(|r| Duration::from_secs_f64(o.concurrency as f64 / r.max(0.001)));
        let mut due = started
            + interval.map_or(Duration::ZERO, |i| {
                i.mul_f64(w as f64 / o.concurrency as f64)
            });
        workers.push(tokio::spawn(async move {
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_rng(&mut rand::rng());
            let mut tally = Tally::default();
            let mut in_flight = InFlight::default();
            while Instant::now() < deadline {
                let mut pick = rng.random::<f64>() * total_weight;
                let mut tenant = 0;
                while tenant + 1 < mix.len() && pick >= mix[tenant] {
                    pick -= mix[tenant];
                    tenant += 1;
                }
                let k = zipf.sample(&mut rng);
                let is_noisy = Some(tenant) == noisy;
                tally.noisy_sent += u64::from(is_noisy);
                let req = if rng.random::<f64>() < items {
                    Request::builder()
                        .method(Method::GET)
                        .uri(format!("http://{addr}/v1/items/{k}"))
                        .header("authorization", format!("Bearer {}", keys[tenant]))
                        .body(Full::new(Bytes::new()))
                } else {
                    tally.completes += 1;
                    Request::builder()
                        .method(Method::POST)
                        .uri(format!("http://{addr}/v1/complete"))
                        .header("authorization", format!("Bearer {}", keys[tenant]))
                        .body(Full::new(Bytes::from(format!(
                            "{{\"prompt\": \"question {k}\"}}"
                        ))))
                }
                .expect("a request");
                match interval {
                    // Open loop: the request goes out when due, on its own
                    // task (a slow answer delays nothing else), and its
                    // latency counts from when it was due.
                    Some(i) => {
                        tokio::time::sleep_until(due.into()).await;
                        let at = due;
                        due += i;
                        let client = client.clone();
                        in_flight.spawn(
                            async move {
                                let status = send(&client, req).await;
                                (at, status, at.elapsed(), is_noisy)
                            },
                            |(at, status, took, noisy)| {
                                tally.noisy(started, at, noisy && status == 200);
                                tally.record(started, at, status, took)
                            },
                        );
                    }
                    None => {
                        let t = Instant::now();
                        let status = send(&client, req).await;
                        tally.noisy(started, t, is_noisy && status == 200);
                        tally.record(started, t, status, t.elapsed());
                    }
                }
            }
            in_flight
                .finish(|(at, status, took, noisy)| {
                    tally.noisy(started, at, noisy && status == 200);
                    tally.record(started, at, status, took)
                })
                .await;
            tally
        }));
    }
    events.await;
    let mut all = Tally::default();
    let mut by_group: Vec<Latencies> = vec![Latencies::default(); topology.groups()];
    for (w, worker) in workers.into_iter().enumerate() {
        let t = worker.await?;
        by_group[groups[w % groups.len()]].merge(&t.latencies);
        if all.noisy_per_s.len() < t.noisy_per_s.len() {
            all.noisy_per_s.resize(t.noisy_per_s.len(), 0);
        }
        for (a, b) in all.noisy_per_s.iter_mut().zip(&t.noisy_per_s) {
            *a += b;
        }
        all.latencies.merge(&t.latencies);
        for (s, c) in t.statuses {
            *all.statuses.entry(s).or_default() += c;
        }
        all.completes += t.completes;
        all.noisy_sent += t.noisy_sent;
        all.noisy_ok += t.noisy_ok;
        all.samples.merge(t.samples);
    }
    let elapsed = started.elapsed();
    let requests = all.latencies.len() as f64;
    let stats = demo.completions.stats();
    let pages = demo.pages.stats();
    let model_calls = demo.counters.model_calls.load(Ordering::Relaxed);
    let db_reads = demo.counters.database_reads.load(Ordering::Relaxed);
    let lookups = (stats.l1_hits + stats.l1_misses).max(1) as f64;
    let ok = *all.statuses.get(&200).unwrap_or(&0);
    let limited = *all.statuses.get(&429).unwrap_or(&0);
    let errors: u64 = all
        .statuses
        .iter()
        .filter(|(s, _)| **s == 0 || **s >= 500)
        .map(|(_, c)| c)
        .sum();

    let mut report = String::new();
    report.push_str(&format!(
        "requests: {} in {:.1} s = {:.0} req/s; 200: {ok}, 429: {limited}, 5xx or failed: {errors}\n",
        requests as u64,
        elapsed.as_secs_f64(),
        requests / elapsed.as_secs_f64()
    ));
    report.push_str(&format!(
        "latency ms: p50 {:.2}, p95 {:.2}, p99 {:.2}, max {:.2}\n",
        all.latencies.percentile_ms(0.50),
        all.latencies.percentile_ms(0.95),
        all.latencies.percentile_ms(0.99),
        all.latencies.percentile_ms(1.0)
    ));
    report.push_str(&format!(
        "completions cache: L1 hit {:.1}%, L2 hit {:.1}% of L1 misses, overall hit {:.1}%; stale served {}\n",
        100.0 * stats.l1_hits as f64 / lookups,
        100.0 * stats.l2_hits as f64 / (stats.l1_misses.max(1)) as f64,
        100.0 * (1.0 - model_calls as f64 / lookups),
        stats.stale_served
    ));
    report.push_str(&format!(
        "upstream model calls: {model_calls} for {} completions admitted = {:.1}% saved\n",
        stats.l1_hits + stats.l1_misses,
        100.0 * (1.0 - model_calls as f64 / lookups)
    ));
    report.push_str(&format!(
        "items (HTTP cache): L1 hits {}, L2 hits {}, database reads {db_reads}\n",
        pages.l1_hits, pages.l2_hits
    ));
    if let Some(probe) = probe {
        let lat = probe.join().map_err(|_| "the probe thread panicked")?;
        report.push_str(&format!(
            "rate-limit decision (Redis round trip, beside the load): p50 {:.3} ms, p99 {:.3} ms over {} decisions\n",
            lat.percentile_ms(0.5),
            lat.percentile_ms(0.99),
            lat.len()
        ));
        if let (Some(url), Some(before)) = (&single_redis, scripts_before) {
            // The limiter's calls are the EVALSHAs (the cache runs none),
            // less the probe's one per decision.
            let calls = support::script_calls(url)
                .await?
                .saturating_sub(before + lat.len());
            report.push_str(&format!(
                "rate-limit Redis calls ({} instance(s), {}): {calls} = {:.4} per request\n",
                addrs.len(),
                match o.lease {
                    Some(t) => format!("leased, lease time {} ms", t.as_millis()),
                    None => "exact".to_owned(),
                },
                calls as f64 / requests.max(1.0)
            ));
        }
    }
    if noisy.is_some() {
        // `free`: 10/s, burst 20.
        let allowed = 20.0 + 10.0 * elapsed.as_secs_f64();
        report.push_str(&format!(
            "noisy tenant (free, 10/s, burst 20): {} admitted of {} sent; its limit allows {:.0} in {:.1} s\n",
            all.noisy_ok,
            all.noisy_sent,
            allowed,
            elapsed.as_secs_f64()
        ));
    }
    if let topology::Topology::Regions(_) = &topology {
        for (g, lat) in by_group.iter().enumerate() {
            report.push_str(&format!(
                "{}: {} requests, latency ms p50 {:.2}, p99 {:.2}\n",
                topology::REGIONS[g],
                lat.len(),
                lat.percentile_ms(0.5),
                lat.percentile_ms(0.99)
            ));
        }
    }
    if noisy.is_some() && (o.partition.is_some() || o.move_at.is_some()) {
        report.push_str(&phases(&all.noisy_per_s, o.partition, o.move_at, elapsed));
    }
    #[allow(clippy::print_stdout)]
    {
        print!("{report}");
    }

    if let Some(path) = &o.svg {
        std::fs::write(path, svg(all.samples.points(), elapsed.as_secs_f32()))?;
        eprintln!("latency chart written to {path}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The noisy tenant's admissions (free: 10/s, burst 20) per phase of the
/// run, against what one exact global count allows in it.
fn phases(
    per_s: &[u64],
    partition: Option<(f64, f64)>,
    move_at: Option<f64>,
    elapsed: Duration,
) -> String {
    let end = elapsed.as_secs_f64();
    let mut cuts: Vec<(f64, &str)> = vec![(0.0, "start")];
    if let Some((from, to)) = partition {
        cuts.push((from, "ap cut off"));
        cuts.push((to, "healed"));
    }
    if let Some(at) = move_at {
        cuts.push((at, "moved"));
    }
    cuts.push((end, "end"));
    let mut out = String::from("noisy tenant by phase (admitted / an exact count's allowance):\n");
    for pair in cuts.windows(2) {
        let ((from, name), (to, _)) = (pair[0], pair[1]);
        let admitted: u64 = per_s
            .iter()
            .enumerate()
            .filter(|(s, _)| (*s as f64) >= from.floor() && (*s as f64) < to.floor())
            .map(|(_, n)| n)
            .sum();
        let seconds = to.floor() - from.floor();
        let burst = if from == 0.0 { 20.0 } else { 0.0 };
        out.push_str(&format!(
            "  {from:>5.1}–{to:<5.1} s from {name}: {admitted} / {:.0}\n",
            burst + 10.0 * seconds
        ));
    }
    out
}

/// A scatter of latency over time (log scale), as a small SVG.
fn svg(samples: &[(f32, u32)], seconds: f32) -> String {
    let (w, h, pad) = (800.0f32, 320.0f32, 40.0f32);
    let max_ms = samples.iter().map(|s| s.1).max().unwrap_or(1).max(1000) as f32 / 1000.0;
    let y = |ms: f32| {
        let top = max_ms.log10();
        let bottom = -2.0f32; // 10 µs
        let v = ms.max(0.01).log10();
        h - pad - (v - bottom) / (top - bottom) * (h - 2.0 * pad)
    };
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="16">latency per request (ms, log scale) over {seconds:.0} s</text>
"#
    );
    for ms in [0.1f32, 1.0, 10.0, 100.0, 1000.0] {
        if ms <= max_ms * 1.01 {
            let yy = y(ms);
            out.push_str(&format!(
                "<line x1=\"{pad}\" x2=\"{}\" y1=\"{yy}\" y2=\"{yy}\" stroke=\"#ddd\"/><text x=\"2\" y=\"{}\">{ms}</text>\n",
                w - 10.0,
                yy + 4.0
            ));
        }
    }
    for (t, us) in samples.iter().step_by((samples.len() / 1500).max(1)) {
        let x = pad + t / seconds.max(0.001) * (w - pad - 10.0);
        out.push_str(&format!(
            "<circle cx=\"{x:.1}\" cy=\"{:.1}\" r=\"1\" fill=\"#36c\" fill-opacity=\"0.4\"/>\n",
            y(*us as f32 / 1000.0)
        ));
    }
    out.push_str("</svg>\n");
    out
}
