//! The outcome of checking a request against a quota.

use std::time::Duration;

use smallvec::SmallVec;

use crate::quota::Quota;
use crate::store::Lease;

/// Per-limit statuses, inline for a one-limit quota (keeps a decision
/// small enough to move without a `memcpy` call; smallvec's `union` layout
/// saves the 8 bytes of an enum tag).
pub(crate) type Statuses = SmallVec<[LimitStatus; 1]>;

/// The outcome of one check: admitted or not, and where every limit stands.
#[derive(Debug)]
pub struct Decision {
    pub(crate) allowed: bool,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) statuses: Statuses,
    pub(crate) source: DecisionSource,
    pub(crate) lease: Option<Lease>,
    /// The quota applied, where it is not the one asked for.
    pub(crate) applied: Option<Quota>,
}

/// Where one limit stands after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    /// Units still available right now.
    pub remaining: u64,
    /// Time until the limit is fully replenished.
    pub reset_after: Duration,
    /// Whether this limit alone would have admitted the request.
    pub allowed: bool,
}

/// Who made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecisionSource {
    /// The store's shared state (Redis, or the in-memory store).
    Store,
    /// A denial remembered locally: the subject was over its limit and its
    /// reset time had not come yet, so no round trip was made.
    LocalDeny,
    /// A lease this instance holds: units of the subject's budget taken
    /// from Redis earlier and spent here without a round trip (see
    /// [`Leasing`](crate::store::Leasing)).
    Lease,
    /// The store was unreachable; the local fallback limiter decided.
    Fallback,
    /// The store was unreachable; the request was admitted by policy.
    FailOpen,
}

impl Decision {
    /// Whether the request is admitted.
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// When to try again, for a denied request. `None` when admitted, or
    /// when the cost can never fit (it is larger than a limit's burst).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// One status per limit of the quota, in the quota's order. Empty when
    /// the request was admitted by the fail-open policy.
    pub fn statuses(&self) -> &[LimitStatus] {
        &self.statuses
    }

    /// Who made the decision.
    pub fn source(&self) -> DecisionSource {
        self.source
    }

    /// The quota this decision applied, when it is not the one checked:
    /// the local fallback's share ([`Quota::divided`]) while Redis is
    /// unreachable. [`statuses`](Self::statuses) then count against it, and
    /// so do the `RateLimit-Policy` and `RateLimit` headers.
    pub fn applied_quota(&self) -> Option<&Quota> {
        self.applied.as_ref()
    }

    /// Takes the concurrency lease of an admitted request, to release with
    /// [`Store::release`](crate::store::Store::release) when the work is done.
    /// `None` when the quota has no concurrency limit.
    pub fn take_lease(&mut self) -> Option<Lease> {
        self.lease.take()
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn fail_open() -> Self {
        Decision {
            allowed: true,
            retry_after: None,
            statuses: Statuses::new(),
            source: DecisionSource::FailOpen,
            lease: None,
            applied: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_decision_stays_small() {
        // Decisions are returned by value on the hot path; past ~128 bytes
        // every move becomes a `memcpy` call.
        assert!(std::mem::size_of::<super::Decision>() <= 96);
    }
}
