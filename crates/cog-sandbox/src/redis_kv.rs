//! Plugin KV data in Redis: one hash per (tenant, plugin) scope.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cog_core::keys::encode_segment;
use cog_core::telemetry::{Child, redis_peer};
use fred::clients::{Client, WithOptions};
use fred::interfaces::{HashesInterface, LuaInterface};
use fred::prelude::ClientLike as _;
use fred::types::config::Options;
use fred::types::{Key, Value};

use crate::kv::{KvError, KvScope, KvStore};

/// Sets a field unless that would take the hash past its entry limit.
const SET_LUA: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
   and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return -1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 0
";

/// A [`KvStore`] in Redis (standalone or Cluster): scope `(tenant,
/// plugin)` is the hash `<prefix>plugin-kv:{<tenant>}:<plugin>` (both
/// escaped; the tenant is the hash tag), one field per key. The entry
/// limit is checked and applied atomically in one script.
///
/// Plugins call it synchronously from their (blocking) threads; each
/// operation runs on the runtime the store was created on and is bounded
/// by its timeout (default 20 ms). When Redis is slow or gone, the plugin
/// sees `UNAVAILABLE` (−4) and carries on — nothing waits longer than the
/// timeout, nothing panics.
#[derive(Clone)]
pub struct RedisKv {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    handle: tokio::runtime::Handle,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for RedisKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKv")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisKv {
    /// A store on `client`, with the `cog:` prefix. Call it inside a tokio
    /// runtime: operations run there.
    ///
    /// Takes fred's `Client`: fred's major version is part of this crate's
    /// API under the `redis` feature (why: `docs/architecture.md`, "The
    /// Redis client is part of the API").
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(client: Client) -> Self {
        RedisKv {
            inner: Arc::new(Inner {
                client,
                handle: tokio::runtime::Handle::current(),
                prefix: "cog:".into(),
                timeout: Duration::from_millis(20),
            }),
        }
    }

    fn with(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            client: shared.client.clone(),
            handle: shared.handle.clone(),
            prefix: shared.prefix.clone(),
            timeout: shared.timeout,
        });
        f(&mut inner);
        RedisKv {
            inner: Arc::new(inner),
        }
    }

    /// Key prefix (default `cog:`).
    pub fn prefix(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.with(|i| i.prefix = prefix)
    }

    /// Longest wait for one operation (default 20 ms).
    pub fn timeout(self, timeout: Duration) -> Self {
        self.with(|i| i.timeout = timeout)
    }

    /// The Redis key of `scope`.
    pub fn key(&self, scope: &KvScope) -> String {
        format!(
            "{}plugin-kv:{{{}}}:{}",
            self.inner.prefix,
            encode_segment(&scope.tenant),
            encode_segment(&scope.plugin)
        )
    }

    /// Runs `op` on the store's runtime and waits for it, at most the
    /// timeout, from any thread.
    fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        op: impl Future<Output = Result<T, fred::error::Error>> + Send + 'static,
    ) -> Result<T, KvError> {
        let span = Child::redis("cog-sandbox", operation, || redis_peer(&self.inner.client));
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.inner.timeout;
        let op = span.wrap(op);
        self.inner.handle.spawn(async move {
            let r = tokio::time::timeout(timeout, op).await;
            let _ = tx.send(r);
        });
        let result = match rx.recv_timeout(timeout + Duration::from_millis(50)) {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(KvError::Unavailable(crate::Cause::new(e))),
            Ok(Err(_)) | Err(_) => Err(KvError::Unavailable(crate::Cause::message("timed out"))),
        };
        if let Err(e) = &result {
            span.fail("unavailable", || e.to_string());
        }
        result
    }

    fn client(&self) -> WithOptions<Client> {
        // One attempt, no queueing while disconnected: a plugin's call
        // must not wait for a reconnection.
        let opts = Options {
            timeout: Some(self.inner.timeout),
            fail_fast: true,
            max_attempts: Some(1),
            ..Default::default()
        };
        self.inner.client.with_options(&opts)
    }
}

impl KvStore for RedisKv {
    fn get(&self, scope: &KvScope, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let (client, hash, field) = (self.client(), self.key(scope), Key::from(key));
        let v: Option<Bytes> = self.run("HGET", async move { client.hget(hash, field).await })?;
        Ok(v.map(|b| b.to_vec()))
    }

    fn set(
        &self,
        scope: &KvScope,
        key: &[u8],
        value: &[u8],
        max_entries: usize,
    ) -> Result<(), KvError> {
        let client = self.client();
        let hash = self.key(scope);
        let args = vec![
            Value::Bytes(Bytes::copy_from_slice(key)),
            Value::Bytes(Bytes::copy_from_slice(value)),
            Value::Integer(i64::try_from(max_entries).unwrap_or(i64::MAX)),
        ];
        let r: i64 = self.run("EVAL", async move {
            client.eval(SET_LUA, vec![hash], args).await
        })?;
        if r < 0 { Err(KvError::Full) } else { Ok(()) }
    }

    fn delete(&self, scope: &KvScope, key: &[u8]) -> Result<bool, KvError> {
        let (client, hash, field) = (self.client(), self.key(scope), Key::from(key));
        let n: i64 = self.run("HDEL", async move { client.hdel(hash, field).await })?;
        Ok(n > 0)
    }
}
