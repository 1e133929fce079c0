use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cog_cache::TieredCache;
pub(crate) use cog_testkit::fred_client as client;

/// A loader that counts its calls, takes `delay`, and answers `value`.
#[derive(Clone, Default)]
pub(crate) struct Counter(pub(crate) Arc<AtomicUsize>);

impl Counter {
    pub(crate) fn calls(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    pub(crate) fn loader(
        &self,
        value: &str,
        delay: Duration,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send>>
    + Send
    + 'static {
        let calls = self.0.clone();
        let value = value.to_owned();
        move || {
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                Ok(value)
            })
        }
    }
}

pub(crate) fn failing()
-> impl FnOnce() -> std::future::Ready<Result<String, String>> + Send + 'static {
    || std::future::ready(Err("upstream down".to_owned()))
}

pub(crate) type Cache = TieredCache<String, String>;

/// Waits (polling) until `f` holds; panics after 10 s.
pub(crate) async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

/// A cache on `url` with every L2 default (50 ms timeout).
pub(crate) async fn with_defaults(url: &str) -> Cache {
    cog_cache::TieredCache::builder()
        .redis(client(url).await)
        .schema("v1")
        .build()
        .unwrap()
}

/// Keys on `server`.
pub(crate) fn dbsize(server: &cog_testkit::RedisServer) -> i64 {
    match server.command(&["DBSIZE"]).unwrap() {
        cog_testkit::Reply::Int(n) => n,
        other => panic!("DBSIZE: {other:?}"),
    }
}
