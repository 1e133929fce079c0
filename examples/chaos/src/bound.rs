//! The over-admission bound of `FailurePolicy::Local { instances: n }` for
//! one subject under a GCRA limit of `rate` per second and `burst`
//! (docs/operations.md, "Over-admission while Redis is away").
//!
//! While the fleet decides without Redis, each instance enforces
//! `ceil(rate / n)` per second with a burst of `ceil(burst / n)` in its own
//! memory. Against the exact limit (`burst + rate × T`), an outage of `t`
//! seconds can admit, at most:
//! - the local bursts, `n × ceil(burst / n)`, spent at its start;
//! - the rounding, `(n × ceil(rate / n) − rate) × (t + retry)`: the breaker
//!   keeps deciding locally for up to `retry` (1 s) after Redis is back;
//! - the shared bucket, refilled meanwhile (Redis did not see the requests
//!   admitted locally): up to `burst` once Redis answers again — the same
//!   when Redis comes back empty.
//!
//! One instance of `n` cut off from Redis for `p` seconds, while the others
//! keep it, admits its share on top of what Redis admits to the others:
//! `ceil(burst / n) + ceil(rate / n) × (p + retry)`.

/// The breaker's retry interval (`RedisStore::retry_interval`, default).
const RETRY: f64 = 1.0;

/// Admissions above the exact limit the bound allows, for fleet-wide
/// outages of `outages` seconds each and `partitioned` seconds of one
/// instance cut off.
pub(crate) fn extra(rate: f64, burst: f64, n: f64, outages: &[f64], partitioned: f64) -> f64 {
    let local_rate = (rate / n).ceil();
    let local_burst = (burst / n).ceil();
    let per_outage = |t: f64| n * local_burst + (n * local_rate - rate) * (t + RETRY) + burst;
    let fleet: f64 = outages.iter().map(|t| per_outage(*t)).sum();
    let cut = if partitioned > 0.0 {
        local_burst + local_rate * (partitioned + RETRY)
    } else {
        0.0
    };
    fleet + cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_adds_bursts_rounding_and_the_partitioned_share() {
        // 20/s, burst 20, 3 instances: local 7/s, burst 7 each.
        // One 2 s outage: 21 + 1 × 3 + 20 = 44.
        assert_eq!(extra(20.0, 20.0, 3.0, &[2.0], 0.0), 44.0);
        // A 2 s partition of one instance: 7 + 7 × 3 = 28.
        assert_eq!(extra(20.0, 20.0, 3.0, &[], 2.0), 28.0);
        assert_eq!(extra(20.0, 20.0, 3.0, &[], 0.0), 0.0);
    }
}
