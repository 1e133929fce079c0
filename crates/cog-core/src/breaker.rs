//! A circuit breaker for calls to a shared backend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A circuit breaker: after a failure, callers stop using the backend for
/// a retry interval (with optional jitter, so a fleet of instances does not
/// probe in lockstep); then exactly one caller at a time probes it, and a
/// success closes the breaker.
///
/// A probe whose caller gives up (its future dropped) never reports back:
/// after `probe_timeout` another caller may probe, so the breaker can never
/// stay open for good.
///
/// Lock-free; every method is a few atomic operations.
#[derive(Debug)]
pub struct Breaker {
    retry: Duration,
    jitter: f64,
    probe_timeout: Duration,
    clock: quanta::Clock,
    start: u64,
    /// Clock time until which the breaker stays open (0: closed).
    open_until: AtomicU64,
    /// Clock time the current probe started (0: none).
    probe_started: AtomicU64,
}

/// What a caller should do, from [`Breaker::allow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// The breaker is closed: call the backend.
    Call,
    /// The breaker is half-open and this caller is the probe: call, and
    /// report the outcome.
    Probe,
    /// The breaker is open: do not call.
    Reject,
}

impl Permit {
    /// Whether the backend may be called.
    pub fn may_call(self) -> bool {
        self != Permit::Reject
    }
}

impl Breaker {
    /// A closed breaker that stays open `retry` after a failure and lets
    /// another probe through when one has not answered in `probe_timeout`.
    pub fn new(retry: Duration, probe_timeout: Duration) -> Self {
        let clock = quanta::Clock::new();
        let start = clock.raw();
        Breaker {
            retry,
            jitter: 0.0,
            probe_timeout,
            clock,
            start,
            open_until: AtomicU64::new(0),
            probe_started: AtomicU64::new(0),
        }
    }

    /// Spreads each open period uniformly over `retry × (1 ± fraction)`
    /// (`fraction` clamped to `0..=1`).
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    fn now(&self) -> u64 {
        // +1: a reading of 0 means "unset".
        self.clock.delta_as_nanos(self.start, self.clock.raw()) + 1
    }

    /// Whether a call may go to the backend now.
    pub fn allow(&self) -> Permit {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Permit::Call;
        }
        let now = self.now();
        if now < until {
            return Permit::Reject;
        }
        let started = self.probe_started.load(Ordering::Acquire);
        let stale = self.probe_timeout.as_nanos() as u64;
        if (started == 0 || now > started.saturating_add(stale))
            && self
                .probe_started
                .compare_exchange(started, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            Permit::Probe
        } else {
            Permit::Reject
        }
    }

    /// Reports a successful call. Returns `true` if this closed the breaker.
    pub fn success(&self) -> bool {
        // Cheap when closed: a load, no write.
        if self.open_until.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.probe_started.store(0, Ordering::Release);
        self.open_until.swap(0, Ordering::AcqRel) != 0
    }

    /// Reports a failed call. Returns `true` if this opened the breaker
    /// (it was closed).
    pub fn failure(&self) -> bool {
        let mut wait = self.retry.as_nanos() as f64;
        if self.jitter > 0.0 {
            wait *= 1.0 + self.jitter * (rand::random::<f64>() * 2.0 - 1.0);
        }
        let until = self.now() + wait.max(0.0) as u64;
        let was = self.open_until.swap(until, Ordering::AcqRel);
        self.probe_started.store(0, Ordering::Release);
        was == 0
    }

    /// Whether the breaker is open (or half-open): the backend failed and
    /// has not answered a probe since.
    pub fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_once_and_closes() {
        let b = Breaker::new(Duration::ZERO, Duration::from_secs(3600));
        assert_eq!(b.allow(), Permit::Call);
        assert!(b.failure());
        assert!(b.is_open());
        // Retry interval over: one probe, the rest rejected until it reports.
        assert_eq!(b.allow(), Permit::Probe);
        assert_eq!(b.allow(), Permit::Reject);
        assert!(!b.failure(), "already open");
        assert_eq!(b.allow(), Permit::Probe);
        assert!(b.success());
        assert_eq!(b.allow(), Permit::Call);
        assert!(!b.success());
    }

    #[test]
    fn an_abandoned_probe_expires() {
        let b = Breaker::new(Duration::ZERO, Duration::ZERO);
        b.failure();
        assert_eq!(b.allow(), Permit::Probe);
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(b.allow(), Permit::Probe, "a silent probe blocks forever");
    }

    /// With jitter `f`, each open period falls in `retry × (1 ± f)` and
    /// they differ; without, each is `retry`.
    #[test]
    fn jitter_spreads_open_periods_within_its_fraction() {
        let retry = Duration::from_secs(1000).as_nanos() as f64;
        let periods = |jitter: f64| -> Vec<f64> {
            let b = Breaker::new(Duration::from_secs(1000), Duration::ZERO).with_jitter(jitter);
            (0..200)
                .map(|_| {
                    b.failure();
                    let now = b.now();
                    (b.open_until.load(Ordering::Acquire) - now) as f64 / retry
                })
                .collect()
        };
        let spread = periods(0.3);
        let (lo, hi) = spread
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(*p), h.max(*p)));
        assert!(lo >= 0.7 - 1e-6 && hi <= 1.3 + 1e-6, "{lo}..{hi}");
        assert!(lo < 0.9 && hi > 1.1, "spread over the range: {lo}..{hi}");
        for p in periods(0.0) {
            assert!((p - 1.0).abs() < 1e-6, "{p}");
        }
    }

    #[test]
    fn stays_open_for_the_retry_interval() {
        let b = Breaker::new(Duration::from_secs(3600), Duration::ZERO).with_jitter(0.5);
        b.failure();
        assert_eq!(b.allow(), Permit::Reject);
    }
}
