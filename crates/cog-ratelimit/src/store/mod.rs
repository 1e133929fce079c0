//! Where limiter state lives: in this process or in Redis.

use std::future::Future;
use std::sync::Arc;

use crate::decision::Decision;
use crate::quota::Quota;

#[cfg(test)]
mod differential;
#[cfg(feature = "redis")]
pub(crate) mod lease;
pub(crate) mod memory;
#[cfg(feature = "redis")]
pub(crate) mod placed;
#[cfg(feature = "redis")]
pub(crate) mod redis;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use lease::Leasing;
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use placed::PlacedStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{FailurePolicy, RedisStore, connect};

/// A place that keeps limiter state and makes decisions against it.
///
/// Implemented by [`MemoryStore`] (one process) and
/// [`RedisStore`] (shared by every instance). A decision
/// is atomic: all limits of the quota are checked and, if every one admits
/// the request, counted — or none is.
pub trait Store: Send + Sync + 'static {
    /// Checks `cost` units for `subject` against `quota`, and counts them if
    /// admitted.
    fn check(
        &self,
        subject: &str,
        quota: &Quota,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send;

    /// Where `subject` stands against `quota`, without counting anything.
    fn inspect(
        &self,
        subject: &str,
        quota: &Quota,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send;

    /// Forgets `subject`'s state for `quota`: its limits are fully
    /// available again (in-flight concurrency slots included).
    fn reset(
        &self,
        subject: &str,
        quota: &Quota,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gives back the concurrency slots of an admitted request. Never
    /// blocks: a store that needs I/O does it in the background.
    fn release(&self, lease: Lease);

    /// Whether a decision leaves the process (a network round trip): the
    /// layer then records it as a `ratelimit.decide` span in a sampled
    /// trace. An in-process decision takes well under a microsecond —
    /// less than a span would cost — and gets none. Default: `true`.
    fn is_remote(&self) -> bool {
        true
    }

    /// The decision [`check`](Self::check) would make, made now without
    /// waiting — when the store can (in process; a leased store spending a
    /// live lease; a cached denial) — and counted exactly as `check` counts
    /// it; `None` when it needs I/O (then call `check`). The layer uses it
    /// to call the inner service at once, without the asynchronous
    /// decision's machinery. Default: `None`.
    fn try_check_now(
        &self,
        subject: &str,
        quota: &Quota,
        cost: u64,
    ) -> Option<Result<Decision, StoreError>> {
        let _ = (subject, quota, cost);
        None
    }
}

impl<S: Store> Store for Arc<S> {
    fn check(
        &self,
        subject: &str,
        quota: &Quota,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send {
        (**self).check(subject, quota, cost)
    }

    fn inspect(
        &self,
        subject: &str,
        quota: &Quota,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send {
        (**self).inspect(subject, quota)
    }

    fn reset(
        &self,
        subject: &str,
        quota: &Quota,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).reset(subject, quota)
    }

    fn release(&self, lease: Lease) {
        (**self).release(lease)
    }

    fn try_check_now(
        &self,
        subject: &str,
        quota: &Quota,
        cost: u64,
    ) -> Option<Result<Decision, StoreError>> {
        (**self).try_check_now(subject, quota, cost)
    }

    fn is_remote(&self) -> bool {
        (**self).is_remote()
    }
}

#[cfg(feature = "redis")]
impl Lease {
    /// A copy of a Redis lease (the same keys and member), to release it on
    /// several deployments; `None` for a memory lease.
    pub(crate) fn duplicate(&self) -> Option<Lease> {
        match &self.kind {
            LeaseKind::Redis(l) => Some(Lease {
                kind: LeaseKind::Redis(l.clone()),
            }),
            LeaseKind::Memory(_) => None,
        }
    }
}

/// Concurrency slots held by an admitted request.
///
/// Give it back with [`Store::release`] when the request is done; a lease
/// that is never released is reclaimed after the limit's lease time (Redis)
/// or when dropped (memory).
#[derive(Debug)]
pub struct Lease {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) kind: LeaseKind,
}

#[derive(Debug)]
pub(crate) enum LeaseKind {
    Memory(
        #[expect(dead_code, reason = "held for its Drop, which gives the slots back")]
        memory::MemoryLease,
    ),
    #[cfg(feature = "redis")]
    Redis(Box<redis::RedisLease>),
}

/// Why a store could not decide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The cost is larger than [`MAX_COUNT`](crate::MAX_COUNT).
    #[error("cost {cost} is larger than the maximum of {max}", max = crate::MAX_COUNT)]
    InvalidCost {
        /// The cost asked for.
        cost: u64,
    },
    /// The backend did not answer in time.
    #[error("rate-limit store timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The backend is unreachable and the failure policy is fail-closed.
    /// `source` says why (the client's error, or the breaker's).
    #[error("rate-limit store unavailable")]
    Unavailable {
        /// What failed.
        #[source]
        source: crate::BoxError,
    },
    /// The backend answered with something we cannot read.
    #[error("rate-limit store returned an unexpected reply: {0}")]
    Protocol(String),
}

impl StoreError {
    /// [`StoreError::Unavailable`], caused by `source`.
    pub fn unavailable(source: impl Into<crate::BoxError>) -> Self {
        StoreError::Unavailable {
            source: source.into(),
        }
    }
}

pub(crate) fn check_cost(cost: u64) -> Result<(), StoreError> {
    if cost > crate::MAX_COUNT {
        Err(StoreError::InvalidCost { cost })
    } else {
        Ok(())
    }
}
