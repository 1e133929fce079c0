//! The error of a read-through.

/// Why a read-through could not produce a value.
#[derive(Debug, thiserror::Error)]
// A word-sized tag: with the default byte-sized one, a
// `Result<String, CacheError<()>>` is copied byte-wise around the niche,
// and the reads that follow stall (an L1 hit through `get_or_load` took
// ~20 % longer).
#[repr(u64)]
pub enum CacheError<E> {
    /// The loader failed and no stale value was allowed to stand in.
    #[error("loader failed: {0}")]
    Load(E),
    /// The loader panicked or its task was cancelled.
    #[error("loader did not complete")]
    LoaderAborted,
    /// The key holds a cached absence (written by
    /// [`get_or_load_optional`](crate::TieredCache::get_or_load_optional)); use
    /// that method for keys that may be absent.
    #[error("the key is cached as absent")]
    Absent,
}
