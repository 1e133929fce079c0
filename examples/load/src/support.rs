//! The load generator's bookkeeping, in fixed memory however long it
//! runs, and its Redis preparation, which never touches data it did not
//! write.

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

/// Latencies in µs, log-bucketed: values below 64 µs exactly, above within
/// 1/64 (1.6 %) — in 1 728 counters, however many are recorded.
#[derive(Clone)]
pub struct Latencies {
    counts: Vec<u64>,
    n: u64,
    max: u32,
}

const SUB: u32 = 64;
const BUCKETS: usize = 27 * SUB as usize;

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            counts: vec![0; BUCKETS],
            n: 0,
            max: 0,
        }
    }
}

impl Latencies {
    fn bucket(us: u32) -> usize {
        if us < SUB {
            return us as usize;
        }
        let e = 31 - us.leading_zeros(); // ≥ 6
        let m = (us >> (e - 6)) & (SUB - 1);
        ((e - 5) * SUB + m) as usize
    }

    /// The lowest value of bucket `i`.
    fn value(i: usize) -> u32 {
        let i = i as u32;
        if i < SUB {
            return i;
        }
        let (e, m) = (i / SUB + 5, i % SUB);
        (SUB + m) << (e - 6)
    }

    /// Counts one latency.
    pub fn record(&mut self, us: u32) {
        self.counts[Self::bucket(us)] += 1;
        self.n += 1;
        self.max = self.max.max(us);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.n += other.n;
        self.max = self.max.max(other.max);
    }

    /// How many were recorded.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// The `p` quantile (0–1) in ms; the exact maximum for `p = 1`.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        if p >= 1.0 {
            return f64::from(self.max) / 1000.0;
        }
        let rank = ((self.n as f64 * p).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return f64::from(Self::value(i).min(self.max)) / 1000.0;
            }
        }
        f64::from(self.max) / 1000.0
    }

    /// Bytes held: the same after one record or a billion.
    pub fn footprint(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<u64>()
    }
}

/// Latency over time for the chart, thinned as it grows: at most
/// `CAP` points, spread over the whole run.
#[derive(Default)]
pub struct Samples {
    points: Vec<(f32, u32)>,
    stride: u64,
    seen: u64,
}

impl Samples {
    const CAP: usize = 20_000;

    /// Offers one point; kept every `stride`-th, the stride doubling
    /// (and every other kept point dropped) when full.
    pub fn offer(&mut self, at_s: f32, us: u32) {
        let stride = self.stride.max(1);
        if self.seen.is_multiple_of(stride) {
            if self.points.len() >= Self::CAP {
                let mut keep = false;
                self.points.retain(|_| {
                    keep = !keep;
                    keep
                });
                self.stride = stride * 2;
            }
            self.points.push((at_s, us));
        }
        self.seen += 1;
    }

    /// The points kept.
    pub fn points(&self) -> &[(f32, u32)] {
        &self.points
    }

    /// Adds another's points (kept within the cap).
    pub fn merge(&mut self, other: Samples) {
        for (t, us) in other.points {
            if self.points.len() < Self::CAP * 4 {
                self.points.push((t, us));
            }
        }
    }
}

/// Requests sent on their own tasks (the open loop): finished ones are
/// reaped as new ones go out, so only those in flight are held.
pub struct InFlight<T> {
    set: tokio::task::JoinSet<T>,
}

impl<T: Send + 'static> Default for InFlight<T> {
    fn default() -> Self {
        InFlight {
            set: tokio::task::JoinSet::new(),
        }
    }
}

impl<T: Send + 'static> InFlight<T> {
    /// Starts `task`; hands every finished task's output to `done`.
    pub fn spawn(
        &mut self,
        task: impl Future<Output = T> + Send + 'static,
        mut done: impl FnMut(T),
    ) {
        while let Some(r) = self.set.try_join_next() {
            if let Ok(v) = r {
                done(v);
            }
        }
        self.set.spawn(task);
    }

    /// Waits for the rest.
    pub async fn finish(mut self, mut done: impl FnMut(T)) {
        while let Some(r) = self.set.join_next().await {
            if let Ok(v) = r {
                done(v);
            }
        }
    }

    /// Tasks held (in flight, or finished and not yet reaped).
    pub fn len(&self) -> usize {
        self.set.len()
    }
}

/// Why the load generator will not run against a Redis.
#[derive(Debug)]
pub enum NotEmpty {
    /// The database holds keys this run did not write.
    Keys(u64),
    /// Redis could not be asked.
    Redis(String),
}

impl std::fmt::Display for NotEmpty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotEmpty::Keys(n) => write!(
                f,
                "the Redis database at COG_REDIS_URL holds {n} keys this run did not write; \
                 point COG_REDIS_URL at an empty database (e.g. redis://host:6379/15), or pass \
                 --flush-redis to empty that database (FLUSHDB: that database only)"
            ),
            NotEmpty::Redis(e) => write!(f, "asking Redis: {e}"),
        }
    }
}

impl std::error::Error for NotEmpty {}

/// Makes sure the run starts from an empty database, so the report is
/// about this run: an empty one is used as is; a non-empty one is
/// refused unless `flush` (then `FLUSHDB` — never another database).
pub async fn prepare_redis(url: &str, flush: bool) -> Result<(), NotEmpty> {
    use fred::interfaces::ClientLike;
    let client = cog_ratelimit::store::connect(url)
        .await
        .map_err(|e| NotEmpty::Redis(e.to_string()))?;
    let keys: u64 = client
        .custom(fred::cmd!("DBSIZE"), Vec::<String>::new())
        .await
        .map_err(|e| NotEmpty::Redis(e.to_string()))?;
    if keys > 0 {
        if !flush {
            return Err(NotEmpty::Keys(keys));
        }
        let _: () = client
            .custom(fred::cmd!("FLUSHDB"), Vec::<String>::new())
            .await
            .map_err(|e| NotEmpty::Redis(e.to_string()))?;
    }
    let _ = client.quit().await;
    Ok(())
}

/// `EVALSHA` calls Redis has run that found their script.
pub async fn script_calls(url: &str) -> Result<u64, NotEmpty> {
    use fred::interfaces::ClientLike;
    let client = cog_ratelimit::store::connect(url)
        .await
        .map_err(|e| NotEmpty::Redis(e.to_string()))?;
    let info: String = client
        .custom(fred::cmd!("INFO"), vec!["commandstats"])
        .await
        .map_err(|e| NotEmpty::Redis(e.to_string()))?;
    let _ = client.quit().await;
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
            .and_then(|l| l.split(',').find_map(|kv| kv.strip_prefix(name)))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Ok(field("calls=").saturating_sub(field("failed_calls=")))
}

/// Seconds since `started`, for chart points.
pub fn since(started: Instant, at: Instant) -> f32 {
    at.saturating_duration_since(started).as_secs_f32()
}

/// A latency in whole µs.
pub fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}
