//! Serving an axum router over TCP with the two limits a server facing
//! clients needs and `axum::serve` leaves out:
//!
//! - **A deadline for a request's head** (default 30 s; `axum::serve`
//!   sets none). Without it a client that sends half a request line and
//!   waits holds a connection for ever — a thousand of them hold a
//!   thousand file descriptors — and, worse, holds a graceful stop for
//!   ever: hyper finishes a request it has begun reading before it closes.
//!   A connection with nothing in flight and no new request for that long
//!   (idle after an answer, or trickling a head it never finishes) is
//!   closed, checked on a coarse tick of a quarter of it — not with
//!   hyper's `header_read_timeout`, which arms and clears a timer around
//!   every request head (~2 % of the CPU per request at saturation).
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

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
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

    /// How long a connection may go without a request while nothing is
    /// in flight — a client sending a head it does not finish, or idle
    /// after an answer — before it is closed: between this and a quarter
    /// more. Default 30 s.
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
            let quiet = Arc::new(Activity::default());
            let service = TowerToHyperService::new(tower::service_fn({
                let (mut router, quiet) = (router.clone(), quiet.clone());
                move |mut req: http::Request<Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    let busy = Busy::start(&quiet);
                    // `TowerToHyperService` calls a fresh clone of this
                    // closure per request: its router is already that
                    // request's (cloning it again would bump the count the
                    // workers share once more). A router is always ready.
                    let answer = tower::Service::call(&mut router, req);
                    async move {
                        let res = answer.await?;
                        Ok::<_, Infallible>(res.map(|body| Tracked { body, _busy: busy }))
                    }
                }
            }));
            let (mut stop, open) = (stop_rx.clone(), open_rx.clone());
            let head_timeout = self.head_timeout;
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                let mut conn = std::pin::pin!(conn);
                let mut stopping = std::pin::pin!(async move {
                    // The guard `wait_for` returns is not `Send`: dropped here.
                    let _ = stop.wait_for(|stopping| *stopping).await.map(drop);
                });
                let mut stopped = false;
                let mut deadline = Deadline::new(head_timeout);
                // (The first tick completes at once, and finds it fresh.)
                let mut ticks = tokio::time::interval(deadline.tick);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = conn.as_mut() => break,
                        () = &mut stopping, if !stopped => {
                            stopped = true;
                            conn.as_mut().graceful_shutdown();
                        }
                        now = ticks.tick() => {
                            // Nothing asked of it for too long: dropped
                            // (closed), whatever hyper has half read.
                            if deadline.passed(&quiet, now.into_std()) {
                                break;
                            }
                        }
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

/// What a connection is doing, kept by its requests for its [`Deadline`]:
/// a few uncontended atomic operations per request (the connection's own
/// task runs them) instead of a timer armed and cleared around every
/// request head, as hyper's `header_read_timeout` does (an allocation and
/// two timer-wheel operations per request, ~2 % of the demo's CPU per
/// request at saturation).
#[derive(Default)]
struct Activity {
    /// Requests dispatched so far.
    requests: AtomicU64,
    /// Requests whose answer is not yet fully written.
    in_flight: AtomicU64,
}

/// A request in flight, until its answer's body is dropped (written, or
/// given up).
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.requests.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// An answer's body, holding its request's [`Busy`].
    struct Tracked<B> {
        #[pin]
        body: B,
        _busy: Busy,
    }
}

impl<B: http_body::Body> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The head deadline, checked on a coarse tick (a quarter of it): a
/// connection with nothing in flight that has had no new request for
/// `limit` — idle after an answer, or sending a head it never finishes,
/// however slowly it trickles — is closed, between `limit` and
/// `limit` + a tick after it went quiet.
struct Deadline {
    limit: Duration,
    tick: Duration,
    since: Instant,
    seen: u64,
}

impl Deadline {
    fn new(limit: Duration) -> Self {
        Deadline {
            limit,
            tick: (limit / 4).max(Duration::from_millis(1)),
            since: Instant::now(),
            seen: 0,
        }
    }

    /// Whether the connection has been quiet for the whole limit, `now`.
    fn passed(&mut self, activity: &Activity, now: Instant) -> bool {
        let seen = activity.requests.load(Ordering::Relaxed);
        if seen != self.seen || activity.in_flight.load(Ordering::Relaxed) > 0 {
            self.seen = seen;
            self.since = now;
            return false;
        }
        now.duration_since(self.since) >= self.limit
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
