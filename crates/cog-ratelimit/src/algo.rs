//! The limit algorithms as pure functions over integer nanoseconds.
//!
//! The in-memory store runs these directly; the Redis store's Lua script
//! (`store/redis.lua`) is the same arithmetic in microseconds.

use std::time::Duration;

use crate::decision::LimitStatus;

/// GCRA parameters: emission interval `t` and tolerance `tau`, in ns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gcra {
    pub(crate) t: u64,
    pub(crate) tau: u64,
    /// `⌊(2⁶⁴ − 1) / t⌋`: divides by `t` with a multiply on the hot path.
    recip: u64,
}

/// The outcome of one limit's check: its status, the new state to store if
/// the whole quota admits, and the wait before a retry can succeed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step<S> {
    pub(crate) status: LimitStatus,
    pub(crate) next: S,
    /// `Some(ZERO)` when allowed, `None` when the cost can never fit.
    pub(crate) retry: Option<u64>,
}

impl Gcra {
    pub(crate) fn new(count: u64, period: Duration, burst: u64) -> Self {
        let t = (period.as_nanos() / count as u128).max(1) as u64;
        Gcra {
            t,
            tau: t.saturating_mul(burst),
            recip: u64::MAX / t,
        }
    }

    /// `x / t`, exactly, without a hardware division: the reciprocal
    /// estimate is at most two below the quotient.
    #[inline]
    fn units(&self, x: u64) -> u64 {
        let mut q = ((x as u128 * self.recip as u128) >> 64) as u64;
        while (q as u128 + 1) * (self.t as u128) <= x as u128 {
            q += 1;
        }
        q
    }

    /// `tat` is the stored theoretical arrival time (0 = fresh).
    pub(crate) fn step(&self, tat: u64, now: u64, cost: u64) -> Step<u64> {
        let tat = tat.max(now);
        let new_tat = tat.saturating_add(cost.saturating_mul(self.t));
        let diff = new_tat - now;
        if diff <= self.tau {
            Step {
                status: self.admitted(diff),
                next: new_tat,
                retry: Some(0),
            }
        } else {
            let (status, retry) = self.refused(tat - now, cost);
            Step {
                status,
                next: tat,
                retry,
            }
        }
    }

    /// The status after an admitted request that left the state `diff` ns
    /// ahead of now. Shared with the Redis store, whose single-limit script
    /// answers with `diff` alone.
    #[inline]
    pub(crate) fn admitted(&self, diff: u64) -> LimitStatus {
        LimitStatus {
            remaining: self.units(self.tau.saturating_sub(diff)),
            reset_after: Duration::from_nanos(diff),
            allowed: true,
        }
    }

    /// The status of a refused request of `cost` units, the state standing
    /// `used` ns ahead of now, and the wait before it could pass (`None`:
    /// never, the cost is larger than the burst).
    #[inline]
    pub(crate) fn refused(&self, used: u64, cost: u64) -> (LimitStatus, Option<u64>) {
        let status = LimitStatus {
            remaining: self.units(self.tau.saturating_sub(used)),
            reset_after: Duration::from_nanos(used),
            allowed: false,
        };
        let need = cost.saturating_mul(self.t);
        let retry = (need <= self.tau).then(|| used.saturating_add(need).saturating_sub(self.tau));
        (status, retry)
    }
}

/// Sliding window counter state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Window {
    /// Index of the current fixed window (`now / window`).
    pub(crate) idx: u64,
    pub(crate) curr: u64,
    pub(crate) prev: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Sliding {
    pub(crate) max: u64,
    pub(crate) w: u64,
}

impl Sliding {
    pub(crate) fn new(max: u64, window: Duration) -> Self {
        Sliding {
            max,
            w: window.as_nanos() as u64,
        }
    }

    fn roll(&self, s: Window, now: u64) -> Window {
        let idx = now / self.w;
        if idx == s.idx {
            s
        } else if idx == s.idx + 1 {
            Window {
                idx,
                curr: 0,
                prev: s.curr,
            }
        } else {
            Window {
                idx,
                curr: 0,
                prev: 0,
            }
        }
    }

    /// Weighted use, scaled by `w`: prev × (w − elapsed) + curr × w.
    fn used_scaled(&self, s: &Window, elapsed: u64) -> u128 {
        s.prev as u128 * (self.w - elapsed) as u128 + s.curr as u128 * self.w as u128
    }

    pub(crate) fn step(&self, state: Window, now: u64, cost: u64) -> Step<Window> {
        let s = self.roll(state, now);
        let elapsed = now - s.idx * self.w;
        let w = self.w as u128;
        let cap = self.max as u128 * w;
        let used = self.used_scaled(&s, elapsed);
        let allowed = used + cost as u128 * w <= cap;
        let next = if allowed {
            Window {
                curr: s.curr + cost,
                ..s
            }
        } else {
            s
        };
        let used_after = self.used_scaled(&next, elapsed);
        let remaining = (cap.saturating_sub(used_after) / w) as u64;
        let to_end = self.w - elapsed;
        let reset_after = if next.curr > 0 {
            to_end + self.w
        } else if next.prev > 0 {
            to_end
        } else {
            0
        };
        let retry = if allowed {
            Some(0)
        } else if cost > self.max {
            None
        } else {
            Some(self.retry(&s, elapsed, cost))
        };
        Step {
            status: LimitStatus {
                remaining,
                reset_after: Duration::from_nanos(reset_after),
                allowed,
            },
            next,
            retry,
        }
    }

    /// Time until `cost` fits, assuming no other traffic.
    fn retry(&self, s: &Window, elapsed: u64, cost: u64) -> u64 {
        let w = self.w as u128;
        if s.curr + cost <= self.max && s.prev > 0 {
            // Wait in this window for prev's weight to decay:
            // prev × (w − e') ≤ (max − curr − cost) × w.
            let room = (self.max - s.curr - cost) as u128 * w;
            let need = w - room / s.prev as u128; // e' ≥ w − room/prev
            let e = need.min(w) as u64;
            if e > elapsed {
                return e - elapsed;
            }
        }
        // Next window: prev = curr, curr = 0: curr × (w − e'') ≤ (max − cost) × w.
        let to_end = self.w - elapsed;
        if s.curr == 0 {
            return to_end;
        }
        let room = (self.max - cost) as u128 * w;
        let need = w.saturating_sub(room / s.curr as u128).min(w) as u64;
        to_end + need
    }

    pub(crate) fn at_rest(&self, s: &Window, now: u64) -> bool {
        now / self.w > s.idx + 1 || (s.curr == 0 && s.prev == 0)
    }
}

/// Concurrency: units in flight against `max`.
pub(crate) fn concurrency_step(max: u64, in_flight: u64, cost: u64) -> Step<u64> {
    let allowed = in_flight + cost <= max;
    let next = if allowed { in_flight + cost } else { in_flight };
    Step {
        status: LimitStatus {
            remaining: max - next.min(max),
            reset_after: Duration::ZERO,
            allowed,
        },
        next,
        // Nobody can say when a slot frees up; suggest a second.
        retry: if allowed {
            Some(0)
        } else if cost > max {
            None
        } else {
            Some(1_000_000_000)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn reciprocal_division_is_exact() {
        for t in [
            1,
            2,
            3,
            7,
            1000,
            333_333_333,
            86_400_000_000_000,
            u64::MAX / 3,
        ] {
            let g = Gcra::new(1, Duration::from_nanos(t), 1);
            for x in [
                0,
                1,
                t - 1,
                t,
                t + 1,
                3 * t - 1,
                123_456_789_012,
                u64::MAX / 2,
                u64::MAX,
            ] {
                assert_eq!(g.units(x), x / g.t, "x={x} t={t}");
            }
        }
    }

    #[test]
    fn gcra_burst_then_rate() {
        let g = Gcra::new(10, Duration::from_secs(1), 5);
        let mut tat = 0;
        let now = 1000 * S;
        for i in 0..5 {
            let s = g.step(tat, now, 1);
            assert!(s.status.allowed, "request {i}");
            assert_eq!(s.status.remaining, 4 - i);
            tat = s.next;
        }
        let s = g.step(tat, now, 1);
        assert!(!s.status.allowed);
        assert_eq!(s.retry, Some(S / 10));
        // 100 ms later exactly one more fits.
        let s = g.step(tat, now + S / 10, 1);
        assert!(s.status.allowed);
        assert_eq!(s.status.remaining, 0);
    }

    #[test]
    fn gcra_cost_and_impossible_cost() {
        let g = Gcra::new(10, Duration::from_secs(1), 10);
        let s = g.step(0, S, 7);
        assert!(s.status.allowed);
        assert_eq!(s.status.remaining, 3);
        let s2 = g.step(s.next, S, 4);
        assert!(!s2.status.allowed);
        assert_eq!(s2.status.remaining, 3, "a denial spends nothing");
        assert_eq!(s2.retry, Some(S / 10));
        assert_eq!(g.step(0, S, 11).retry, None);
    }

    #[test]
    fn gcra_exact_at_high_rate() {
        // 10 000/s for 1 s of 1 µs steps admits exactly burst + 10 000.
        let g = Gcra::new(10_000, Duration::from_secs(1), 100);
        let mut tat = 0;
        let mut admitted = 0;
        let start = 50 * S;
        for us in 0..1_000_000u64 {
            let s = g.step(tat, start + us * 1000, 1);
            if s.status.allowed {
                admitted += 1;
                tat = s.next;
            }
        }
        assert_eq!(admitted, 100 + 10_000 - 1);
    }

    #[test]
    fn sliding_window_weights_previous_window() {
        let sw = Sliding::new(10, Duration::from_secs(10));
        let mut st = Window::default();
        let t0 = 100 * S; // start of window 10
        for _ in 0..10 {
            let s = sw.step(st, t0, 1);
            assert!(s.status.allowed);
            st = s.next;
        }
        let s = sw.step(st, t0 + S, 1);
        assert!(!s.status.allowed);
        assert_eq!(s.retry, Some(9 * S + S)); // next window, after 1 s of decay
        // Halfway through the next window, prev weighs 5: 5 more fit.
        let mut admitted = 0;
        for _ in 0..10 {
            let s = sw.step(st, t0 + 15 * S, 1);
            if s.status.allowed {
                admitted += 1;
                st = s.next;
            }
        }
        assert_eq!(admitted, 5);
        assert!(sw.at_rest(&st, t0 + 40 * S));
    }

    /// A window spent in full: the next window's first requests wait for
    /// the previous window's weight to decay, exactly as long as needed.
    #[test]
    fn sliding_retry_waits_for_the_previous_window_to_decay() {
        let sw = Sliding::new(10, Duration::from_secs(10));
        let t0 = 100 * S;
        let mut st = Window::default();
        for _ in 0..10 {
            st = sw.step(st, t0, 1).next;
        }
        // Next window, at its start: prev weighs 10 — one unit fits after
        // a tenth of the window (prev × 9/10 + 1 = 10).
        let s = sw.step(st, t0 + 10 * S, 1);
        assert!(!s.status.allowed);
        assert_eq!(s.retry, Some(S));
        assert!(!sw.step(st, t0 + 11 * S - 1, 1).status.allowed);
        assert!(sw.step(st, t0 + 11 * S, 1).status.allowed);
        // Three units: 3 tenths; and from 2 s in, 1 s more.
        assert_eq!(sw.step(st, t0 + 10 * S, 3).retry, Some(3 * S));
        assert_eq!(sw.step(st, t0 + 12 * S, 3).retry, Some(S));
        // The whole limit at once: not before the next window's end.
        let s = sw.step(st, t0 + 10 * S, 10);
        assert!(!s.status.allowed);
        assert_eq!(
            s.retry,
            Some(10 * S),
            "the limit fits once prev has decayed"
        );
        assert_eq!(sw.step(st, t0 + 10 * S, 11).retry, None, "never fits");
        // Room in this window once prev decays: 5 × (10 − e) + 3 + 4 ≤ 10
        // from e = 4 s.
        let w = Window {
            idx: 11,
            curr: 3,
            prev: 5,
        };
        assert_eq!(sw.step(w, t0 + 10 * S, 4).retry, Some(4 * S));
        assert!(sw.step(w, t0 + 14 * S, 4).status.allowed);
        // No room in this window (5 + 6 > 10): in the next, once this
        // window's 5 decay to 4 — 2 s into it, 7 s from now.
        let w = Window { curr: 5, ..w };
        let s = sw.step(w, t0 + 15 * S, 6);
        assert_eq!((s.status.allowed, s.retry), (false, Some(7 * S)));
        assert!(!sw.step(w, t0 + 22 * S - 1, 6).status.allowed);
        assert!(sw.step(w, t0 + 22 * S, 6).status.allowed);
        // What is left, in whole units: 10 − (5 × 0.5 + 5) = 2.5 → 2.
        assert_eq!(sw.step(w, t0 + 15 * S, 0).status.remaining, 2);
    }

    /// When a window's use stops counting: the current window's after this
    /// window and the next; the previous window's at this one's end.
    #[test]
    fn sliding_reset_after_and_rest() {
        let sw = Sliding::new(10, Duration::from_secs(10));
        let t0 = 100 * S;
        let fresh = sw.step(Window::default(), t0 + 4 * S, 0);
        assert_eq!(fresh.status.reset_after, Duration::ZERO);
        let s = sw.step(Window::default(), t0 + 4 * S, 3);
        assert_eq!(s.status.reset_after, Duration::from_secs(6 + 10));
        let st = s.next;
        assert!(!sw.at_rest(&st, t0 + 4 * S), "used in its window");
        // The next window: only the previous window's use left.
        let later = sw.step(st, t0 + 12 * S, 0);
        assert_eq!(later.status.reset_after, Duration::from_secs(8));
        assert!(!sw.at_rest(&st, t0 + 12 * S), "it still weighs");
        assert!(!sw.at_rest(&later.next, t0 + 12 * S));
        assert!(sw.at_rest(&st, t0 + 20 * S), "two windows on");
        assert!(sw.at_rest(&Window::default(), t0));
        // Nothing this window, something the one before: not at rest.
        let prev_only = Window {
            idx: 10,
            curr: 0,
            prev: 1,
        };
        assert!(!sw.at_rest(&prev_only, t0));
    }

    #[test]
    fn concurrency() {
        assert!(concurrency_step(2, 1, 1).status.allowed);
        let s = concurrency_step(2, 2, 1);
        assert!(!s.status.allowed);
        assert_eq!(s.status.remaining, 0);
        assert_eq!(concurrency_step(2, 0, 3).retry, None);
        assert_eq!(
            concurrency_step(2, 2, 2).retry,
            Some(S),
            "fits once both free"
        );
    }
}
