//! `--plugin-data`: where the services' plugins keep their data, cleared
//! for the tenants and plugins a command deletes.

use std::sync::Arc;
use std::time::Duration;

use cog_control::Control;
use cog_core::placement::{Placement, Router};
use cog_core::text::redact_url;
use cog_sandbox::{KvStore, PlacedKv, RedisKv};

use crate::exit::{Exit, Result};

/// `control`, clearing plugin data where `flag` says: one Redis URL,
/// `NAME=URL,…` (the services' `COG_DEPLOYMENTS`), or `none`; not given,
/// the store when it is Redis (where the demo keeps it by default).
pub(crate) async fn attach(control: Control, flag: Option<&str>, store: &str) -> Result<Control> {
    let value = match flag.map(str::trim) {
        Some("none") => return Ok(control),
        Some(v) => v.to_owned(),
        None if store.starts_with("redis") => store.to_owned(),
        None => return Ok(control),
    };
    let kv: Arc<dyn KvStore> = match deployments(&value)? {
        None => Arc::new(redis_kv(&value).await?),
        Some(named) => {
            let mut stores = Vec::new();
            for (name, url) in &named {
                stores.push((name.clone(), redis_kv(url).await?));
            }
            // A placed store clears a scope on every deployment: where the
            // router would send it does not matter here.
            let placement = Placement::new(named.iter().map(|(n, _)| n.as_str()))
                .and_then(|p| Router::new(named.iter().map(|(n, _)| n.as_str()), p))
                .and_then(|router| PlacedKv::new(Arc::new(router), stores))
                .map_err(|e| Exit::Usage(format!("--plugin-data: {e}")))?;
            Arc::new(placement)
        }
    };
    Ok(control.plugin_data(kv))
}

/// `NAME=URL,NAME=URL` → the pairs; one URL (whose scheme holds no `=`)
/// → `None`.
fn deployments(value: &str) -> Result<Option<Vec<(String, String)>>> {
    if value
        .split_once("://")
        .is_some_and(|(scheme, _)| !scheme.contains('='))
    {
        return Ok(None);
    }
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(name, url)| (name.trim().to_owned(), url.trim().to_owned()))
                .filter(|(name, url)| !name.is_empty() && !url.is_empty())
                .ok_or_else(|| {
                    Exit::Usage(format!(
                        "--plugin-data {}: a redis:// URL, NAME=URL entries separated by commas, or none",
                        redact_url(value)
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// The plugin data in the Redis at `url`, with the services' default
/// prefix; each clear waits up to a second.
async fn redis_kv(url: &str) -> Result<RedisKv> {
    let client = cog_ratelimit::store::connect(url)
        .await
        .map_err(|e| Exit::Store(format!("plugin data {}: {e}", redact_url(url))))?;
    Ok(RedisKv::new(client).timeout(Duration::from_secs(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_or_named_deployments() {
        let named = |v| deployments(v).ok().flatten();
        assert_eq!(deployments("redis://h:6379/0?x=y").ok(), Some(None));
        assert_eq!(deployments("rediss://u:p@h").ok(), Some(None));
        assert_eq!(
            named("main=redis://m, big = redis://b?x=1,"),
            Some(vec![
                ("main".into(), "redis://m".into()),
                ("big".into(), "redis://b?x=1".into())
            ])
        );
        assert_eq!(named("redis1=redis://m").map(|v| v.len()), Some(1));
        for bad in ["main", "main=", "=redis://m", "main=redis://m,big"] {
            assert!(matches!(deployments(bad), Err(Exit::Usage(_))), "{bad}");
        }
    }
}
