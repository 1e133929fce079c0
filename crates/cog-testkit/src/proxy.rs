//! A fault-injecting TCP proxy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;

/// A TCP proxy on a free loopback port that forwards to one upstream
/// address, and can add latency or cut connections.
///
/// - [`set_latency`](Proxy::set_latency): every chunk is held for the given
///   time in each direction, so a request/response round trip gains twice
///   the latency.
/// - [`cut`](Proxy::cut): closes every open connection and refuses new ones
///   (accepted, then closed at once) until [`restore`](Proxy::restore).
///
/// Needs a running tokio runtime; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    latency_us: AtomicU64,
    refusing: AtomicBool,
    /// Bumped on every cut; connection tasks end when it changes.
    generation: watch::Sender<u64>,
}

impl Proxy {
    /// Starts a proxy to `upstream` (e.g. a [`RedisServer::addr`](crate::RedisServer::addr)).
    pub async fn start(upstream: &str) -> Result<Self, Error> {
        let upstream: SocketAddr = upstream.parse().map_err(|e| Error::Io {
            context: format!("parsing upstream address {upstream:?}"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::io("binding the proxy"))?;
        let addr = listener.local_addr().map_err(Error::io("proxy address"))?;
        let shared = Arc::new(Shared {
            upstream,
            latency_us: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            generation: watch::channel(0).0,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Proxy {
            addr,
            shared,
            accept,
        })
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://<proxy addr>`, for pointing a Redis client through the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Holds every chunk for `latency` in each direction from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_us
            .store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    /// Closes every open connection and refuses new ones until
    /// [`restore`](Self::restore).
    pub fn cut(&self) {
        self.shared.refusing.store(true, Ordering::SeqCst);
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Accepts and forwards connections again after a [`cut`](Self::cut).
    pub fn restore(&self) {
        self.shared.refusing.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.generation.send_modify(|g| *g += 1);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        // Subscribe first, then look: a cut sets `refusing` before it
        // bumps the generation, so this connection either sees `refusing`
        // now or the bump later — it cannot slip between the two.
        let mut generation = shared.generation.subscribe();
        let born = *generation.borrow_and_update();
        if shared.refusing.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let server = tokio::select! {
                server = TcpStream::connect(shared.upstream) => server,
                _ = generation.changed() => return,
            };
            let Ok(server) = server else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::select! {
                _ = pump(cr, sw, &shared, born) => {}
                _ = pump(sr, cw, &shared, born) => {}
                _ = generation.changed() => {}
            }
        });
    }
}

/// Forwards `from` to `to` while the connection's generation (`born`)
/// lasts: a chunk read after a [`Proxy::cut`] returned is dropped even
/// before this task has noticed the cut, so nothing sent after it gets
/// through.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
    born: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let latency = shared.latency_us.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        if *shared.generation.borrow() != born || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
