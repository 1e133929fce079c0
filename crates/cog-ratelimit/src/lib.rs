//! Horizontally scalable rate limiting for tower services.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod algo;
mod decision;
mod extract;
mod headers;
mod key;
pub mod layer;
mod quota;
mod source;
mod store;

pub use decision::{Decision, DecisionSource, LimitStatus};
pub use extract::{ApiKey, Global, Header, KeyExtractor, PeerAddr, PeerIp, Route};
pub use layer::{RateLimit, RateLimitLayer};
pub use quota::{InvalidQuota, Limit, LimitKind, MAX_COUNT, MAX_PERIOD, Quota};
pub use source::{BoxError, QuotaSource, StaticQuotas};
pub use store::memory::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::redis::{FailurePolicy, RedisStore, connect};
pub use store::{Lease, Store, StoreError};
