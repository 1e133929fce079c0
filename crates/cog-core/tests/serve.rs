//! `serve::Serve` over real TCP: the head deadline, a stop that answers
//! requests in flight and does not wait for ever on a half-sent one, and
//! the peer address handlers see.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use cog_core::serve::Serve;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn router() -> Router {
    Router::new()
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow"
            }),
        )
}

/// Starts `serve` on a free port; the sender stops it; the handle ends
/// when `run` returns.
async fn start(
    serve: Serve,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Instant>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        serve
            .run(listener, router(), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        Instant::now()
    });
    (addr, stop, task)
}

/// `took` is `bound`, or a little more (ticks, scheduling): never less
/// (but for timer rounding).
fn assert_at(took: Duration, bound: Duration, what: &str) {
    assert!(
        took + Duration::from_millis(50) >= bound && took < bound + Duration::from_millis(700),
        "{what} after {took:?}, expected {bound:?}"
    );
}

/// Reads until the peer closes (or `bound` passes: then `None`).
async fn read_to_close(conn: &mut TcpStream, bound: Duration) -> Option<String> {
    let mut all = Vec::new();
    let read = tokio::time::timeout(bound, conn.read_to_end(&mut all)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&all).into_owned()),
        Err(_) => None,
    }
}

/// Sends one whole request and reads its answer (`Connection: close`).
async fn get_path(addr: SocketAddr, path: &str) -> (SocketAddr, String) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let local = conn.local_addr().unwrap();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut conn, Duration::from_secs(10))
        .await
        .expect("an answer");
    (local, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_the_peer_and_connections_are_kept_alive() {
    let (addr, stop, task) = start(Serve::new()).await;
    let (local, answer) = get_path(addr, "/peer").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(&local.to_string()), "{answer}");
    // The body's size goes through to hyper: a length, not chunks.
    let length = format!("content-length: {}\r\n", local.to_string().len());
    assert!(
        answer.contains(&length) && !answer.contains("chunked"),
        "{answer}"
    );
    // Two requests on one connection.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\nGET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let both = read_to_close(&mut conn, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(both.matches("HTTP/1.1 200").count(), 2, "{both}");
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// A client that sends half a request head and waits is closed at the
/// head deadline (300 ms here; 30 s by default), not kept
/// for ever as `axum::serve` keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_head_is_closed_at_the_deadline() {
    let deadline = Duration::from_millis(300);
    let (addr, stop, task) = start(Serve::new().head_timeout(deadline)).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let sent = Instant::now();
    conn.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let closed = read_to_close(&mut conn, Duration::from_secs(5)).await;
    let after = sent.elapsed();
    assert!(closed.is_some(), "still open after 5 s");
    assert_at(after, deadline, "closed");
    // The server itself goes on.
    assert!(get_path(addr, "/peer").await.1.starts_with("HTTP/1.1 200"));
    // A kept-alive connection left idle after an answer is closed at the
    // same deadline.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let answered = Instant::now();
    assert_eq!(
        read_to_close(&mut idle, Duration::from_secs(5))
            .await
            .as_deref(),
        Some("")
    );
    let after = answered.elapsed();
    assert_at(after, deadline, "an idle connection closed");
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// A head trickled in a byte at a time, each well within the deadline,
/// is closed at the deadline all the same: what counts is a request, not
/// bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_in_is_closed_at_the_deadline() {
    let deadline = Duration::from_millis(300);
    let (addr, stop, task) = start(Serve::new().head_timeout(deadline)).await;
    let conn = TcpStream::connect(addr).await.unwrap();
    let (mut rx, mut tx) = conn.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        tx.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            if tx.write_all(b"X").await.is_err() {
                break;
            }
        }
    });
    let mut all = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), rx.read_to_end(&mut all)).await;
    let after = started.elapsed();
    assert!(closed.is_ok(), "still open after 5 s of trickling");
    assert_at(after, deadline, "closed");
    trickle.abort();
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// A request slower than the deadline is not cut: the deadline is for
/// a connection with nothing in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_slower_than_the_deadline_is_answered() {
    let (addr, stop, task) = start(Serve::new().head_timeout(Duration::from_millis(100))).await;
    let (_, answer) = get_path(addr, "/slow").await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("slow"),
        "{answer}"
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// On stop: no new connections; a request in flight is answered; a
/// half-sent head (its deadline far off) does not hold the stop longer
/// than the drain time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_answers_requests_in_flight_and_waits_at_most_the_drain() {
    let drain = Duration::from_millis(800);
    let serve = Serve::new()
        .head_timeout(Duration::from_secs(60))
        .drain(drain);
    let (addr, stop, task) = start(serve).await;

    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let in_flight = tokio::spawn(get_path(addr, "/slow"));
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stopped_at = Instant::now();
    stop.send(()).unwrap();
    let (_, answer) = in_flight.await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("slow"),
        "{answer}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a connection accepted after the stop"
    );

    let returned = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run did not return within 10 s: a half-sent head held the stop")
        .unwrap();
    let took = returned - stopped_at;
    assert_at(took, drain, "run returned after the stop");
}

/// With nothing in flight, a stop returns at once (idle kept-alive
/// connections are closed, not waited for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stop_returns_at_once() {
    let (addr, stop, task) = start(Serve::new()).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let stopped_at = Instant::now();
    stop.send(()).unwrap();
    let returned = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    // Far below the 30 s drain: nothing was waited for.
    assert!(
        returned - stopped_at < Duration::from_secs(5),
        "{:?}",
        returned - stopped_at
    );
    assert_eq!(
        read_to_close(&mut idle, Duration::from_secs(2))
            .await
            .as_deref(),
        Some("")
    );
}
