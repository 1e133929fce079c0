//! The over-admission bound of `FailurePolicy::Local { instances: n }` for
//! one subject under a GCRA limit of `rate` per second and `burst`
//! (docs/operations.md, "Over-admission while Redis is away").
//!
//! While an instance decides without Redis it enforces `ceil(rate / n)` per
//! second with a burst of `ceil(burst / n)` in its own memory. Against the
//! exact limit (`burst + rate × T`), an outage of `t` seconds that every
//! instance sees can admit, at most:
//! - the local bursts, `n × ceil(burst / n)`, spent at its start;
//! - the rounding, `(n × ceil(rate / n) − rate) × t`;
//! - the shared bucket, refilled meanwhile (Redis did not see the requests
//!   admitted locally), or empty after a restart: `burst` once Redis
//!   answers again;
//! - the way back, which is not at once: each instance's breaker keeps
//!   deciding locally until its next probe succeeds, up to `switch` (the
//!   retry interval, 1 s, plus the probe's timeout) after Redis is back,
//!   while the instances already back spend Redis's budget:
//!   `(n − 1) × ceil(rate / n) × switch`. After a failover an instance's
//!   client must also find the new primary first, so the run measures the
//!   way back (the last local decision after Redis was back) and takes the
//!   longer of that and `switch`.
//!
//! One instance of `n` cut off from Redis for `p` seconds, while the others
//! keep it, admits its share on top of what Redis admits to the others:
//! `ceil(burst / n) + ceil(rate / n) × (p + switch)`.

/// The breaker's retry interval (`RedisStore::retry_interval`, 1 s) plus
/// its probe's timeout (twice the demo's 100 ms call timeout).
pub(crate) const SWITCH: f64 = 1.2;

/// Admissions above the exact limit the bound allows, for fleet-wide
/// `outages` (each: seconds without Redis, and seconds from Redis back to
/// the fleet's last local decision, as measured) and `partitioned` seconds
/// of one instance cut off.
pub(crate) fn extra(
    rate: f64,
    burst: f64,
    n: f64,
    outages: &[(f64, f64)],
    partitioned: f64,
) -> f64 {
    let local_rate = (rate / n).ceil();
    let local_burst = (burst / n).ceil();
    let per_outage = |(t, back): (f64, f64)| {
        let s = back.max(SWITCH);
        n * local_burst + (n * local_rate - rate) * t + burst + (n - 1.0) * local_rate * s
    };
    let fleet: f64 = outages.iter().map(|o| per_outage(*o)).sum();
    let cut = if partitioned > 0.0 {
        local_burst + local_rate * (partitioned + SWITCH)
    } else {
        0.0
    };
    fleet + cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_adds_bursts_rounding_the_way_back_and_the_partitioned_share() {
        // 20/s, burst 20, 3 instances: local 7/s, burst 7 each.
        // One 2 s outage: 21 + 1 × 2 + 20 + 2 × 7 × 1.2 = 59.8.
        assert!((extra(20.0, 20.0, 3.0, &[(2.0, 0.4)], 0.0) - 59.8).abs() < 1e-9);
        // The way back as measured, when it is longer than the breaker's:
        // 2 s back → 21 + 2 + 20 + 2 × 7 × 2 = 71.
        assert!((extra(20.0, 20.0, 3.0, &[(2.0, 2.0)], 0.0) - 71.0).abs() < 1e-9);
        // A 2 s partition of one instance: 7 + 7 × 3.2 = 29.4.
        assert!((extra(20.0, 20.0, 3.0, &[], 2.0) - 29.4).abs() < 1e-9);
        assert_eq!(extra(20.0, 20.0, 3.0, &[], 0.0), 0.0);
    }
}
