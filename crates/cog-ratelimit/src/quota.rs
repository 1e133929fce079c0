//! Limits and quotas: what a subject is allowed to do.

use std::borrow::Cow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Duration;

use crate::algo::{Gcra, Sliding};

/// The largest count, burst or cost a limit accepts (2^40, about 10^12).
///
/// Keeps every computation exact in both the in-memory store (u64 / u128
/// nanoseconds) and the Redis store (Lua doubles, microseconds).
pub const MAX_COUNT: u64 = 1 << 40;

/// The longest window or period a limit accepts (about 10 years).
pub const MAX_PERIOD: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// One limit: an algorithm with its parameters, and a name for headers.
///
/// Built with [`Limit::per_second`] and friends (GCRA),
/// [`Limit::sliding_window`] or [`Limit::concurrency`], then checked as part
/// of a [`Quota`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Limit {
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) kind: LimitKind,
}

/// The algorithm of a [`Limit`] and its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitKind {
    /// Generic cell rate algorithm: `count` per `period`, with up to `burst`
    /// at once. Exact, one stored timestamp per subject.
    Gcra {
        /// Units replenished per `period`.
        count: u64,
        /// The replenishment period.
        period: Duration,
        /// Units that can be spent at once (the bucket size).
        burst: u64,
    },
    /// Sliding window counter: at most `max` units in any `window`,
    /// estimated from the current and previous fixed windows.
    SlidingWindow {
        /// Units allowed per window.
        max: u64,
        /// The window length.
        window: Duration,
    },
    /// At most `max` units in flight at once. A slot is given back when its
    /// [`Lease`](crate::store::Lease) is released or dropped (the layer: when the
    /// response body ends); one held longer than `lease` is reclaimed, so
    /// a crashed instance (Redis) or a hung request or leaked lease (both
    /// stores) cannot keep it. In a quota with several concurrency limits,
    /// the memory store reclaims a request's slots at the longest of their
    /// leases.
    Concurrency {
        /// Units in flight at once.
        max: u64,
        /// How long a slot is held at most.
        lease: Duration,
    },
}

impl Limit {
    /// `count` units per `period` (GCRA), burst equal to `count`.
    pub fn gcra(count: u64, period: Duration) -> Self {
        Limit {
            name: None,
            kind: LimitKind::Gcra {
                count,
                period,
                burst: count,
            },
        }
    }

    /// `count` per second (GCRA).
    pub fn per_second(count: u64) -> Self {
        Self::gcra(count, Duration::from_secs(1))
    }

    /// `count` per minute (GCRA).
    pub fn per_minute(count: u64) -> Self {
        Self::gcra(count, Duration::from_secs(60))
    }

    /// `count` per hour (GCRA).
    pub fn per_hour(count: u64) -> Self {
        Self::gcra(count, Duration::from_secs(3600))
    }

    /// `count` per day (GCRA).
    pub fn per_day(count: u64) -> Self {
        Self::gcra(count, Duration::from_secs(86_400))
    }

    /// At most `max` units in any `window` (sliding window counter).
    pub fn sliding_window(max: u64, window: Duration) -> Self {
        Limit {
            name: None,
            kind: LimitKind::SlidingWindow { max, window },
        }
    }

    /// At most `max` requests in flight; slots are leased for 60 s by
    /// default (see [`lease`](Self::lease)).
    pub fn concurrency(max: u64) -> Self {
        Limit {
            name: None,
            kind: LimitKind::Concurrency {
                max,
                lease: Duration::from_secs(60),
            },
        }
    }

    /// Sets the burst of a GCRA limit (no effect on other kinds).
    pub fn burst(mut self, burst: u64) -> Self {
        if let LimitKind::Gcra { burst: b, .. } = &mut self.kind {
            *b = burst;
        }
        self
    }

    /// Sets the lease of a concurrency limit (no effect on other kinds): how
    /// long a slot survives a holder that never gives it back (see
    /// [`LimitKind::Concurrency`]).
    pub fn lease(mut self, lease: Duration) -> Self {
        if let LimitKind::Concurrency { lease: l, .. } = &mut self.kind {
            *l = lease;
        }
        self
    }

    /// Names the limit, as shown in the `RateLimit-Policy` header.
    pub fn named(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The algorithm and its parameters.
    pub fn kind(&self) -> &LimitKind {
        &self.kind
    }

    /// The limit's name: the one given to [`named`](Self::named), or one
    /// derived from its parameters (`"10-per-1s"`, `"concurrency-5"`).
    pub fn name(&self) -> Cow<'_, str> {
        match &self.name {
            Some(n) => Cow::Borrowed(n),
            None => Cow::Owned(match self.kind {
                LimitKind::Gcra { count, period, .. } => {
                    format!("{count}-per-{}", human(period))
                }
                LimitKind::SlidingWindow { max, window } => {
                    format!("{max}-per-{}-window", human(window))
                }
                LimitKind::Concurrency { max, .. } => format!("concurrency-{max}"),
            }),
        }
    }

    /// The quota units and window advertised in `RateLimit-Policy`
    /// (`q` and `w`), in units and whole seconds.
    pub fn policy(&self) -> (u64, u64) {
        match self.kind {
            LimitKind::Gcra {
                count,
                period,
                burst,
            } => {
                // `burst` units are fully replenished after burst × T.
                let w = (period.as_nanos() * burst as u128).div_ceil(count as u128 * 1_000_000_000);
                (burst, w.max(1) as u64)
            }
            LimitKind::SlidingWindow { max, window } => (max, ceil_secs(window)),
            LimitKind::Concurrency { max, lease } => (max, ceil_secs(lease)),
        }
    }

    fn validate(&self) -> Result<(), InvalidQuota> {
        let check_count = |what: &'static str, v: u64| {
            if v == 0 || v > MAX_COUNT {
                Err(InvalidQuota::Count {
                    limit: self.name().into_owned(),
                    what,
                    value: v,
                })
            } else {
                Ok(())
            }
        };
        let check_period = |what: &'static str, d: Duration| {
            if d < Duration::from_micros(1) || d > MAX_PERIOD {
                Err(InvalidQuota::Period {
                    limit: self.name().into_owned(),
                    what,
                    value: d,
                })
            } else {
                Ok(())
            }
        };
        match self.kind {
            LimitKind::Gcra {
                count,
                period,
                burst,
            } => {
                check_count("count", count)?;
                check_count("burst", burst)?;
                check_period("period", period)?;
                if period.as_nanos() < count as u128 {
                    return Err(InvalidQuota::TooFast {
                        limit: self.name().into_owned(),
                    });
                }
            }
            LimitKind::SlidingWindow { max, window } => {
                check_count("max", max)?;
                check_period("window", window)?;
            }
            LimitKind::Concurrency { max, lease } => {
                check_count("max", max)?;
                check_period("lease", lease)?;
            }
        }
        if let Some(name) = &self.name
            && (name.is_empty() || !name.bytes().all(|b| (0x20..0x7f).contains(&b)))
        {
            return Err(InvalidQuota::Name {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// A stable id of the algorithm and parameters (not the name): two
    /// limits with the same id share state for the same subject.
    pub(crate) fn state_id(&self) -> String {
        match self.kind {
            LimitKind::Gcra {
                count,
                period,
                burst,
            } => format!("g{count}/{}b{burst}", period.as_nanos()),
            LimitKind::SlidingWindow { max, window } => format!("s{max}/{}", window.as_nanos()),
            LimitKind::Concurrency { max, .. } => format!("c{max}"),
        }
    }
}

/// A limit's parameters, precomputed for the hot path.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Params {
    Gcra(Gcra),
    Sliding(Sliding),
    Concurrency { max: u64, lease: Duration },
}

impl Params {
    fn of(limit: &Limit) -> Self {
        match limit.kind {
            LimitKind::Gcra {
                count,
                period,
                burst,
            } => Params::Gcra(Gcra::new(count, period, burst)),
            LimitKind::SlidingWindow { max, window } => Params::Sliding(Sliding::new(max, window)),
            LimitKind::Concurrency { max, lease } => Params::Concurrency { max, lease },
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000_000).max(1) as u64
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// A set of limits checked together, all-or-nothing: a request is admitted
/// only if every limit admits it, and then it is counted against all of
/// them.
///
/// Cheap to clone (shared). Two quotas with the same limits are equal.
#[derive(Clone)]
pub struct Quota {
    inner: Arc<QuotaInner>,
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
struct QuotaInner {
    limits: Box<[Limit]>,
    params: Box<[Params]>,
    /// The limits as the Redis scripts take them, built once.
    #[cfg(feature = "redis")]
    redis_args: crate::store::redis::LimitArgs,
    fingerprint: u64,
    state_ids: Box<[String]>,
    /// `RateLimit-Policy`, and each limit's name as the `RateLimit` field
    /// writes it: the same for every response.
    policy_header: http::HeaderValue,
    quoted_names: Box<[Box<str>]>,
}

impl Quota {
    /// A quota of one limit.
    ///
    /// # Errors
    /// When a parameter is zero or out of range; see [`InvalidQuota`].
    pub fn single(limit: Limit) -> Result<Self, InvalidQuota> {
        Self::new([limit])
    }

    /// A quota of several limits, checked all-or-nothing.
    ///
    /// # Errors
    /// When the list is empty, or a parameter is zero or out of range.
    pub fn new(limits: impl IntoIterator<Item = Limit>) -> Result<Self, InvalidQuota> {
        let limits: Box<[Limit]> = limits.into_iter().collect();
        if limits.is_empty() {
            return Err(InvalidQuota::Empty);
        }
        if limits.len() > 16 {
            return Err(InvalidQuota::TooMany {
                count: limits.len(),
            });
        }
        for l in limits.iter() {
            l.validate()?;
        }
        let state_ids: Box<[String]> = limits.iter().map(Limit::state_id).collect();
        let fingerprint =
            foldhash::quality::FixedState::with_seed(0x0063_6f67).hash_one(&state_ids);
        let params: Box<[Params]> = limits.iter().map(Params::of).collect();
        Ok(Quota {
            inner: Arc::new(QuotaInner {
                policy_header: crate::headers::policy_of(&limits),
                quoted_names: limits.iter().map(crate::headers::quoted_name).collect(),
                #[cfg(feature = "redis")]
                redis_args: crate::store::redis::LimitArgs::of(&params),
                params,
                fingerprint,
                limits,
                state_ids,
            }),
        })
    }

    /// The limits, in the order given.
    pub fn limits(&self) -> &[Limit] {
        &self.inner.limits
    }

    pub(crate) fn policy_header(&self) -> &http::HeaderValue {
        &self.inner.policy_header
    }

    pub(crate) fn quoted_names(&self) -> &[Box<str>] {
        &self.inner.quoted_names
    }

    /// A hash of the limits' algorithms and parameters.
    pub fn fingerprint(&self) -> u64 {
        self.inner.fingerprint
    }

    /// Whether one of the limits is a concurrency limit.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn has_concurrency(&self) -> bool {
        self.params()
            .iter()
            .any(|p| matches!(p, Params::Concurrency { .. }))
    }

    pub(crate) fn params(&self) -> &[Params] {
        &self.inner.params
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn state_ids(&self) -> &[String] {
        &self.inner.state_ids
    }

    #[cfg(feature = "redis")]
    pub(crate) fn redis_args(&self) -> &crate::store::redis::LimitArgs {
        &self.inner.redis_args
    }

    /// This quota with every count, burst and max multiplied by `m`;
    /// concurrency limits unchanged. The global store keeps regional state
    /// in these finer units. `Err` when a scaled limit is out of range.
    #[cfg(feature = "redis")]
    pub(crate) fn scaled(&self, m: u64) -> Result<Quota, InvalidQuota> {
        self.with_counts(|v| v.saturating_mul(m), false)
    }

    /// This quota for one of `n` instances sharing it: every count, burst
    /// and max divided by `n`, rounded up, at least 1. Used by the local
    /// fallback when Redis is unreachable. Limits keep their names (derived
    /// ones included), so a client sees the same policies with smaller
    /// quotas.
    pub fn divided(&self, n: u64) -> Quota {
        let n = n.max(1);
        self.with_counts(|v| v.div_ceil(n).max(1), true)
            .expect("dividing a valid quota keeps it valid")
    }

    /// This quota with `f` applied to every count, burst and max (to
    /// concurrency limits' too when `concurrency`). Limits keep their
    /// names, derived ones included.
    fn with_counts(
        &self,
        f: impl Fn(u64) -> u64,
        concurrency: bool,
    ) -> Result<Quota, InvalidQuota> {
        let limits = self.limits().iter().map(|l| {
            let kind = match l.kind {
                LimitKind::Gcra {
                    count,
                    period,
                    burst,
                } => LimitKind::Gcra {
                    count: f(count),
                    period,
                    burst: f(burst),
                },
                LimitKind::SlidingWindow { max, window } => LimitKind::SlidingWindow {
                    max: f(max),
                    window,
                },
                LimitKind::Concurrency { max, lease } if concurrency => {
                    LimitKind::Concurrency { max: f(max), lease }
                }
                other => other,
            };
            Limit {
                name: Some(Cow::Owned(l.name().into_owned())),
                kind,
            }
        });
        Quota::new(limits)
    }
}

impl PartialEq for Quota {
    fn eq(&self, other: &Self) -> bool {
        self.limits() == other.limits()
    }
}

impl Eq for Quota {}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.limits()).finish()
    }
}

impl TryFrom<Limit> for Quota {
    type Error = InvalidQuota;
    fn try_from(limit: Limit) -> Result<Self, Self::Error> {
        Quota::single(limit)
    }
}

/// Why a [`Quota`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidQuota {
    /// A quota needs at least one limit.
    #[error("a quota needs at least one limit")]
    Empty,
    /// More limits than one decision can check.
    #[error("a quota holds at most 16 limits, got {count}")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// A count, burst or max is zero or too large.
    #[error("limit {limit:?}: {what} must be between 1 and {MAX_COUNT}, got {value}")]
    Count {
        /// The limit's name.
        limit: String,
        /// Which parameter.
        what: &'static str,
        /// The value given.
        value: u64,
    },
    /// A period, window or lease is under 1 µs or over [`MAX_PERIOD`].
    #[error("limit {limit:?}: {what} must be between 1µs and 10 years, got {value:?}")]
    Period {
        /// The limit's name.
        limit: String,
        /// Which parameter.
        what: &'static str,
        /// The value given.
        value: Duration,
    },
    /// More than one unit per nanosecond.
    #[error("limit {limit:?}: more than one unit per nanosecond cannot be measured")]
    TooFast {
        /// The limit's name.
        limit: String,
    },
    /// A limit name must be printable ASCII (it goes into a header).
    #[error("limit name {name:?} must be non-empty printable ASCII")]
    Name {
        /// The name given.
        name: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_parameters() {
        assert_eq!(Quota::new([]), Err(InvalidQuota::Empty));
        assert!(matches!(
            Quota::single(Limit::per_second(0)),
            Err(InvalidQuota::Count { what: "count", .. })
        ));
        assert!(matches!(
            Quota::single(Limit::per_second(5).burst(0)),
            Err(InvalidQuota::Count { what: "burst", .. })
        ));
        assert!(matches!(
            Quota::single(Limit::gcra(1, Duration::ZERO)),
            Err(InvalidQuota::Period { .. })
        ));
        assert!(matches!(
            Quota::single(Limit::sliding_window(MAX_COUNT + 1, Duration::from_secs(1))),
            Err(InvalidQuota::Count { .. })
        ));
        assert!(matches!(
            Quota::single(Limit::gcra(10_000, Duration::from_micros(1))),
            Err(InvalidQuota::TooFast { .. })
        ));
        assert!(matches!(
            Quota::single(Limit::per_second(1).named("bad\r\nname")),
            Err(InvalidQuota::Name { .. })
        ));
    }

    #[test]
    fn names_and_policies() {
        let l = Limit::per_second(10);
        assert_eq!(l.name(), "10-per-1s");
        assert_eq!(l.policy(), (10, 1));
        assert_eq!(Limit::per_second(10).burst(20).policy(), (20, 2));
        assert_eq!(Limit::per_day(10_000).name(), "10000-per-1d");
        assert_eq!(Limit::per_day(10_000).policy(), (10_000, 86_400));
        assert_eq!(Limit::concurrency(5).named("inflight").name(), "inflight");
        // Windows and leases in whole seconds, rounded up, at least one.
        let w = |ms| Limit::sliding_window(100, Duration::from_millis(ms)).policy();
        assert_eq!((w(90_000), w(1_500), w(1)), ((100, 90), (100, 2), (100, 1)));
        let l = Limit::concurrency(3).lease(Duration::from_millis(2_500));
        assert_eq!(l.policy(), (3, 3));
    }

    /// The bounds are inclusive: the largest count and period, and a
    /// period of exactly one nanosecond per unit, are accepted; one more
    /// is refused.
    #[test]
    fn limits_at_their_bounds() {
        assert_eq!(MAX_PERIOD, Duration::from_secs(315_360_000), "ten years");
        assert_eq!(MAX_COUNT, 1_099_511_627_776);
        let ok = |l: Limit| Quota::single(l).is_ok();
        let window = |max, d| Limit::sliding_window(max, d);
        assert!(ok(window(MAX_COUNT, MAX_PERIOD)));
        assert!(!ok(window(MAX_COUNT + 1, MAX_PERIOD)));
        assert!(!ok(window(1, MAX_PERIOD + Duration::from_nanos(1))));
        assert!(ok(window(1, Duration::from_micros(1))));
        assert!(!ok(window(1, Duration::from_nanos(999))));
        let gcra = |count, nanos| Limit::gcra(count, Duration::from_nanos(nanos));
        assert!(ok(gcra(1000, 1000)), "one unit a nanosecond");
        assert!(!ok(gcra(1001, 1000)), "faster than that");
    }

    #[test]
    fn divided_rounds_up_and_keeps_at_least_one() {
        let q = Quota::new([Limit::per_second(10).burst(20), Limit::concurrency(1)]).unwrap();
        let d = q.divided(3);
        assert_ne!(q, d);
        // Concurrency limits are divided too.
        let slots = Quota::single(Limit::concurrency(6)).unwrap();
        assert_eq!(slots.divided(3).limits()[0].policy().0, 2);
        assert_eq!(
            d.limits()[0].kind,
            LimitKind::Gcra {
                count: 4,
                period: Duration::from_secs(1),
                burst: 7
            }
        );
        assert_eq!(
            d.limits()[1].kind,
            LimitKind::Concurrency {
                max: 1,
                lease: Duration::from_secs(60)
            }
        );
        assert_ne!(q.fingerprint(), d.fingerprint());
    }

    /// Scaled for regional units: counts, bursts and maxima multiplied,
    /// concurrency limits as they were.
    #[cfg(feature = "redis")]
    #[test]
    fn scaled_leaves_concurrency_alone() {
        let q = Quota::new([Limit::per_second(10).burst(20), Limit::concurrency(6)]).unwrap();
        let s = q.scaled(1000).unwrap();
        assert_eq!(s.limits()[0].policy(), (20_000, 2));
        assert_eq!(s.limits()[1].policy().0, 6);
        assert!(
            s.has_concurrency() && !Quota::single(Limit::per_day(1)).unwrap().has_concurrency()
        );
    }
}
