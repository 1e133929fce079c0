//! Runs the demo until SIGTERM or SIGINT, then stops like an orchestrator
//! expects: stop accepting, drain the requests in flight (for at most
//! `COG_DRAIN_MS`), flush spans and metrics, exit.

#![allow(dead_code, unreachable_pub)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header;
use axum::routing::get;

use crate::{app, metrics};

/// Builds the demo from the environment and serves it until a stop signal.
pub async fn run() -> Result<(), app::Error> {
    let listen: SocketAddr = std::env::var("COG_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:8080".into())
        .parse()?;
    let config = app::Config::from_env()?;
    let tracing = cog_trace::init()?;
    let metrics = Arc::new(metrics::Metrics::install());
    let demo = Arc::new(app::build(&config).await?);
    metrics.observe(&demo.counters);

    let scrape = {
        let metrics = metrics.clone();
        get(move || {
            let metrics = metrics.clone();
            async move {
                // Collecting blocks briefly: off the async workers.
                let body = tokio::task::spawn_blocking(move || metrics.render())
                    .await
                    .unwrap_or_default();
                ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body)
            }
        })
    };
    let router = demo.router.clone().route("/metrics", scrape);

    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    announce(&config, &demo, addr);

    // A deadline for request heads (30 s) and a bounded drain: a client
    // that sends half a request cannot hold a connection, or the stop,
    // for ever (`axum::serve` has neither).
    cog_core::serve::Serve::new()
        .drain(config.drain)
        .run(listener, router, cog_core::serve::stop_signal())
        .await?;
    // Every request has been answered (or the drain ran out): their spans
    // have ended.
    // Not `eprintln!`: a stderr nobody reads any more must not turn a
    // clean stop into a panic before the flush.
    let _ = writeln!(std::io::stderr(), "stopped: flushing spans and metrics");
    tracing.shutdown_async().await;
    let flushed = metrics.clone();
    let _ = tokio::task::spawn_blocking(move || flushed.shutdown()).await;
    Ok(())
}

/// The first line the demo prints: where it listens and where its state
/// is. Logged, so a URL's password stays out.
fn listening(config: &app::Config, addr: SocketAddr) -> String {
    match &config.redis_url {
        Some(url) => format!(
            "cog demo on http://{addr} — shared state in Redis at {}",
            cog_core::text::redact_url(url)
        ),
        None => format!(
            "cog demo on http://{addr} — in-memory backends, control plane in {} (set COG_REDIS_URL to share through Redis)",
            cog_core::text::redact_url(&config.store)
        ),
    }
}

fn announce(config: &app::Config, demo: &app::Demo, addr: SocketAddr) {
    eprintln!("{}", listening(config, addr));
    match &demo.demo_key {
        Some(key) => {
            eprintln!(
                "created plans free and pro, and tenant `demo` on free; its API key (shown once):"
            );
            #[allow(clippy::print_stdout)]
            {
                println!("{key}");
            }
            eprintln!(
                "\ntry:\n  curl -si -H 'Authorization: Bearer {key}' http://{addr}/v1/items/42"
            );
        }
        None => eprintln!(
            "existing control plane: make a key with `cargo run -p cog-cli -- --store {} key create --tenant demo`",
            config
                .redis_url
                .clone()
                .unwrap_or_else(|| config.store.clone())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_does_not_show_a_password() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let config = app::Config {
            redis_url: Some("redis://:s3cret@redis.internal:6379".into()),
            ..app::Config::default()
        };
        let line = listening(&config, addr);
        assert!(line.contains("redis.internal:6379"), "{line}");
        assert!(!line.contains("s3cret"), "{line}");
    }
}
