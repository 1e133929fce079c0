use std::time::Duration;

use cog_ratelimit::store::{RedisStore, Store};
use fred::clients::Client;

pub(crate) async fn client(url: &str) -> Client {
    cog_ratelimit::store::connect(url)
        .await
        .expect("connect to test redis")
}

pub(crate) async fn store(url: &str) -> RedisStore {
    RedisStore::new(client(url).await).timeout(Duration::from_secs(2))
}

/// Runs `n` checks of `cost` and returns how many were admitted.
pub(crate) async fn admitted(
    store: &impl Store,
    subject: &str,
    quota: &cog_ratelimit::Quota,
    n: usize,
    cost: u64,
) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        if store
            .check(subject, quota, cost)
            .await
            .unwrap()
            .is_allowed()
        {
            ok += 1;
        }
    }
    ok
}
