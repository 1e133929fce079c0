//! `cog usage`: a tenant's remaining budget, from the limiter's state.

use clap::Args;
use cog_control::admin::LimitUsage;

use super::{Ctx, missing};
use crate::backend::Backend;
use crate::exit::{Exit, Result};
use crate::output::Table;

/// Arguments of `cog usage`.
#[derive(Args, Debug)]
pub(crate) struct UsageArgs {
    /// The tenant.
    tenant: String,
    /// Where the limiter keeps its state (default: the store, when it
    /// is Redis). With `--server`, the server's limiter is read.
    #[arg(long, env = "COG_LIMITER")]
    limiter: Option<String>,
}

pub(crate) async fn exec(args: &UsageArgs, ctx: &Ctx<'_>) -> Result {
    let limits = match ctx.backend {
        Backend::Server(remote) => remote.usage(&args.tenant).await?.limits,
        Backend::Store(control) => from_limiter(args, ctx, control).await?,
    };
    let mut t = Table::new(&["LIMIT", "POLICY", "REMAINING", "RESETS IN"]);
    let mut json = Vec::new();
    for l in limits {
        t.row(vec![
            l.name.clone(),
            l.policy,
            l.remaining.to_string(),
            format!("{:.1}s", l.reset_after_ms as f64 / 1000.0),
        ]);
        json.push(serde_json::json!({
            "name": l.name,
            "remaining": l.remaining,
            "reset_after_ms": l.reset_after_ms,
        }));
    }
    ctx.out.list(t, json);
    Ok(())
}

/// Reads the tenant's standing from the limiter's Redis.
async fn from_limiter(
    args: &UsageArgs,
    ctx: &Ctx<'_>,
    control: &cog_control::Control,
) -> Result<Vec<LimitUsage>> {
    let tenant = args.tenant.as_str();
    let url = args
        .limiter
        .clone()
        .or_else(|| ctx.store.starts_with("redis").then(|| ctx.store.to_owned()))
        .ok_or_else(|| {
            Exit::Usage(
                "usage reads the shared limiter state in Redis: pass --limiter redis://… \
                 (with the file store, limits are counted inside each service process)"
                    .into(),
            )
        })?;
    let directory = cog_control::Directory::start(control.store().clone()).await?;
    let tc = directory
        .tenant(tenant)
        .ok_or_else(|| missing("tenant", tenant))?;
    use cog_core::text::redact_url;
    let client = cog_ratelimit::store::connect(&url)
        .await
        .map_err(|e| Exit::Store(format!("limiter {}: {e}", redact_url(&url))))?;
    let store = cog_ratelimit::store::RedisStore::new(client);
    let Some(quota) = &tc.quota else {
        return Ok(Vec::new());
    };
    use cog_ratelimit::store::Store as _;
    let decision = store
        .inspect(tenant, quota)
        .await
        .map_err(|e| Exit::Store(format!("limiter {}: {e}", redact_url(&url))))?;
    Ok(cog_control::admin::standing(quota, &decision))
}
