//! What keys and values of a cache must be.

use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a cache key must be: hashable for L1, serializable for its Redis
/// key (the serialization, escaped, names it) and so invalidations can name
/// it to other instances. A key whose serialization fails (postcard
/// refuses `#[serde(flatten)]`, for one) stays in each instance's L1, and
/// its invalidation reaches only the instance that makes it.
pub trait CacheKey:
    Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

impl<T> CacheKey for T where
    T: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

/// What a cached value must be: cloned out of L1, serialized into L2.
pub trait CacheValue: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T> CacheValue for T where T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}
