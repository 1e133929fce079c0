//! A caching reverse proxy in front of any HTTP origin: cog-cache's
//! `HttpCacheLayer` (RFC 9111 shared-cache semantics) over a hyper client.
//!
//! ```sh
//! cargo run --release -p example-cache-proxy -- --upstream http://127.0.0.1:8000 --listen 127.0.0.1:8080
//! cargo run --release -p example-cache-proxy -- --upstream http://127.0.0.1:8000 --redis redis://127.0.0.1:6379
//! ```
//!
//! Every answer carries `Cache-Status` (RFC 9211) saying whether the cache
//! answered (`hit`), revalidated, or forwarded and why. The proxy acts for
//! the origin, as a CDN does: `CDN-Cache-Control` (RFC 9213) speaks to it
//! over `Cache-Control`, which reaches clients untouched.
//! `scripts/cache-conformance` runs the http-tests cache-tests suite
//! against it (`docs/cache-conformance.md`).
#![allow(clippy::print_stdout)]

mod proxy;

use std::net::SocketAddr;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str =
    "usage: cache-proxy --upstream URL [--listen ADDR] [--redis URL] [--max-body BYTES]";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut upstream = None;
    let mut listen: SocketAddr = "127.0.0.1:8080".parse()?;
    let mut redis = None;
    let mut max_body = 1 << 20;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--upstream" => upstream = Some(value()?.parse()?),
            "--listen" => listen = value()?.parse()?,
            "--redis" => redis = Some(value()?),
            "--max-body" => max_body = value()?.parse()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    let upstream = upstream.ok_or(USAGE)?;
    let app = proxy::router(proxy::Settings {
        upstream,
        redis,
        max_body,
    })
    .await?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("cache-proxy on http://{}", listener.local_addr()?);
    // SIGTERM as Ctrl-C, a deadline for request heads, a bounded drain.
    cog_core::serve::Serve::new()
        .run(listener, app, cog_core::serve::stop_signal())
        .await?;
    Ok(())
}
