//! `cog serve`: the admin HTTP API over the store, standalone.

use clap::Args;
use cog_control::admin::Admin;

use super::Ctx;
use crate::exit::{Exit, Result};

/// Arguments of `cog serve`.
#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: std::net::SocketAddr,
}

pub(crate) async fn exec(args: &ServeArgs, ctx: &Ctx<'_>) -> Result {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Exit::Usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Exit::Usage(format!("cannot listen: {e}")))?;
    let router = Admin::new(ctx.control.clone()).router();
    // The address on stderr, the one line a supervisor (or a test) reads.
    eprintln!(
        "cog admin API listening on http://{addr} (store {})",
        ctx.store
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Exit::Store(format!("serving: {e}")))?;
    Ok(())
}
