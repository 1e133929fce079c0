//! `cog usage`: a tenant's remaining budget, from the limiter's state.

use clap::Args;
use cog_control::Window;

use super::{Ctx, missing};
use crate::exit::{Exit, Result};
use crate::output::Table;

/// Arguments of `cog usage`.
#[derive(Args, Debug)]
pub(crate) struct UsageArgs {
    /// The tenant.
    tenant: String,
    /// Where the limiter keeps its state (default: the store, when it
    /// is Redis).
    #[arg(long, env = "COG_LIMITER")]
    limiter: Option<String>,
}

pub(crate) fn policy_text(kind: &cog_ratelimit::LimitKind) -> String {
    use cog_ratelimit::LimitKind;
    match *kind {
        LimitKind::Gcra {
            count,
            period,
            burst,
        } => {
            format!("{count}/{} burst {burst}", Window(period))
        }
        LimitKind::SlidingWindow { max, window } => format!("{max}/{} sliding", Window(window)),
        LimitKind::Concurrency { max, .. } => format!("{max} in flight"),
        _ => "other".into(),
    }
}

pub(crate) async fn exec(args: &UsageArgs, ctx: &Ctx<'_>) -> Result {
    let (tenant, limiter) = (args.tenant.as_str(), args.limiter.as_deref());
    let (c, out) = (ctx.control, ctx.out);
    let url = limiter
        .map(str::to_owned)
        .or_else(|| ctx.store.starts_with("redis").then(|| ctx.store.to_owned()))
        .ok_or_else(|| {
            Exit::Usage(
                "usage reads the shared limiter state in Redis: pass --limiter redis://… \
                 (with the file store, limits are counted inside each service process)"
                    .into(),
            )
        })?;
    let directory = cog_control::Directory::start(c.store().clone()).await?;
    let ctx = directory
        .tenant(tenant)
        .ok_or_else(|| missing("tenant", tenant))?;
    let client = cog_ratelimit::store::connect(&url)
        .await
        .map_err(|e| Exit::Store(format!("limiter {url}: {e}")))?;
    let store = cog_ratelimit::store::RedisStore::new(client);
    let mut t = Table::new(&["LIMIT", "POLICY", "REMAINING", "RESETS IN"]);
    let mut json = Vec::new();
    if let Some(quota) = &ctx.quota {
        use cog_ratelimit::store::Store as _;
        let decision = store
            .inspect(tenant, quota)
            .await
            .map_err(|e| Exit::Store(format!("limiter {url}: {e}")))?;
        for (limit, status) in quota.limits().iter().zip(decision.statuses()) {
            let name = limit.name().into_owned();
            let policy = policy_text(limit.kind());
            t.row(vec![
                name.clone(),
                policy,
                status.remaining.to_string(),
                format!("{:.1}s", status.reset_after.as_secs_f64()),
            ]);
            json.push(serde_json::json!({
                "name": name,
                "remaining": status.remaining,
                "reset_after_ms": status.reset_after.as_millis() as u64,
            }));
        }
    }
    out.list(t, json);
    Ok(())
}
