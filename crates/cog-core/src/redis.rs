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

/// Copies `keys` from one Redis to another (`DUMP`, `PTTL`, `RESTORE`
/// without `REPLACE`: a key `to` has already wins) — how placed stores
/// carry a tenant's data to the deployment its partition moved to. Keys
/// `from` lacks are skipped; how many were copied.
///
/// # Errors
/// The first failed call (`to` answering `BUSYKEY` is not a failure).
#[cfg(feature = "fred")]
pub async fn copy_keys(
    from: &impl fred::interfaces::ClientLike,
    to: &impl fred::interfaces::ClientLike,
    keys: &[String],
) -> Result<usize, fred::error::Error> {
    use fred::types::{CustomCommand, Value};
    let cmd = |name: &'static str| CustomCommand::new_static(name, None, false);
    let mut copied = 0;
    for key in keys {
        let bytes = match from.custom(cmd("DUMP"), vec![key.clone()]).await? {
            Value::Bytes(b) => b,
            Value::String(s) => s.into_inner(),
            _ => continue, // nothing there
        };
        let ttl: i64 = from.custom(cmd("PTTL"), vec![key.clone()]).await?;
        if ttl == -2 {
            continue; // expired in between
        }
        let restored: Result<Value, _> = to
            .custom(
                cmd("RESTORE"),
                vec![
                    Value::from(key.as_str()),
                    Value::Integer(ttl.max(0)),
                    Value::Bytes(bytes),
                ],
            )
            .await;
        match restored {
            Ok(_) => copied += 1,
            Err(e) if e.details().starts_with("BUSYKEY") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(copied)
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
}
