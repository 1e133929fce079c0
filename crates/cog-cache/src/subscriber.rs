//! The invalidation listener: a dedicated Redis subscriber connection that
//! applies other instances' invalidations to this instance's L1.
//!
//! The subscription counts only once Redis has confirmed it
//! ([`cog_core::redis::subscribe_confirmed`]): fred answers `Ok` to a
//! `SUBSCRIBE` Redis refuses (`NOPERM`, an ACL user without the channel),
//! and the cache would otherwise believe it listens and hear nothing.

use std::sync::Weak;
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::ClientLike;
use tokio::sync::broadcast::error::RecvError;

use crate::inner::Inner;
use crate::l2::Invalidation;
use crate::traits::{CacheKey, CacheValue};

/// Listens for invalidations on a dedicated subscriber connection and
/// applies them to `inner`'s L1. Until Redis confirms the subscription it
/// tries again on a new connection; when it succeeds after a failed
/// attempt, and after every reconnect, L1 is flushed: messages sent
/// meanwhile are lost. Ends when the cache is dropped.
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
        let Some(cog_core::redis::Subscription {
            client: subscriber,
            mut messages,
            mut reconnects,
            failed,
        }) = cog_core::redis::subscribe_confirmed(
            &builder,
            &channel,
            || inner.strong_count() > 0,
            failure,
        )
        .await
        else {
            return;
        };
        let Some(listening) = inner.upgrade() else {
            let _ = subscriber.quit().await;
            return;
        };
        if failed > 0 {
            // Invalidations sent while this instance was not listening
            // are lost: what L1 holds may be stale.
            tracing::info!(target: "cog_cache", channel = %channel, attempts = failed + 1, "subscribed to invalidations: flushing L1");
            listening.flush();
        }
        listening.listening.send_replace(true);
        drop(listening);
        let mut connected_once = false;
        loop {
            tokio::select! {
                msg = messages.recv() => {
                    let msg = match msg {
                        Ok(msg) => msg,
                        Err(e) => match after(&e) {
                            AfterRecvError::Flush => {
                                if let Some(inner) = inner.upgrade() { inner.flush(); }
                                continue;
                            }
                            AfterRecvError::Stop => break,
                        },
                    };
                    let Some(inner) = inner.upgrade() else { break };
                    let Some(bytes) = msg.value.as_bytes() else { continue };
                    match postcard::from_bytes::<(u64, Invalidation<K>)>(bytes) {
                        Ok((from, _)) if from == origin => {}
                        Ok((_, inv)) => {
                            inner.apply(&inv);
                            // Our own writes that raced this
                            // invalidation: out of L2 again.
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
                        Err(e) => tracing::debug!(target: "cog_cache", error = %e, "ignoring an unreadable invalidation"),
                    }
                }
                r = reconnects.recv() => {
                    // The first event is the initial connection: nothing
                    // was missed before it.
                    if !connected_once {
                        connected_once = true;
                        continue;
                    }
                    let Some(inner) = inner.upgrade() else { break };
                    if r.is_ok() {
                        tracing::info!(target: "cog_cache", "invalidation channel reconnected: flushing L1");
                    }
                    inner.flush();
                }
                _ = tokio::time::sleep(Duration::from_secs(5)) => {
                    if inner.strong_count() == 0 { break; }
                }
            }
        }
        let _ = subscriber.quit().await;
    });
    Ok(())
}

/// What the subscriber does when its message channel reports `e`.
#[derive(Debug, PartialEq, Eq)]
enum AfterRecvError {
    /// Messages were lost (the listener lagged): flush L1 to be safe.
    Flush,
    /// The client is gone: nothing more will come (looping would spin).
    Stop,
}

fn after(e: &RecvError) -> AfterRecvError {
    match e {
        RecvError::Lagged(_) => AfterRecvError::Flush,
        RecvError::Closed => AfterRecvError::Stop,
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::broadcast::error::RecvError;

    use super::{AfterRecvError, after};

    #[test]
    fn a_closed_channel_stops_the_listener_and_a_lagged_one_flushes() {
        assert_eq!(after(&RecvError::Closed), AfterRecvError::Stop);
        assert_eq!(after(&RecvError::Lagged(3)), AfterRecvError::Flush);
    }
}
