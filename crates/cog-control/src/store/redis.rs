//! The Redis store: one hash holding the document and its revision,
//! written by a compare-and-swap script that also announces the change.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::{ClientLike, HashesInterface, KeysInterface, LuaInterface};
use fred::prelude::{Builder, Config, ReconnectPolicy};
use fred::types::{Expiration, SetOptions};
use tokio::sync::watch;

use super::{Store, decode, encode, new_stamp};
use crate::State;
use crate::error::ControlError;

/// Writes the document if the revision is still the expected one — and
/// its stamp, unless none is expected (`ARGV[5]` empty) — bumps it, and
/// publishes the new revision. Returns the new revision, or `-1 - found`
/// on a conflict.
const COMMIT_LUA: &str = r#"
local found = tonumber(redis.call('HGET', KEYS[1], 'rev') or '0')
if found ~= tonumber(ARGV[1]) then return -1 - found end
if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'stamp') ~= ARGV[5] then return -1 - found end
local next = found + 1
redis.call('HSET', KEYS[1], 'rev', next, 'doc', ARGV[2], 'stamp', ARGV[4])
redis.call('PUBLISH', ARGV[3], next)
return next
"#;

/// A stored stamp; one that is not a number as commits write them
/// (written by hand: `x`, `042`, `+42`) is none: the state is compared by
/// revision alone until the next commit draws a new one. (The commit
/// script compares the stored text: a stamp read as another text than it
/// is stored as would never match, and every write would retry forever.)
fn stamp_of(stored: Option<String>) -> Option<u64> {
    stored.and_then(|s| s.parse::<u64>().ok().filter(|n| n.to_string() == s))
}

/// The control plane in Redis, shared by every instance (`redis://…`).
///
/// Keys: `{prefix}{control}:state` (a hash: `rev`, `doc`, and `stamp`, a
/// random number each commit draws — see [`Store::version`]) and
/// `{prefix}{control}:blob:<sha256>` for plugin bytes — one hash slot, so
/// it works on Redis Cluster. Every commit publishes its revision on
/// `{prefix}control:changed`; watchers listen there and also poll.
/// Every call is bounded by a timeout (default 2 s); an unreachable Redis
/// is a [`ControlError::Redis`], never a hang.
#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    state_key: String,
    blob_prefix: String,
    channel: String,
    timeout: Duration,
    changes: Arc<parking_lot::Mutex<Option<watch::Receiver<u64>>>>,
    /// Reconnects after a failover left the client on a replica.
    demotion: Arc<cog_core::redis::Demotion>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("state_key", &self.state_key)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn redis_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ControlError {
    ControlError::Redis { source: e.into() }
}

impl RedisStore {
    /// Connects to `url` with the default prefix `cog:`.
    ///
    /// # Errors
    /// A bad URL or an unreachable server.
    pub async fn connect(url: &str) -> Result<Self, ControlError> {
        let config = Config::from_url(url).map_err(redis_error)?;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.max_command_attempts = 1;
            })
            .set_policy(ReconnectPolicy::new_constant(0, 200))
            .build()
            .map_err(redis_error)?;
        tokio::time::timeout(Duration::from_secs(5), client.init())
            .await
            .map_err(|_| ControlError::Redis {
                source: format!("{}: no answer within 5 s", cog_core::text::redact_url(url)).into(),
            })?
            .map_err(redis_error)?;
        Ok(Self::new(client, "cog:"))
    }

    /// A store on an initialized client, its keys under `prefix`.
    ///
    /// Takes fred's `Client`: fred's major version is part of this crate's
    /// API under the `redis` feature (why: `docs/architecture.md`, "The
    /// Redis client is part of the API").
    pub fn new(client: Client, prefix: &str) -> Self {
        RedisStore {
            client,
            state_key: format!("{prefix}{{control}}:state"),
            blob_prefix: format!("{prefix}{{control}}:blob:"),
            channel: format!("{prefix}control:changed"),
            timeout: Duration::from_secs(2),
            changes: Arc::default(),
            demotion: Arc::default(),
        }
    }

    /// Bounds every call (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// One Redis call, bounded by the timeout, in a client span when the
    /// caller's trace is sampled.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        f: impl std::future::Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, ControlError> {
        let span = cog_core::telemetry::Child::redis("cog-control", operation, || {
            cog_core::telemetry::redis_peer(&self.client)
        });
        let result = tokio::time::timeout(self.timeout, span.wrap(f))
            .await
            .map_err(|_| ControlError::Redis {
                source: format!("no answer within {:?}", self.timeout).into(),
            })
            .and_then(|r| {
                r.map_err(|e| {
                    self.demotion.after_error(&self.client, e.details());
                    redis_error(e)
                })
            });
        if let Err(e) = &result {
            span.fail("redis", || e.to_string());
        }
        result
    }

    fn blob_key(&self, digest: &str) -> Result<String, ControlError> {
        crate::model::check_digest("digest", digest)?;
        Ok(format!(
            "{}{}",
            self.blob_prefix,
            digest.trim_start_matches("sha256:")
        ))
    }

    /// Listens on the change channel (a dedicated connection); every
    /// message wakes the receivers, and so does every confirmed
    /// subscription, a lost connection and a lagging listener (messages
    /// may have been lost: the watcher re-reads the revision). The
    /// subscription counts once Redis has confirmed it, and is made again
    /// on a new connection after one is lost
    /// ([`cog_core::redis::keep_subscribed`]: fred answers `Ok` to a
    /// `SUBSCRIBE` Redis refuses); until then the directory has only its
    /// polling, and a warning says so.
    fn listen(&self) -> Result<watch::Receiver<u64>, fred::error::Error> {
        let mut builder = Builder::from_config(self.client.client_config());
        builder
            .with_connection_config(|c| c.connection_timeout = Duration::from_secs(2))
            .set_policy(ReconnectPolicy::new_constant(0, 200));
        // A configuration fred refuses is the builder's error.
        builder.build_subscriber_client()?;
        let (tx, rx) = watch::channel(0u64);
        let channel = self.channel.clone();
        tokio::spawn(async move {
            let failure = |attempt: u32, error: &str| {
                if attempt == 0 {
                    tracing::warn!(target: "cog_control", channel = %channel, %error, "subscribing to changes failed: changes are seen at the next poll until it succeeds; retrying");
                } else {
                    tracing::debug!(target: "cog_control", channel = %channel, %error, "subscribing to changes failed again");
                }
            };
            let heard = |heard: cog_core::redis::Heard| {
                let revision = match heard {
                    cog_core::redis::Heard::Message(m) => {
                        m.value.as_string().and_then(|s| s.parse::<u64>().ok())
                    }
                    // Changes may have been missed: wake, the watcher
                    // re-reads the revision.
                    _ => None,
                };
                tx.send_modify(|r| *r = revision.map_or(*r, |v| v.max(*r)));
            };
            cog_core::redis::keep_subscribed(
                &builder,
                &channel,
                || !tx.is_closed(),
                failure,
                heard,
            )
            .await;
        });
        Ok(rx)
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn load(&self) -> Result<State, ControlError> {
        let (rev, doc, stamp): (Option<u64>, Option<Bytes>, Option<String>) = self
            .bounded(
                "HMGET",
                self.client
                    .hmget(&self.state_key, vec!["rev", "doc", "stamp"]),
            )
            .await?;
        match (rev, doc) {
            (_, None) => Ok(State::default()),
            (rev, Some(doc)) => {
                let mut state = decode(&doc, "the Redis store")?;
                state.revision = rev.unwrap_or(0);
                state.stamp = stamp_of(stamp);
                Ok(state)
            }
        }
    }

    async fn commit(&self, state: &State) -> Result<super::Version, ControlError> {
        let doc = encode(state, state.revision + 1, None);
        let stamp = new_stamp();
        let r: i64 = self
            .bounded(
                "EVAL",
                self.client.eval(
                    COMMIT_LUA,
                    vec![self.state_key.clone()],
                    vec![
                        state.revision.to_string().into_bytes(),
                        doc,
                        self.channel.clone().into_bytes(),
                        stamp.to_string().into_bytes(),
                        state
                            .stamp
                            .map_or_else(Vec::new, |s| s.to_string().into_bytes()),
                    ],
                ),
            )
            .await?;
        if r < 0 {
            return Err(ControlError::Conflict {
                expected: state.revision,
                found: (-1 - r) as u64,
            });
        }
        Ok(super::Version {
            revision: r as u64,
            stamp: Some(stamp),
        })
    }

    async fn revision(&self) -> Result<u64, ControlError> {
        let rev: Option<u64> = self
            .bounded("HGET", self.client.hget(&self.state_key, "rev"))
            .await?;
        Ok(rev.unwrap_or(0))
    }

    async fn version(&self) -> Result<super::Version, ControlError> {
        let (rev, stamp): (Option<u64>, Option<String>) = self
            .bounded(
                "HMGET",
                self.client.hmget(&self.state_key, vec!["rev", "stamp"]),
            )
            .await?;
        Ok(super::Version {
            revision: rev.unwrap_or(0),
            stamp: stamp_of(stamp),
        })
    }

    async fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), ControlError> {
        let key = self.blob_key(digest)?;
        let _: Option<String> = self
            .bounded(
                "SET",
                self.client.set(
                    key,
                    Bytes::copy_from_slice(bytes),
                    None::<Expiration>,
                    Some(SetOptions::NX),
                    false,
                ),
            )
            .await?;
        Ok(())
    }

    async fn delete_blob(&self, digest: &str) -> Result<(), ControlError> {
        let key = self.blob_key(digest)?;
        let _: i64 = self.bounded("DEL", self.client.del(key)).await?;
        Ok(())
    }

    async fn get_blob(&self, digest: &str) -> Result<Option<Bytes>, ControlError> {
        let key = self.blob_key(digest)?;
        let bytes: Option<Bytes> = self.bounded("GET", self.client.get(key)).await?;
        match bytes {
            Some(b) if crate::digest(&b) != digest => Err(ControlError::Corrupt {
                what: "the Redis store".into(),
                message: format!("blob {digest}: the bytes do not match their digest"),
            }),
            other => Ok(other),
        }
    }

    fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        let mut changes = self.changes.lock();
        if changes.is_none() {
            match self.listen() {
                Ok(rx) => *changes = Some(rx),
                Err(e) => {
                    tracing::warn!(target: "cog_control", error = %e, "cannot listen for changes; polling only");
                    return None;
                }
            }
        }
        changes.clone()
    }
}
