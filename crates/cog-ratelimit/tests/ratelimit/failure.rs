//! Failure policies with the real server killed, paused, slowed down, and
//! brought back.

use std::time::Duration;

use cog_ratelimit::store::{FailurePolicy, RedisStore, Store, StoreError};
use cog_ratelimit::{DecisionSource, Limit, Quota};
use cog_testkit::{Proxy, RedisServer};

use crate::support::client;

/// A bound on how long any call may take, so a hang fails the test instead
/// of stalling it. Not a performance assertion.
const HANG: Duration = Duration::from_secs(10);

async fn check(store: &RedisStore, quota: &Quota) -> Result<cog_ratelimit::Decision, StoreError> {
    tokio::time::timeout(HANG, store.check("k", quota, 1))
        .await
        .expect("a check hung")
}

async fn store(url: &str, policy: FailurePolicy) -> RedisStore {
    RedisStore::new(client(url).await)
        .timeout(Duration::from_millis(500))
        .retry_interval(Duration::from_millis(200))
        .local_deny(false)
        .on_failure(policy)
}

/// Checks until Redis itself decides again (the breaker closes after the
/// retry interval, on the next probe).
async fn until_store_decides(store: &RedisStore, quota: &Quota) -> cog_ratelimit::Decision {
    for _ in 0..200 {
        if let Ok(d) = check(store, quota).await
            && d.source() == DecisionSource::Store
        {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis never took over again");
}

#[tokio::test]
async fn fail_open_when_killed_then_recovers_after_restart() {
    let server = RedisServer::start().unwrap();
    let store = store(&server.url(), FailurePolicy::FailOpen).await;
    let quota = Quota::single(Limit::per_day(2)).unwrap();
    assert_eq!(
        check(&store, &quota).await.unwrap().source(),
        DecisionSource::Store
    );

    server.kill().unwrap();
    for _ in 0..20 {
        let d = check(&store, &quota).await.unwrap();
        assert!(d.is_allowed());
        assert_eq!(d.source(), DecisionSource::FailOpen);
    }
    assert!(store.breaker_open());

    server.restart().unwrap();
    // The restarted server is empty: state starts fresh.
    let d = until_store_decides(&store, &quota).await;
    assert!(d.is_allowed());
    assert!(!store.breaker_open());
    assert!(check(&store, &quota).await.unwrap().is_allowed());
    assert!(
        !check(&store, &quota).await.unwrap().is_allowed(),
        "limit not enforced after recovery"
    );
}

#[tokio::test]
async fn fail_closed_when_killed_and_when_paused() {
    let server = RedisServer::start().unwrap();
    let store = store(&server.url(), FailurePolicy::FailClosed).await;
    let quota = Quota::single(Limit::per_day(100)).unwrap();
    assert!(check(&store, &quota).await.unwrap().is_allowed());

    server.pause().unwrap();
    // The first call waits out the configured timeout (500 ms), no more.
    let started = std::time::Instant::now();
    let err = check(&store, &quota).await.unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert!(waited < Duration::from_millis(500 + 250), "{waited:?}");
    // While the breaker is open, no call waits on the frozen server.
    let started = std::time::Instant::now();
    for _ in 0..10 {
        assert!(matches!(
            check(&store, &quota).await,
            Err(StoreError::Unavailable { .. })
        ));
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(20), "{waited:?}");
    server.resume().unwrap();
    until_store_decides(&store, &quota).await;

    server.kill().unwrap();
    assert!(matches!(
        check(&store, &quota).await,
        Err(StoreError::Unavailable { .. })
    ));
    server.restart().unwrap();
    assert!(until_store_decides(&store, &quota).await.is_allowed());
}

#[tokio::test]
async fn local_fallback_enforces_a_share_of_the_limit() {
    let server = RedisServer::start().unwrap();
    let store = store(&server.url(), FailurePolicy::Local { instances: 4 }).await;
    let quota = Quota::single(Limit::per_day(40)).unwrap();
    assert!(check(&store, &quota).await.unwrap().is_allowed());

    server.kill().unwrap();
    let mut admitted = 0;
    for _ in 0..30 {
        let d = check(&store, &quota).await.unwrap();
        assert_eq!(d.source(), DecisionSource::Fallback);
        admitted += d.is_allowed() as usize;
    }
    assert_eq!(admitted, 10, "40 / 4 instances");

    server.restart().unwrap();
    let d = until_store_decides(&store, &quota).await;
    assert!(d.is_allowed());
}

#[tokio::test]
async fn local_fallback_when_paused() {
    let server = RedisServer::start().unwrap();
    let store = store(&server.url(), FailurePolicy::Local { instances: 2 }).await;
    let quota = Quota::single(Limit::per_day(6)).unwrap();
    assert!(check(&store, &quota).await.unwrap().is_allowed());
    server.pause().unwrap();
    let mut admitted = 0;
    for _ in 0..10 {
        let d = check(&store, &quota).await.unwrap();
        assert_eq!(d.source(), DecisionSource::Fallback);
        admitted += d.is_allowed() as usize;
    }
    assert_eq!(admitted, 3);
    server.resume().unwrap();
    // Redis kept its state through the pause. (The call that timed out was
    // already on the wire, so Redis may have counted it after resuming: a
    // timed-out decision can still be charged, never more than once.)
    let d = until_store_decides(&store, &quota).await;
    assert!(d.is_allowed());
    let remaining = d.statuses()[0].remaining;
    assert!(remaining < 5, "state lost across the pause: {remaining}");
}

#[tokio::test]
async fn slow_redis_through_a_proxy_times_out_then_recovers() {
    let server = RedisServer::start().unwrap();
    let proxy = Proxy::start(&server.addr()).await.unwrap();
    let store = store(&proxy.redis_url(), FailurePolicy::FailOpen).await;
    let quota = Quota::single(Limit::per_day(1000)).unwrap();
    assert_eq!(
        check(&store, &quota).await.unwrap().source(),
        DecisionSource::Store
    );

    // 1 s each way against a 500 ms timeout.
    proxy.set_latency(Duration::from_secs(1));
    let d = check(&store, &quota).await.unwrap();
    assert_eq!(d.source(), DecisionSource::FailOpen);
    proxy.set_latency(Duration::ZERO);
    until_store_decides(&store, &quota).await;

    // Connections cut: fail open, then back once restored.
    proxy.cut();
    assert_eq!(
        check(&store, &quota).await.unwrap().source(),
        DecisionSource::FailOpen
    );
    proxy.restore();
    until_store_decides(&store, &quota).await;
}

#[tokio::test]
async fn fail_open_when_paused_returns_within_the_timeout() {
    let server = RedisServer::start().unwrap();
    let store = store(&server.url(), FailurePolicy::FailOpen).await;
    let quota = Quota::single(Limit::per_day(1)).unwrap();
    assert!(check(&store, &quota).await.unwrap().is_allowed());
    assert!(!check(&store, &quota).await.unwrap().is_allowed());

    server.pause().unwrap();
    // The frozen server cannot answer: the call ends at the timeout (the
    // HANG bound inside `check` fails the test otherwise) and fails open.
    let d = check(&store, &quota).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.source(), DecisionSource::FailOpen);

    server.resume().unwrap();
    // Back on Redis, whose state survived the pause: still over the limit.
    let d = until_store_decides(&store, &quota).await;
    assert!(!d.is_allowed());
}

#[tokio::test]
async fn an_abandoned_probe_does_not_keep_the_breaker_open() {
    let server = RedisServer::start().unwrap();
    let store = store(&server.url(), FailurePolicy::FailOpen).await;
    let quota = Quota::single(Limit::per_day(100)).unwrap();
    server.pause().unwrap();
    assert_eq!(
        check(&store, &quota).await.unwrap().source(),
        DecisionSource::FailOpen
    );
    assert!(store.breaker_open());
    // After the retry interval the next call probes — and its caller gives
    // up before the answer (a client disconnect drops the future).
    tokio::time::sleep(Duration::from_millis(250)).await;
    let abandoned =
        tokio::time::timeout(Duration::from_millis(20), store.check("k", &quota, 1)).await;
    assert!(
        abandoned.is_err(),
        "the probe answered from a paused server"
    );
    server.resume().unwrap();
    // Someone else probes later, and the breaker closes.
    until_store_decides(&store, &quota).await;
    assert!(!store.breaker_open());
}

/// Puts a real server into a state where it answers writes with an error
/// reply that means "cannot serve now", and back.
enum CannotServe {
    /// `maxmemory` reached under `noeviction`: `OOM …`.
    OutOfMemory,
    /// A replica: `READONLY …`.
    Replica(RedisServer),
    /// A script that does not end: `BUSY …`.
    Busy(std::thread::JoinHandle<Result<cog_testkit::Reply, cog_testkit::Error>>),
    /// Snapshots on, and the last one failed: `MISCONF …`.
    CannotPersist,
    /// A replica whose primary is gone, told not to serve stale data:
    /// `MASTERDOWN …`.
    PrimaryDown,
}

impl CannotServe {
    fn out_of_memory(server: &RedisServer) -> Self {
        server
            .command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
            .unwrap();
        // Past any maxmemory set below: Redis checks memory before a
        // script, not inside it.
        server
            .command(&[
                "EVAL",
                "for i = 1, 20000 do redis.call('SET', 'fill' .. i, string.rep('x', 100)) end return 1",
                "0",
            ])
            .unwrap();
        server
            .command(&["CONFIG", "SET", "maxmemory", "1mb"])
            .unwrap();
        CannotServe::OutOfMemory
    }

    /// `server` becomes a replica of a fresh primary.
    fn replica(server: &RedisServer) -> Self {
        let primary = RedisServer::start().unwrap();
        server
            .command(&["REPLICAOF", "127.0.0.1", &primary.port().to_string()])
            .unwrap();
        CannotServe::Replica(primary)
    }

    fn busy(server: &RedisServer) -> Self {
        server
            .command(&["CONFIG", "SET", "busy-reply-threshold", "10"])
            .unwrap();
        // Its reply comes only when the script is killed.
        let spinner = server.spawn_command(&["EVAL", "while true do end", "0"]);
        std::thread::sleep(Duration::from_millis(100));
        CannotServe::Busy(spinner)
    }

    /// Needs a server started in a directory it cannot write (see
    /// [`server_for`]).
    fn cannot_persist(server: &RedisServer) -> Self {
        server
            .command(&["CONFIG", "SET", "save", "3600 1"])
            .unwrap();
        assert!(matches!(
            server.command(&["BGSAVE"]).unwrap(),
            cog_testkit::Reply::Status(_)
        ));
        // The fork fails to write: wait for the failed status.
        for _ in 0..100 {
            let info = server
                .command(&["INFO", "persistence"])
                .unwrap()
                .as_text()
                .unwrap_or_default();
            if info.contains("rdb_last_bgsave_status:err") {
                return CannotServe::CannotPersist;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("BGSAVE did not fail");
    }

    fn primary_down(server: &RedisServer) -> Self {
        server
            .command(&["CONFIG", "SET", "replica-serve-stale-data", "no"])
            .unwrap();
        // A primary that is not there: the link never comes up.
        let gone = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        server
            .command(&["REPLICAOF", "127.0.0.1", &gone.to_string()])
            .unwrap();
        CannotServe::PrimaryDown
    }

    fn end(self, server: &RedisServer) {
        match self {
            CannotServe::CannotPersist => {
                server.command(&["CONFIG", "SET", "save", ""]).unwrap();
            }
            CannotServe::PrimaryDown => {
                server.command(&["REPLICAOF", "NO", "ONE"]).unwrap();
            }
            CannotServe::OutOfMemory => {
                server
                    .command(&["CONFIG", "SET", "maxmemory", "0"])
                    .unwrap();
            }
            CannotServe::Replica(_primary) => {
                server.command(&["REPLICAOF", "NO", "ONE"]).unwrap();
            }
            CannotServe::Busy(spinner) => {
                server.command(&["SCRIPT", "KILL"]).unwrap();
                let _ = spinner.join().unwrap();
            }
        }
    }
}

/// A server for putting into state `code`: MISCONF needs one whose
/// snapshots cannot be written (its working directory is `/proc`).
fn server_for(code: &str) -> RedisServer {
    match code {
        "MISCONF" => RedisServer::start_with_args(&["--dir", "/proc"]).unwrap(),
        _ => RedisServer::start().unwrap(),
    }
}

/// Error replies that mean "cannot serve now" go through the failure
/// policy and open the breaker — never a protocol error (a 500), never a
/// success for the breaker — under every policy, for every state a real
/// server can be put into here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cannot_serve_replies_follow_the_failure_policy() {
    type Enter = fn(&RedisServer) -> CannotServe;
    let states: [(&str, Enter); 5] = [
        ("OOM", CannotServe::out_of_memory),
        ("READONLY", CannotServe::replica),
        ("BUSY", CannotServe::busy),
        ("MISCONF", CannotServe::cannot_persist),
        ("MASTERDOWN", CannotServe::primary_down),
    ];
    for (code, enter) in states {
        for policy in [
            FailurePolicy::FailOpen,
            FailurePolicy::FailClosed,
            FailurePolicy::Local { instances: 2 },
        ] {
            let server = server_for(code);
            let store = store(&server.url(), policy)
                .await
                .retry_interval(Duration::from_secs(60));
            let quota = Quota::single(Limit::per_day(4)).unwrap();
            assert_eq!(
                check(&store, &quota).await.unwrap().source(),
                DecisionSource::Store
            );
            let state = enter(&server);
            let first = check(&store, &quota).await;
            match policy {
                FailurePolicy::FailOpen => {
                    let d = first.unwrap();
                    assert!(d.is_allowed(), "{code} {policy:?}");
                    assert_eq!(d.source(), DecisionSource::FailOpen, "{code}");
                }
                FailurePolicy::FailClosed => {
                    let err = first.unwrap_err();
                    assert!(
                        matches!(err, StoreError::Unavailable { .. }),
                        "{code}: {err}"
                    );
                    // The reply is the cause, reachable through `source()`.
                    let mut chain = err.to_string();
                    let mut next = std::error::Error::source(&err);
                    while let Some(cause) = next {
                        chain.push_str(&format!(": {cause}"));
                        next = cause.source();
                    }
                    assert!(chain.contains(code), "{code}: {chain}");
                }
                _ => {
                    let d = first.unwrap();
                    assert_eq!(d.source(), DecisionSource::Fallback, "{code}");
                }
            }
            assert!(store.breaker_open(), "{code} {policy:?}: breaker closed");
            state.end(&server);
        }
    }
}

#[tokio::test]
async fn connecting_to_nothing_is_unavailable_with_the_clients_error_as_cause() {
    for url in ["not a url", "redis://127.0.0.1:1"] {
        let err = cog_ratelimit::store::connect(url).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Unavailable { .. }),
            "{url}: {err:?}"
        );
        assert!(std::error::Error::source(&err).is_some(), "{url}");
    }
}

/// Scripts the server has run by `EVAL` (the store's fallback when Redis
/// does not know a script).
fn evals(server: &RedisServer) -> u64 {
    let Ok(cog_testkit::Reply::Bulk(Some(info))) = server.command(&["INFO", "commandstats"]) else {
        panic!("INFO commandstats");
    };
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_eval:calls="))
        .and_then(|l| l.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// A decision is never silently repeated: an error reply other than
/// `NOSCRIPT` is not answered by sending the script again.
#[tokio::test]
async fn an_error_reply_does_not_send_the_script_again() {
    for quota in [
        Quota::single(Limit::per_day(4)).unwrap(),
        Quota::new([Limit::per_day(4), Limit::per_minute(3)]).unwrap(),
    ] {
        let server = RedisServer::start().unwrap();
        let store = store(&server.url(), FailurePolicy::FailClosed).await;
        // The first decision loads the script (one EVAL after NOSCRIPT).
        check(&store, &quota).await.unwrap();
        // (Filling the memory runs an EVAL of its own.)
        let state = CannotServe::out_of_memory(&server);
        let before = evals(&server);
        assert!(check(&store, &quota).await.is_err());
        assert_eq!(evals(&server), before);
        state.end(&server);
    }
}

/// Behind Sentinel, a failover: decisions go on on the new master within
/// a few seconds (fail-closed meanwhile: an error, never a wrong answer),
/// with the state written before it — a subject's limit is admitted
/// exactly once across the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_keeps_the_state_and_decides_again() {
    let sentinel = cog_testkit::RedisSentinel::start().unwrap();
    let store = store(&sentinel.url(), FailurePolicy::FailClosed).await;
    let quota = Quota::single(Limit::per_day(10)).unwrap();
    let mut admitted = 0;
    for _ in 0..4 {
        admitted += usize::from(check(&store, &quota).await.unwrap().is_allowed());
    }
    assert_eq!(admitted, 4);
    let sentinel = sentinel.failed_over().await;
    let started = std::time::Instant::now();
    let mut errors = 0;
    let mut denied = 0;
    while denied == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no decision from the new master: {errors} errors, {admitted} admitted"
        );
        match check(&store, &quota).await {
            Ok(d) if d.is_allowed() => admitted += 1,
            Ok(d) => {
                assert_eq!(d.source(), DecisionSource::Store);
                denied += 1;
            }
            Err(_) => {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert_eq!(admitted, 10, "the limit, once, across the failover");
    eprintln!(
        "decided again {:?} after the failover ({errors} errors)",
        started.elapsed()
    );
    drop(sentinel);
}
