//! The invalidation listener: a dedicated Redis subscriber connection that
//! applies other instances' invalidations to this instance's L1.
//!
//! The subscription counts only once Redis has confirmed it, and after a
//! lost connection it is made (and confirmed) again on a new one
//! ([`cog_core::redis::keep_subscribed`]): fred answers `Ok` to a
//! `SUBSCRIBE` Redis refuses (`NOPERM`, an ACL user without the channel),
//! and the cache would otherwise believe it listens and hear nothing.

use std::sync::Weak;
use std::time::Duration;

use cog_core::redis::Heard;
use fred::clients::Client;
use fred::interfaces::ClientLike;

use crate::inner::Inner;
use crate::l2::Invalidation;
use crate::traits::{CacheKey, CacheValue};

/// Listens for invalidations on a dedicated subscriber connection and
/// applies them to `inner`'s L1. Until Redis confirms the subscription it
/// tries again on a new connection. Whenever messages may have been lost —
/// the connection lost, the listener behind, a subscription confirmed only
/// after a failed attempt or again after a lost connection — L1 is flushed.
/// Ends when the cache is dropped.
pub(crate) fn spawn<K: CacheKey, V: CacheValue>(
    client: &Client,
    inner: Weak<Inner<K, V>>,
    origin: u64,
    channel: String,
) -> Result<(), fred::error::Error> {
    use fred::prelude::{Builder, ReconnectPolicy};
    let mut builder = Builder::from_config(client.client_config());
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
        })
        .set_policy(ReconnectPolicy::new_constant(0, 200));
    // A configuration fred refuses is the builder's error.
    builder.build_subscriber_client()?;
    tokio::spawn(async move {
        let failure = |attempt: u32, error: &str| {
            if attempt == 0 {
                tracing::warn!(target: "cog_cache", channel = %channel, %error, "subscribing to invalidations failed: L1 does not hear other instances' invalidations until it succeeds; retrying");
            } else {
                tracing::debug!(target: "cog_cache", channel = %channel, %error, "subscribing to invalidations failed again");
            }
        };
        let heard = |heard: Heard| {
            let Some(inner) = inner.upgrade() else { return };
            match heard {
                Heard::Listening { missed } => {
                    if missed {
                        tracing::info!(target: "cog_cache", channel = %channel, "listening to invalidations again: flushing L1");
                        inner.flush();
                    }
                    inner.listening.send_replace(true);
                }
                Heard::Message(msg) => {
                    if let Some(bytes) = msg.value.as_bytes() {
                        apply(inner, origin, bytes);
                    }
                }
                Heard::Lagged => inner.flush(),
                Heard::Lost => {
                    tracing::info!(target: "cog_cache", channel = %channel, "invalidation channel lost: flushing L1");
                    inner.listening.send_replace(false);
                    inner.flush();
                }
            }
        };
        cog_core::redis::keep_subscribed(
            &builder,
            &channel,
            || inner.strong_count() > 0,
            failure,
            heard,
        )
        .await;
    });
    Ok(())
}

/// Applies another instance's invalidation message (its own are skipped).
fn apply<K: CacheKey, V: CacheValue>(
    inner: std::sync::Arc<Inner<K, V>>,
    origin: u64,
    bytes: &[u8],
) {
    match postcard::from_bytes::<(u64, Invalidation<K>)>(bytes) {
        Ok((from, _)) if from == origin => {}
        Ok((_, inv)) => {
            inner.apply(&inv);
            // Our own writes that raced this invalidation: out of L2 again.
            let stale = inner.recent.named_by(&inv);
            if !stale.is_empty() {
                tokio::spawn(async move {
                    if let Some(l2) = inner.l2_of(inv.tenant()) {
                        for key in stale {
                            if let Err(e) = l2.del(&key).await {
                                inner.stats.l2_error(&e);
                            }
                        }
                    }
                });
            }
        }
        Err(e) => {
            tracing::debug!(target: "cog_cache", error = %e, "ignoring an unreadable invalidation");
        }
    }
}
