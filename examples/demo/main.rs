//! The cog demo: every layer stacked on one axum service.
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! Listens on `COG_LISTEN` (default `127.0.0.1:8080`). Without
//! `COG_REDIS_URL`, everything is in memory and the control plane is the
//! file `COG_STORE` (default `./cog-state.json`); with it, limits, cache,
//! plugin data and the control plane are shared through Redis, so several
//! instances behave as one. `OTEL_*` variables configure span export. On
//! an empty store it creates plans `free` (10/s, burst 20) and `pro`
//! (200/s, burst 400) and a tenant `demo`, and prints its API key.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;

mod app;
mod metrics;

#[tokio::main]
async fn main() -> Result<(), app::Error> {
    let listen: SocketAddr = std::env::var("COG_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:8080".into())
        .parse()?;
    let config = app::Config::from_env();
    let tracing = cog_trace::init()?;
    let metrics = Arc::new(metrics::Metrics::install());
    let demo = Arc::new(app::build(&config).await?);

    let scrape = {
        let (metrics, demo) = (metrics.clone(), demo.clone());
        get(move || {
            let (metrics, demo) = (metrics.clone(), demo.clone());
            async move { metrics.render(&demo) }
        })
    };
    let router = demo.router.clone().route("/metrics", scrape);

    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    match &config.redis_url {
        Some(url) => eprintln!("cog demo on http://{addr} — shared state in Redis at {url}"),
        None => eprintln!(
            "cog demo on http://{addr} — in-memory backends, control plane in {} (set COG_REDIS_URL to share through Redis)",
            config.store
        ),
    }
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

    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("shutting down: flushing spans");
    })
    .await?;
    tracing.shutdown();
    Ok(())
}
