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

/// Runs one command on `client`, as an operator would.
pub(crate) async fn command(client: &Client, args: &[&str]) -> fred::types::Value {
    use fred::interfaces::ClientLike;
    let cmd = fred::types::CustomCommand::new_static("CMD", None, false);
    let cmd = fred::types::CustomCommand {
        cmd: args[0].to_owned().into(),
        ..cmd
    };
    let args: Vec<String> = args[1..].iter().map(|a| (*a).to_owned()).collect();
    client.custom(cmd, args).await.unwrap()
}
