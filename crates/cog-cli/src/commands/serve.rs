//! `cog serve`: the admin HTTP API over the store, standalone, until
//! SIGTERM or Ctrl-C (requests in flight are answered first).

use std::sync::Arc;

use axum::Router;
use axum::extract::Extension;
use axum::routing::get;
use clap::Args;
use cog_control::admin::{Admin, PluginCheck};
use cog_control::auth::AuthenticateLayer;
use cog_control::{Directory, TenantContext};
use cog_ratelimit::RateLimitLayer;
use cog_ratelimit::store::{MemoryStore, RedisStore, Store};

use super::Ctx;
use super::plugin::run;
use crate::exit::{Exit, Result};

/// Arguments of `cog serve`.
#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: std::net::SocketAddr,
    /// The limiter whose state `GET /v1/tenants/{id}/usage` reads: the
    /// services' Redis (default: the store, when it is Redis; else this
    /// process's own, which only `--probe` counts in).
    #[arg(long, env = "COG_LIMITER")]
    limiter: Option<String>,
    /// Also serve `GET /probe`: authenticated by an API key and rate
    /// limited by its tenant's plan, as a service with cog's layers
    /// would — for checking keys and plans end to end.
    #[arg(long)]
    probe: bool,
}

/// Uploads are loaded in the sandbox under each plan's limits, as
/// `cog plugin install` loads them.
fn sandbox_check() -> PluginCheck {
    Arc::new(|name, lang, bytes, limits| {
        run::check(name, lang, bytes, limits).map_err(|e| match e {
            Exit::Plugin(m) | Exit::Usage(m) | Exit::State(m) | Exit::Store(m) => m,
            other => format!("{other:?}"),
        })
    })
}

pub(crate) async fn exec(args: &ServeArgs, ctx: &Ctx<'_>) -> Result {
    ctx.backend.control("serve")?;
    let url = args
        .limiter
        .clone()
        .or_else(|| ctx.store.starts_with("redis").then(|| ctx.store.to_owned()));
    match url {
        Some(url) => {
            let client = cog_ratelimit::store::connect(&url).await.map_err(|e| {
                Exit::Store(format!("limiter {}: {e}", cog_core::text::redact_url(&url)))
            })?;
            serve(args, ctx, RedisStore::new(client)).await
        }
        None => serve(args, ctx, MemoryStore::new()).await,
    }
}

async fn serve<St: Store + Clone>(args: &ServeArgs, ctx: &Ctx<'_>, limiter: St) -> Result {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Exit::Usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Exit::Usage(format!("cannot listen: {e}")))?;
    let control = ctx.backend.control("serve")?;
    let mut router = Admin::new(control.clone())
        .check_plugins(sandbox_check())
        .with_limiter(limiter.clone())
        .router();
    if args.probe {
        let directory = Directory::start(control.store().clone()).await?;
        router = router.merge(probe(limiter, &directory));
    }
    // The address on stderr, the one line a supervisor (or a test) reads.
    // The store's password (if any) stays out of it: this line is logged.
    eprintln!(
        "cog admin API listening on http://{addr} (store {})",
        cog_core::text::redact_url(ctx.store)
    );
    // Stops on SIGTERM as on Ctrl-C, answering the requests in flight (a
    // SIGTERM used to end the process mid-request); a connection quiet for
    // 30 s with nothing in flight is closed.
    cog_core::serve::Serve::new()
        .run(listener, router, cog_core::serve::stop_signal())
        .await
        .map_err(|e| Exit::Store(format!("serving: {e}")))?;
    Ok(())
}

/// `GET /probe` behind [`AuthenticateLayer`] and [`RateLimitLayer`]: the
/// tenant the key belongs to, or the 401 / 403 / 429 a service answers.
fn probe<St: Store + Clone>(limiter: St, directory: &Directory) -> Router {
    async fn answer(Extension(t): Extension<Arc<TenantContext>>) -> axum::Json<serde_json::Value> {
        axum::Json(serde_json::json!({"tenant": &*t.id, "plan": &*t.plan}))
    }
    Router::new()
        .route("/probe", get(answer))
        .layer(
            RateLimitLayer::new(limiter, Directory::tenant_key(), directory.clone())
                .cost_with(Directory::request_cost()),
        )
        .layer(AuthenticateLayer::new(directory.clone()))
}
