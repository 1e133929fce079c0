//! An axum application served as production serves it — with each
//! connection's peer address (`ConnectInfo<SocketAddr>`) — and requests to
//! it from a chosen client address, for code that tells clients apart.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `app` on a free port of 127.0.0.1 with connect info, in the
/// background (for the rest of the runtime's life); its address.
pub async fn serve_with_peers(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port on 127.0.0.1");
    let addr = listener.local_addr().expect("a bound listener's address");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    addr
}

/// `GET path` to `server` over a new connection from `from` (any
/// 127.0.0.0/8 address is this machine's): the answer's status code.
///
/// # Panics
/// When the connection or the answer fails: a test has nothing to do then.
pub async fn get_from(from: &str, server: SocketAddr, path: &str) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(format!("{from}:0").parse().expect("an IPv4 address"))
        .expect("a loopback address to send from");
    let mut stream = socket.connect(server).await.expect("the server");
    let request = format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("the request sent");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .expect("the answer read");
    std::str::from_utf8(answer.get(9..12).expect("a status line"))
        .ok()
        .and_then(|code| code.parse().ok())
        .expect("a status code")
}
