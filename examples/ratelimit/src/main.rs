//! A rate-limited HTTP service, and a client that shows it working.
//!
//! ```text
//! cargo run --release -p example-ratelimit            # demo, then exit
//! cargo run --release -p example-ratelimit -- --serve # keep serving
//! ```
//!
//! Callers are identified by their API key (`Authorization: Bearer …`,
//! hashed before use). Everyone gets 5 requests/s (burst 5) and 100 per
//! minute; the key `pro-key` gets 50/s. With `COG_REDIS_URL` set
//! (e.g. `redis://127.0.0.1:6379`), limits live in Redis and are shared
//! by every instance; otherwise they are kept in memory.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use cog::ratelimit::extract::{ApiKey, KeyExtractor};
use cog::ratelimit::store::{FailurePolicy, MemoryStore, RedisStore, Store};
use cog::ratelimit::{Limit, Quota, RateLimitLayer, StaticQuotas};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let listen: SocketAddr = std::env::var("COG_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:8080".into())
        .parse()?;
    let serve_forever = std::env::args().any(|a| a == "--serve");

    let free = Quota::new([
        Limit::per_second(5).named("per-second"),
        Limit::per_minute(100).named("per-minute"),
    ])?;
    let pro = Quota::new([
        Limit::per_second(50).named("per-second"),
        Limit::per_minute(3000).named("per-minute"),
    ])?;
    // Overrides are keyed by subject: the hashed form ApiKey produces.
    let pro_subject = subject_of_key("pro-key");
    let quotas = StaticQuotas::new(free).with(pro_subject, pro);

    let app = Router::new().route("/hello", get(|| async { "hello\n" }));
    let app = match std::env::var("COG_REDIS_URL") {
        Ok(url) => {
            let client = cog::ratelimit::store::connect(&url).await?;
            let store = RedisStore::new(client).on_failure(FailurePolicy::Local { instances: 1 });
            eprintln!("limits in Redis (COG_REDIS_URL)");
            router(app, store, quotas)
        }
        Err(_) => {
            eprintln!("limits in memory (set COG_REDIS_URL to share them through Redis)");
            router(app, MemoryStore::new(), quotas)
        }
    };

    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    eprintln!("listening on http://{addr}");

    demo(addr).await?;

    if serve_forever {
        eprintln!("\ntry: curl -i -H 'Authorization: Bearer my-key' http://{addr}/hello");
        server.await??;
    }
    Ok(())
}

fn router<St: Store + Clone>(app: Router, store: St, quotas: StaticQuotas) -> Router {
    app.layer(RateLimitLayer::new(store, ApiKey::new(), quotas))
}

fn subject_of_key(key: &str) -> String {
    let req = http::Request::builder()
        .header("authorization", format!("Bearer {key}"))
        .body(())
        .expect("valid request");
    ApiKey::new()
        .extract(&req.into_parts().0)
        .expect("a bearer key")
}

/// Sends a burst from a free caller and a pro caller and prints what came
/// back.
async fn demo(addr: SocketAddr) -> Result<(), Error> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for key in ["free-key", "pro-key"] {
        eprintln!("\n8 requests in a burst with key {key:?}:");
        for i in 1..=8 {
            let req = http::Request::get(format!("http://{addr}/hello"))
                .header("authorization", format!("Bearer {key}"))
                .body(Empty::new())?;
            let res = client.request(req).await?;
            let h = res.headers();
            let show = |name: &str| {
                h.get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            eprintln!(
                "  #{i}: {}  RateLimit: {}  Retry-After: {}",
                res.status(),
                show("ratelimit"),
                show("retry-after"),
            );
        }
    }
    eprintln!("\nafter 1 s the free caller has tokens again:");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let req = http::Request::get(format!("http://{addr}/hello"))
        .header("authorization", "Bearer free-key")
        .body(Empty::new())?;
    eprintln!("  {}", client.request(req).await?.status());
    Ok(())
}
