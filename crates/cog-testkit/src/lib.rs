//! Test support for cog: real infrastructure, started on demand.
//!
//! cog's tests never mock a protocol. This crate starts the real thing on a
//! free loopback port and tears it down on drop:
//!
//! - [`RedisServer`]: one `redis-server` with persistence off, which a test
//!   can [kill](RedisServer::kill), [pause](RedisServer::pause) (`SIGSTOP`),
//!   [resume](RedisServer::resume) and [restart](RedisServer::restart) on
//!   the same port.
//! - [`RedisSentinel`]: a master, its replica and a Sentinel; `failover()`
//!   swaps them as a real failover does.
//! - [`RedisCluster`]: a Redis Cluster of N masters (3 by default), slots
//!   spread evenly, ready once `cluster_state:ok`.
//! - [`Proxy`]: a TCP proxy between a client and a server that can add
//!   latency, or cut every connection (and refuse new ones) until restored.
//! - [`Regions`]: several redis-servers as regions, every link between two
//!   of them through a `Proxy` (latency, cuts) — partitions on one machine.
//! - [`MetricsCapture`]: a real OpenTelemetry SDK meter provider whose
//!   metrics a test can read back.
//! - [`placement`]: tenant placements the placed stores' tests share.
//! - [`OtlpReceiver`]: a real OTLP trace receiver (gRPC and HTTP/protobuf,
//!   on the official `opentelemetry-proto` types) that keeps every span it
//!   receives.
//!
//! If `redis-server` is not installed, starting one fails with
//! [`Error::NotInstalled`], whose message says how to install it.
//!
//! # Example
//!
//! ```no_run
//! # fn main() -> Result<(), cog_testkit::Error> {
//! let redis = cog_testkit::RedisServer::start()?;
//! println!("redis at {}", redis.url());
//! redis.pause()?; // SIGSTOP: connections hang, nothing answers
//! redis.resume()?;
//! # Ok(()) }
//! ```

mod client;
mod metrics;
pub mod openmetrics;
mod otlp;
pub mod peer;
pub mod placement;
mod proxy;
mod redis;
mod regions;
mod resp;
pub mod service;
mod spans;

pub use client::fred_client;
pub use metrics::MetricsCapture;
pub use otlp::{OtlpReceiver, ReceivedSpan, Transport};
pub use proxy::Proxy;
pub use redis::{RedisCluster, RedisSentinel, RedisServer};
pub use regions::Regions;
pub use resp::Reply;
pub use spans::{SpanCapture, attr as span_attr, children as span_children, named as span_named};

/// What can go wrong starting or driving a test server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program the test needs is not on `PATH`.
    #[error(
        "`{program}` was not found on PATH. Install it (Debian/Ubuntu: `sudo apt-get install -y redis-server redis-tools`, macOS: `brew install redis`) or run `scripts/test`, which installs it."
    )]
    NotInstalled {
        /// The missing program.
        program: &'static str,
    },
    /// The server process started but never answered.
    #[error("{what} did not become ready within {secs}s: {detail}")]
    NotReady {
        /// What was being started.
        what: String,
        /// How long we waited.
        secs: u64,
        /// The last thing we saw (log tail or error).
        detail: String,
    },
    /// An I/O error talking to a process or socket.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Sending a signal to the server failed.
    #[error("signal {signal} to pid {pid} failed: {source}")]
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// The target process.
        pid: u32,
        /// The errno.
        source: nix::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// The README's examples, compiled as doctests so that they keep up
/// with the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
