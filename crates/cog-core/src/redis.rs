//! What a Redis error reply means for a caller.

/// Error codes with which Redis says "I cannot serve this now" rather than
/// "this request is wrong": out of memory under `noeviction`, writes
/// stopped after a failed save, a replica or a loading, busy or
/// primary-less server, a cluster that is down or resharding.
pub const UNAVAILABLE_CODES: [&str; 8] = [
    "OOM",
    "MISCONF",
    "READONLY",
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
];

/// Whether the text of a Redis error reply means the server cannot serve
/// now (see [`UNAVAILABLE_CODES`]) — an outage for failure policies and
/// circuit breakers, not a bug to answer `500` with.
///
/// Recognizes the code first (`OOM command not allowed …`, as Redis 7
/// answers even from inside a script) and as Redis 6 reports an error
/// raised inside a script (`ERR Error running script (…): -OOM …`).
pub fn is_unavailable_reply(details: &str) -> bool {
    let is_code = |word: &str| UNAVAILABLE_CODES.contains(&word);
    let first = details.split_whitespace().next().unwrap_or("");
    if is_code(first.trim_start_matches('-')) {
        return true;
    }
    // Redis 6: `... @user_script:1: -OOM command not allowed ...`.
    details.starts_with("ERR Error running script")
        && details
            .split(": -")
            .skip(1)
            .any(|rest| is_code(rest.split_whitespace().next().unwrap_or("")))
}

/// Whether a fred error means Redis, or the way to it, cannot serve now:
/// a timeout, a connection lost, refused or not yet routed, a cluster or
/// Sentinel moving, a refused login, or a reply in [`UNAVAILABLE_CODES`].
/// The other errors are Redis answering that *this call* is wrong
/// (`WRONGTYPE` on a key holding garbage, a script error, `NOPERM`) or a
/// reply that could not be read: the server is up, so they should not
/// open a circuit breaker or apply a failure policy.
///
/// fred reports both Redis error replies and some client-side connection
/// failures (`Failed to route command.`, `Missing expected connection.`,
/// seen when a server is killed mid-command) as `Unknown`: only a reply
/// from Redis (an upper-case code first) is the server answering.
#[cfg(feature = "fred")]
pub fn is_outage(e: &fred::error::Error) -> bool {
    use fred::error::ErrorKind;
    if is_unavailable_reply(e.details()) {
        return true;
    }
    match e.kind() {
        ErrorKind::Timeout
        | ErrorKind::IO
        | ErrorKind::Canceled
        | ErrorKind::Routing
        | ErrorKind::Backpressure
        | ErrorKind::Cluster
        | ErrorKind::Sentinel
        | ErrorKind::Auth
        | ErrorKind::Config => true,
        ErrorKind::Unknown => !is_reply(e.details()),
        _ => false,
    }
}

/// Whether an error text is a reply from Redis (an upper-case error code
/// first), as opposed to a client-side message.
#[cfg(feature = "fred")]
fn is_reply(details: &str) -> bool {
    let code = details.split_whitespace().next().unwrap_or("");
    !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

/// Whether Redis refused a call for the type of value under its key
/// (`WRONGTYPE`, also from inside a script): garbage where a caller keeps
/// another type.
#[cfg(feature = "fred")]
pub fn is_wrong_type(e: &fred::error::Error) -> bool {
    has_code(e.details(), "WRONGTYPE")
}

/// Whether the text of a Redis error reply carries `code` (`READONLY`,
/// say): first, or as Redis 6 reports an error raised inside a script.
#[cfg_attr(not(feature = "fred"), allow(dead_code))] // used by `Demotion` and `is_wrong_type`
fn has_code(details: &str, code: &str) -> bool {
    let first = details.split_whitespace().next().unwrap_or("");
    first.trim_start_matches('-') == code
        || (details.starts_with("ERR Error running script")
            && details
                .split(": -")
                .skip(1)
                .any(|rest| rest.split_whitespace().next() == Some(code)))
}

/// Reconnects a client whose server became a replica: a failover promoted
/// another server, and this connection stayed on the old one, which now
/// answers every write `READONLY` — for good, since the connection itself
/// is fine. Reconnecting asks the Sentinels (or the cluster) again where
/// the primary is. One per client, shared by its callers.
#[cfg(feature = "fred")]
#[derive(Debug, Default)]
pub struct Demotion {
    /// When the last reconnection was asked for (ms since the Unix epoch).
    last_ms: std::sync::atomic::AtomicU64,
}

#[cfg(feature = "fred")]
impl Demotion {
    /// After an error from `client`: if it is a `READONLY` reply, asks for
    /// a reconnection in the background — at most once a second — and
    /// returns `true`. Needs a Tokio runtime.
    pub fn after_error(&self, client: &fred::clients::Client, details: &str) -> bool {
        use std::sync::atomic::Ordering;
        if !has_code(details, "READONLY") {
            return false;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.last_ms.load(Ordering::Relaxed);
        if now < last.saturating_add(1000)
            || self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        let client = client.clone();
        tokio::spawn(async move {
            use fred::interfaces::ClientLike;
            if let Err(e) = client.force_reconnection().await {
                tracing::warn!(target: "cog", error = %e, "reconnecting after a failover failed");
            }
        });
        tracing::info!(target: "cog", "Redis answered READONLY (a failover): reconnecting to the primary");
        true
    }
}

/// Copies `keys` from one Redis to another once per move of their
/// partition, the move named by the revisions it may have been made at,
/// `moved` ([`Route::moved_in`](crate::placement::Route::moved_in): another
/// partition's later move must not look like a new one, and an instance
/// that skipped the move's revision names it by a wider range): the first
/// caller copies and leaves a marker on `to` (`<first key>:moved`, the
/// range's last revision, kept for `ttl`), and its copy replaces what `to`
/// holds; a later caller whose range starts at or before the marker's
/// revision copies nothing (a later move of the partition starts past it).
/// Keys `from` lacks are skipped (`to` keeps its own: the data never left
/// it). How placed stores carry a tenant's state to a deployment that may
/// hold an older copy of it — a partition moved back to a previous home —
/// without a second copy overwriting what was written since the first.
///
/// The keys are read from `from` first; the marker is set and the keys
/// restored in one script on `to`, so a copy cut short (a timeout, an
/// unreachable `from`) leaves no marker behind and the next caller tries
/// again. On a Redis Cluster the keys must share a hash tag (the marker
/// takes the first key's).
/// `None` when another caller had the marker; otherwise how many keys were
/// copied.
///
/// # Errors
/// The first failed call.
#[cfg(feature = "fred")]
pub async fn copy_keys_once(
    from: &impl fred::interfaces::ClientLike,
    to: &impl fred::interfaces::ClientLike,
    keys: &[String],
    moved: std::ops::RangeInclusive<u64>,
    ttl: std::time::Duration,
) -> Result<Option<usize>, fred::error::Error> {
    use fred::types::{CustomCommand, Value};
    /// KEYS: the marker, then the keys to restore; ARGV: the range's first
    /// and last revisions, the marker's lifetime (ms), then a lifetime (ms,
    /// 0: none) and a dump per key. A marker that is not a number (garbage)
    /// is no marker.
    const RESTORE_ONCE: &str = r#"
local copied = tonumber(redis.call('GET', KEYS[1]))
if copied and copied >= tonumber(ARGV[1]) then return -1 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
for i = 2, #KEYS do
  redis.call('RESTORE', KEYS[i], ARGV[2 * i], ARGV[2 * i + 1], 'REPLACE')
end
return #KEYS - 1
"#;
    let cmd = |name: &'static str| CustomCommand::new_static(name, None, false);
    let Some(first) = keys.first() else {
        return Ok(Some(0));
    };
    let marker = format!("{first}:moved");
    let mut found = Vec::new();
    for key in keys {
        let bytes = match from.custom(cmd("DUMP"), vec![key.clone()]).await? {
            Value::Bytes(b) => b,
            Value::String(s) => s.into_inner(),
            _ => continue, // nothing there
        };
        let ttl: i64 = from.custom(cmd("PTTL"), vec![key.clone()]).await?;
        if ttl != -2 {
            found.push((key, ttl.max(0), bytes));
        }
    }
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
    let mut args = vec![
        Value::from(RESTORE_ONCE),
        Value::Integer(1 + found.len() as i64),
        Value::from(marker.as_str()),
    ];
    args.extend(found.iter().map(|(k, _, _)| Value::from(k.as_str())));
    for revision in [*moved.start(), *moved.end()] {
        args.push(Value::Integer(i64::try_from(revision).unwrap_or(i64::MAX)));
    }
    args.push(Value::Integer(ttl_ms));
    for (_, ttl, bytes) in found {
        args.push(Value::Integer(ttl));
        args.push(Value::Bytes(bytes));
    }
    let copied: i64 = to.custom(cmd("EVAL"), args).await?;
    Ok(usize::try_from(copied).ok())
}

/// A subscriber connection Redis has confirmed subscribed to a channel
/// (see [`subscribe_confirmed`]), with its receivers of messages and of
/// reconnections — taken before it subscribed, so nothing published since
/// is missed. The first reconnection event is its first connection.
#[cfg(feature = "fred")]
pub struct Subscription {
    /// The connection. Not subscribed again after a reconnect: a new
    /// [`subscribe_confirmed`] is (see [`keep_subscribed`]).
    pub client: fred::clients::SubscriberClient,
    /// The channel's messages.
    pub messages: tokio::sync::broadcast::Receiver<fred::types::Message>,
    /// The connection's (re)connections.
    pub reconnects: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
    /// How many attempts failed before this one (0: the first succeeded).
    pub failed: u32,
}

#[cfg(feature = "fred")]
impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// Pause after a first failed attempt of [`subscribe_confirmed`]; it
/// doubles with each further failure, up to eight times this.
#[cfg(feature = "fred")]
const SUBSCRIBE_RETRY: std::time::Duration = std::time::Duration::from_millis(500);
/// How long one attempt (connect, subscribe, confirm) may take.
#[cfg(feature = "fred")]
const SUBSCRIBE_ATTEMPT: std::time::Duration = std::time::Duration::from_secs(5);

/// Subscribes to `channel` on a new subscriber connection from `builder`
/// and has Redis confirm it, trying again on a new connection until it
/// does (0.5 s after a first failure, doubling to 4 s). `failure` hears
/// each failed attempt (its number, from 0, and the error); `None` once
/// `wanted` says the subscription is no longer needed.
///
/// fred resolves `SUBSCRIBE` when the command is written, not when Redis
/// answers, so a refusal — `NOPERM`, an ACL user without the channel —
/// would go unseen: a listener would believe it listens and hear nothing.
/// So the connection is asked afterwards whether it is subscribed
/// ([`is_subscribed`]). fred takes the refusal as the answer to the
/// connection's next command (or drops it when none is waiting yet), so
/// a refused connection may stay out of step by one answer for good,
/// which is why each attempt starts on a new one.
#[cfg(feature = "fred")]
pub async fn subscribe_confirmed(
    builder: &fred::types::Builder,
    channel: &str,
    mut wanted: impl FnMut() -> bool,
    mut failure: impl FnMut(u32, &str),
) -> Option<Subscription> {
    use fred::interfaces::{ClientLike, EventInterface};
    let mut failed = 0u32;
    loop {
        if !wanted() {
            return None;
        }
        let error = match builder.build_subscriber_client() {
            Ok(client) => {
                let messages = client.message_rx();
                let reconnects = client.reconnect_rx();
                let error = match tokio::time::timeout(SUBSCRIBE_ATTEMPT, confirm(&client, channel))
                    .await
                {
                    Ok(Ok(())) => {
                        return Some(Subscription {
                            client,
                            messages,
                            reconnects,
                            failed,
                        });
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {SUBSCRIBE_ATTEMPT:?}"),
                };
                let _ = tokio::time::timeout(SUBSCRIBE_ATTEMPT, client.quit()).await;
                error
            }
            Err(e) => e.to_string(),
        };
        failure(failed, &error);
        tokio::time::sleep(SUBSCRIBE_RETRY * (1 << failed.min(3))).await;
        failed = failed.saturating_add(1);
    }
}

/// What a [`keep_subscribed`] listener hears.
#[cfg(feature = "fred")]
#[derive(Debug)]
pub enum Heard {
    /// Redis has confirmed the subscription: from here on every message
    /// is heard. `missed`: messages may have been lost before it — an
    /// attempt failed first, or this follows [`Heard::Lost`].
    Listening {
        /// Whether messages may have been lost.
        missed: bool,
    },
    /// A message on the channel.
    Message(fred::types::Message),
    /// Messages were lost: the listener fell behind.
    Lagged,
    /// The connection was lost (Redis restarted, a failover, the network):
    /// messages may be lost until the next [`Heard::Listening`].
    Lost,
}

/// Keeps a confirmed subscription to `channel` ([`subscribe_confirmed`])
/// for as long as `wanted` says (asked at least once a second) and tells
/// `heard` what happens. A lost connection is not left to fred's own
/// resubscription, which would take a refusal for a subscription too: the
/// listener starts over on a new connection and says
/// [`Heard::Listening`] again once Redis confirms it.
#[cfg(feature = "fred")]
pub async fn keep_subscribed(
    builder: &fred::types::Builder,
    channel: &str,
    mut wanted: impl FnMut() -> bool,
    mut failure: impl FnMut(u32, &str),
    mut heard: impl FnMut(Heard),
) {
    use fred::interfaces::ClientLike;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let mut missed = false;
    loop {
        let Some(Subscription {
            client,
            mut messages,
            mut reconnects,
            failed,
        }) = subscribe_confirmed(builder, channel, &mut wanted, &mut failure).await
        else {
            return;
        };
        // The connections made while subscribing (one per node of a
        // Cluster) are not reconnections.
        while !matches!(
            reconnects.try_recv(),
            Err(TryRecvError::Empty | TryRecvError::Closed)
        ) {}
        heard(Heard::Listening {
            missed: missed || failed > 0,
        });
        missed = true;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let stop = loop {
            tokio::select! {
                msg = messages.recv() => match msg {
                    Ok(m) => heard(Heard::Message(m)),
                    Err(RecvError::Lagged(_)) => heard(Heard::Lagged),
                    Err(RecvError::Closed) => break false,
                },
                _ = reconnects.recv() => break false,
                _ = tick.tick() => {
                    if !wanted() {
                        break true;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(SUBSCRIBE_ATTEMPT, client.quit()).await;
        if stop {
            return;
        }
        heard(Heard::Lost);
    }
}

/// Connects `client`, subscribes it to `channel`, and has Redis confirm it
/// (see [`subscribe_confirmed`]).
#[cfg(feature = "fred")]
async fn confirm(
    client: &fred::clients::SubscriberClient,
    channel: &str,
) -> Result<(), fred::error::Error> {
    use fred::interfaces::{ClientLike, PubsubInterface};
    client.init().await?;
    client.subscribe(channel).await?;
    if is_subscribed(client).await? {
        Ok(())
    } else {
        Err(fred::error::Error::new(
            fred::error::ErrorKind::Unknown,
            "Redis did not take the subscription (refused, as NOPERM does)",
        ))
    }
}

/// Whether Redis has `client`'s connection subscribed to a channel, asked
/// on that connection (on a Cluster, of the node fred sends the client's
/// `SUBSCRIBE`s to): over RESP2, a connection in subscriber mode answers a
/// `PING` with `["pong", ""]`, any other with `PONG`; over RESP3, whose
/// `PING` answers alike, its `CLIENT INFO` counts its subscriptions.
///
/// # Errors
/// The call failed — or Redis refused an earlier `SUBSCRIBE` on the
/// connection: fred resolves `SUBSCRIBE` when it is written and takes its
/// answer as the next call's, when that answer does not come before the
/// next call (then it is dropped, and this says `false`).
#[cfg(feature = "fred")]
pub async fn is_subscribed(
    client: &fred::clients::SubscriberClient,
) -> Result<bool, fred::error::Error> {
    use fred::interfaces::ClientLike;
    use fred::types::{ClusterHash, CustomCommand, RespVersion, Value};
    let slot = fred::util::redis_keyslot(client.id().as_bytes());
    let mut node = fred::types::config::Options::default();
    if client.is_clustered() {
        node.cluster_hash = Some(ClusterHash::Custom(slot));
    }
    let on = client.with_options(&node);
    Ok(match client.protocol_version() {
        RespVersion::RESP2 => {
            let answer: Value = on.ping(None).await?;
            is_subscribed_pong(&answer)
        }
        RespVersion::RESP3 => {
            let info: String = on
                .custom(
                    CustomCommand::new_static("CLIENT", ClusterHash::Custom(slot), false),
                    vec!["INFO"],
                )
                .await?;
            subscriptions(&info) > 0
        }
    })
}

/// Whether a RESP2 `PING` answer comes from a connection in subscriber
/// mode: `["pong", <message>]`, not `PONG`.
#[cfg(feature = "fred")]
fn is_subscribed_pong(answer: &fred::types::Value) -> bool {
    match answer {
        fred::types::Value::Array(parts) => parts
            .first()
            .and_then(fred::types::Value::as_str)
            .is_some_and(|p| p.eq_ignore_ascii_case("pong")),
        _ => false,
    }
}

/// The `sub=` field of a `CLIENT INFO` line: the connection's channel
/// subscriptions (0 when absent or unreadable).
#[cfg(feature = "fred")]
fn subscriptions(info: &str) -> u64 {
    info.split_whitespace()
        .find_map(|field| field.strip_prefix("sub="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cannot_serve_replies_are_recognized() {
        for text in [
            "OOM command not allowed when used memory > 'maxmemory'.",
            "OOM command not allowed when used memory > 'maxmemory'. script: 78df22, on @user_script:1.",
            "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
            "READONLY You can't write against a read only replica.",
            "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script.",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "CLUSTERDOWN The cluster is down",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "-OOM command not allowed",
            "ERR Error running script (call to f_0ea4): @user_script:1: -OOM command not allowed when used memory > 'maxmemory'.",
            "ERR Error running script (call to f_0ea4): @user_script:1: -READONLY You can't write against a read only replica.",
        ] {
            assert!(is_unavailable_reply(text), "{text}");
        }
    }

    #[test]
    fn a_replica_says_readonly_and_nothing_else_does() {
        for text in [
            "READONLY You can't write against a read only replica. script: 91c5, on @user_script:28.",
            "-READONLY You can't write against a read only replica.",
            "ERR Error running script (call to f_0ea4): @user_script:1: -READONLY You can't write against a read only replica.",
        ] {
            assert!(has_code(text, "READONLY"), "{text}");
        }
        for text in [
            "",
            "OOM command not allowed",
            "ERR READONLY is a word here",
            "ERR Error running script (call to f_1): @user_script:1: -OOM not READONLY",
        ] {
            assert!(!has_code(text, "READONLY"), "{text}");
        }
    }

    #[cfg(feature = "fred")]
    #[test]
    fn outages_are_told_from_replies_about_the_call() {
        use fred::error::{Error, ErrorKind};
        let outage = |kind, text: &str| is_outage(&Error::new(kind, text.to_owned()));
        for text in [
            "Failed to route command.",
            "Missing expected connection.",
            "LOADING Redis is loading",
            "OOM command not allowed when used memory > 'maxmemory'.",
            "READONLY You can't write against a read only replica.",
        ] {
            assert!(outage(ErrorKind::Unknown, text), "{text}");
        }
        for kind in [
            ErrorKind::Timeout,
            ErrorKind::IO,
            ErrorKind::Canceled,
            ErrorKind::Routing,
            ErrorKind::Backpressure,
            ErrorKind::Cluster,
            ErrorKind::Sentinel,
            ErrorKind::Auth,
            ErrorKind::Config,
        ] {
            assert!(outage(kind.clone(), "x"), "{kind:?}");
        }
        for (kind, text) in [
            (
                ErrorKind::InvalidArgument,
                "WRONGTYPE Operation against a key holding the wrong kind of value",
            ),
            (
                ErrorKind::Unknown,
                "ERR Error running script (call to f_1): @user_script:1: oops",
            ),
            (
                ErrorKind::Unknown,
                "NOPERM User u has no permissions to run the 'eval' command",
            ),
            (
                ErrorKind::Unknown,
                "BUSYGROUP Consumer Group name already exists",
            ),
            (ErrorKind::Parse, "Could not convert to bytes."),
            (ErrorKind::InvalidCommand, "ERR unknown command"),
        ] {
            assert!(!outage(kind, text), "{text}");
        }
        // OOM is an outage whatever kind fred gave it.
        assert!(outage(ErrorKind::Parse, "OOM command not allowed"));

        let wrong_type =
            |text: &str| is_wrong_type(&Error::new(ErrorKind::InvalidArgument, text.to_owned()));
        assert!(wrong_type(
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        ));
        assert!(wrong_type(
            "ERR Error running script (call to f_1): @user_script:3: -WRONGTYPE Operation against a key"
        ));
        assert!(!wrong_type("ERR WRONGTYPE in a message"));
        assert!(!wrong_type("Expected bulk string array."));
    }

    #[test]
    fn other_replies_are_not() {
        for text in [
            "",
            "ERR unknown command",
            "ERR Error running script (call to f_1): @user_script:1: user_script:1: attempt to compare nil with number",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "NOSCRIPT No matching script.",
            "Failed to route command.",
            "OOMPH",
            "ERR OOM in a message",
            "BUSYGROUP Consumer Group name already exists",
        ] {
            assert!(!is_unavailable_reply(text), "{text}");
        }
    }

    #[cfg(feature = "fred")]
    #[test]
    fn a_subscribed_connection_is_told_by_its_answers() {
        use fred::types::Value;
        let pong = |first: &str| Value::Array(vec![first.into(), "".into()]);
        assert!(is_subscribed_pong(&pong("pong")));
        assert!(is_subscribed_pong(&pong("PONG")));
        assert!(!is_subscribed_pong(&"PONG".into()));
        assert!(!is_subscribed_pong(&pong("message")));
        assert!(!is_subscribed_pong(&Value::Array(vec![])));
        assert_eq!(
            subscriptions("id=3 addr=127.0.0.1:5 db=0 sub=1 psub=0 ssub=0 multi=-1"),
            1
        );
        assert_eq!(
            subscriptions("id=3 db=0 sub=0 psub=2"),
            0,
            "psub is not sub"
        );
        assert_eq!(subscriptions("id=3 db=0 ssub=4"), 0);
        assert_eq!(subscriptions("id=3 sub=x"), 0);
        assert_eq!(subscriptions(""), 0);
    }
}
