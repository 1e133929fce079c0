//! The test kit's own tests: the servers it starts are real and its faults
//! are real.

use std::time::Duration;

use cog_testkit::{Proxy, RedisCluster, RedisServer, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn set_get(server: &RedisServer) {
    assert_eq!(
        server.command(&["SET", "k", "v"]).unwrap(),
        Reply::Status("OK".into())
    );
    assert_eq!(
        server.command(&["GET", "k"]).unwrap(),
        Reply::Bulk(Some(b"v".to_vec()))
    );
}

#[test]
fn server_starts_kills_and_restarts_empty() {
    let server = RedisServer::start().unwrap();
    set_get(&server);
    // Persistence is off.
    let save = server.command(&["CONFIG", "GET", "save"]).unwrap();
    assert_eq!(
        save,
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"save".to_vec())),
            Reply::Bulk(Some(Vec::new()))
        ]))
    );
    server.kill().unwrap();
    assert!(server.command(&["PING"]).is_err(), "killed server answered");
    server.restart().unwrap();
    assert_eq!(
        server.command(&["GET", "k"]).unwrap(),
        Reply::Bulk(None),
        "data survived a restart with persistence off"
    );
}

#[test]
fn paused_server_does_not_answer_until_resumed() {
    let server = RedisServer::start().unwrap();
    server.pause().unwrap();
    let stream = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    use std::io::{Read, Write};
    (&stream).write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 16];
    let err = (&stream).read(&mut buf).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err:?}"
    );
    server.resume().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = (&stream).read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"+PONG\r\n");
}

/// The Sentinel names the master; a failover swaps master and replica,
/// and what was written before is on the new master.
#[test]
fn sentinel_fails_over_without_losing_writes() {
    let s = cog_testkit::RedisSentinel::start().unwrap();
    let before = s.master().unwrap().port();
    set_get(s.master().unwrap());
    s.failover().unwrap();
    let master = s.master().unwrap();
    assert_ne!(master.port(), before);
    assert_eq!(
        master.command(&["GET", "k"]).unwrap().as_text().as_deref(),
        Some("v")
    );
    assert_eq!(s.replica().unwrap().port(), before);
    assert!(s.url().starts_with("redis-sentinel://127.0.0.1:"));
}

#[test]
fn cluster_has_three_masters_covering_all_slots() {
    let cluster = RedisCluster::start().unwrap();
    assert_eq!(cluster.nodes().len(), 3);
    let info = cluster.nodes()[1]
        .command(&["CLUSTER", "INFO"])
        .unwrap()
        .as_text()
        .unwrap();
    assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
    assert!(info.contains("cluster_size:3"), "{info}");
    // A key lands on exactly one node; the others redirect.
    let answers: Vec<Reply> = cluster
        .nodes()
        .iter()
        .map(|n| n.command(&["SET", "{tag}x", "1"]).unwrap())
        .collect();
    let oks = answers
        .iter()
        .filter(|r| **r == Reply::Status("OK".into()))
        .count();
    assert_eq!(oks, 1, "{answers:?}");
    assert!(cluster.url().starts_with("redis-cluster://127.0.0.1:"));
}

async fn ping_through(proxy: &Proxy) -> std::io::Result<Vec<u8>> {
    let mut conn = tokio::net::TcpStream::connect(proxy.addr()).await?;
    conn.write_all(b"PING\r\n").await?;
    let mut buf = vec![0u8; 7];
    conn.read_exact(&mut buf).await?;
    Ok(buf)
}

#[tokio::test]
async fn proxy_forwards_cuts_and_restores() {
    let server = RedisServer::start().unwrap();
    let proxy = Proxy::start(&server.addr()).await.unwrap();
    assert_eq!(ping_through(&proxy).await.unwrap(), b"+PONG\r\n");

    // An open connection is closed by a cut.
    let mut open = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    open.write_all(b"PING\r\n").await.unwrap();
    let mut buf = [0u8; 7];
    open.read_exact(&mut buf).await.unwrap();
    proxy.cut();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut rest))
        .await
        .expect("cut connection stayed open");
    assert!(read.is_err() || rest.is_empty());
    assert!(ping_through(&proxy).await.is_err(), "cut proxy forwarded");

    proxy.restore();
    assert_eq!(ping_through(&proxy).await.unwrap(), b"+PONG\r\n");
}

#[tokio::test(start_paused = true)]
async fn proxy_latency_holds_each_chunk() {
    let server = RedisServer::start().unwrap();
    let proxy = Proxy::start(&server.addr()).await.unwrap();
    proxy.set_latency(Duration::from_secs(3600));
    // With paused time the reply cannot arrive before an hour of (virtual)
    // latency in each direction has passed.
    let start = tokio::time::Instant::now();
    let reply = ping_through(&proxy).await.unwrap();
    assert_eq!(reply, b"+PONG\r\n");
    assert!(start.elapsed() >= Duration::from_secs(7200));
}
