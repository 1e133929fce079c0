//! Horizontally scalable rate limiting for tower services.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod algo;
mod decision;
mod key;
mod quota;
mod store;

pub use decision::{Decision, DecisionSource, LimitStatus};
pub use quota::{InvalidQuota, Limit, LimitKind, MAX_COUNT, MAX_PERIOD, Quota};
pub use store::memory::MemoryStore;
pub use store::{Lease, Store, StoreError};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::redis::{FailurePolicy, RedisStore, connect};
