//! A `fred` client set up the way cog's tests want it.

use std::time::Duration;

use fred::prelude::{Builder, ClientLike, Config, ReconnectPolicy};

/// A connected `fred` client for `url`: 2 s connection timeout, one attempt
/// per command, reconnection every 100 ms (so tests that kill or pause the
/// server see errors, not retries).
///
/// # Panics
/// When `url` is invalid or the first connection fails.
pub async fn fred_client(url: &str) -> fred::clients::Client {
    let client = Builder::from_config(Config::from_url(url).expect("a valid Redis URL"))
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.max_command_attempts = 1;
        })
        .set_policy(ReconnectPolicy::new_constant(0, 100))
        .build()
        .expect("building the fred client");
    client.init().await.expect("connecting to Redis");
    client
}
