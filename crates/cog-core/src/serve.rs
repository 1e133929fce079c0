//! Serving an axum router over TCP with the two limits a server facing
//! clients needs and `axum::serve` leaves out:
//!
//! - **A deadline for a request's head** (default 30 s, hyper's own
//!   default, which `axum::serve` does not turn on: it sets no timer).
//!   Without it a client that sends half a request line and waits holds a
//!   connection for ever — a thousand of them hold a thousand file
//!   descriptors — and, worse, holds a graceful stop for ever: hyper
//!   finishes a request it has begun reading before it closes.
//! - **A bounded drain.** On the stop signal the listener closes, idle
//!   connections close, requests in flight are answered; connections
//!   still open after the drain time (default 30 s) are left behind and
//!   [`Serve::run`] returns, so that the process can flush and exit
//!   before an orchestrator's kill.
//!
//! Handlers see the peer as axum's `ConnectInfo<SocketAddr>`, as with
//! `into_make_service_with_connect_info::<SocketAddr>()`. HTTP/1.1 with
//! upgrades.
//!
//! ```no_run
//! # async fn example(router: axum::Router) -> std::io::Result<()> {
//! use std::time::Duration;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! cog_core::serve::Serve::new()
//!     .head_timeout(Duration::from_secs(10))
//!     .run(listener, router, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How [`run`](Self::run) serves: the head deadline and the drain time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serve {
    head_timeout: Duration,
    drain: Duration,
}

impl Default for Serve {
    fn default() -> Self {
        Serve {
            head_timeout: Duration::from_secs(30),
            drain: Duration::from_secs(30),
        }
    }
}

impl Serve {
    /// Head deadline 30 s, drain 30 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a client has to send a request's head (request line and
    /// fields), from its first byte — or, on a kept-alive connection,
    /// from the end of the previous answer: an idle connection is closed
    /// after this long too. Default 30 s.
    pub fn head_timeout(mut self, timeout: Duration) -> Self {
        self.head_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long a stop waits for requests in flight (default 30 s).
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Serves `router` on `listener` until `shutdown` completes, then
    /// stops accepting, lets requests in flight finish for at most the
    /// drain time, and returns.
    ///
    /// # Errors
    /// None today (accept errors — a peer gone before it was accepted,
    /// file descriptors exhausted — are logged and retried); the `Result`
    /// leaves room.
    pub async fn run<F>(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: F,
    ) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send,
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        // Every connection holds a receiver: the sender's `closed()` is
        // "every connection is gone".
        let (open_tx, open_rx) = watch::channel(());
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        accept_failed(&e).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let service = TowerToHyperService::new(tower::service_fn({
                let router = router.clone();
                move |mut req: http::Request<Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    tower::ServiceExt::oneshot(router.clone(), req)
                }
            }));
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(self.head_timeout);
            let (mut stop, open) = (stop_rx.clone(), open_rx.clone());
            tokio::spawn(async move {
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                let mut conn = std::pin::pin!(conn);
                let stopping = async move {
                    // The guard `wait_for` returns is not `Send`: dropped here.
                    let _ = stop.wait_for(|stopping| *stopping).await.map(drop);
                };
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = stopping => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
                drop(open);
            });
        }
        drop(listener);
        let _ = stop_tx.send(true);
        drop(open_rx);
        if tokio::time::timeout(self.drain, open_tx.closed())
            .await
            .is_err()
        {
            tracing::warn!(
                target: "cog",
                open = open_tx.receiver_count(),
                drain = ?self.drain,
                "connections still open after the drain time: stopping without them"
            );
        }
        Ok(())
    }
}

/// After a failed `accept`: a peer that left before it was accepted is
/// nothing; anything else (out of file descriptors, say) is logged, and
/// the loop waits a moment instead of spinning on it.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::ConnectionRefused
    ) {
        return;
    }
    tracing::warn!(target: "cog", error = %e, "accepting a connection failed; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Completes on SIGTERM (systemd, Docker, Kubernetes) or SIGINT (Ctrl-C),
/// saying which on stderr — the stop signal a service under an
/// orchestrator needs (`tokio::signal::ctrl_c` alone misses SIGTERM, whose
/// default action kills the process mid-request).
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!(target: "cog", "no SIGTERM/SIGINT handler could be installed: stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        said(name);
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        said("Ctrl-C");
    }
}

/// One line on stderr; a stderr nobody reads any more (a supervisor that
/// kept only the first line) is no reason to fail the stop — `eprintln!`
/// would panic on the broken pipe.
fn said(signal: &str) {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "{signal}: no new connections, draining requests in flight"
    );
}
