//! Plugin KV data in Redis: one hash per (tenant, plugin) scope.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cog_core::keys::encode_segment;
use cog_core::placement::{PlacementError, Router};
use cog_core::redis::copy_keys_once;
use cog_core::telemetry::{Child, redis_peer};
use fred::clients::{Client, WithOptions};
use fred::interfaces::{HashesInterface, KeysInterface, LuaInterface};
use fred::prelude::ClientLike as _;
use fred::types::config::Options;
use fred::types::{Key, Value};

use crate::kv::{KvError, KvQuota, KvScope, KvStore};

/// Sets a field within the scope's quota (`ARGV`: field, value, most
/// entries, most bytes). `KEYS[2]` keeps the bytes of the hash's fields
/// and values, by length; it is only a cache of them — missing (evicted,
/// never made, the hash copied over after a move) it is counted again from
/// the hash, and with no hash there is no count. Anything but a hash under
/// the scope's key is garbage, replaced: kept, it would refuse every call
/// of the scope for ever. −1: a new field past the entry limit; −2: a
/// scope growing past the byte limit.
const SET_LUA: &str = r"
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'hash' then
  if t ~= 'none' then redis.call('DEL', KEYS[1]) end
  redis.call('DEL', KEYS[2])
end
local ct = redis.call('TYPE', KEYS[2])['ok']
if ct ~= 'string' and ct ~= 'none' then redis.call('DEL', KEYS[2]) end
local size = tonumber(redis.call('GET', KEYS[2]) or '')
if t == 'hash' and size == nil then
  size = 0
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    size = size + #f + redis.call('HSTRLEN', KEYS[1], f)
  end
end
size = size or 0
local exists = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
if not exists and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return -1
end
local old = 0
if exists then old = #ARGV[1] + redis.call('HSTRLEN', KEYS[1], ARGV[1]) end
local after = size - old + #ARGV[1] + #ARGV[2]
if after > tonumber(ARGV[4]) and after > size then
  redis.call('SET', KEYS[2], size)
  return -2
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], after)
return 0
";

/// Deletes a field, keeping the byte count (when there is one) right; a
/// count that is not a number is dropped, to be counted again.
const DELETE_LUA: &str = r"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
local len = redis.call('HSTRLEN', KEYS[1], ARGV[1])
local n = redis.call('HDEL', KEYS[1], ARGV[1])
if n == 1 and redis.call('EXISTS', KEYS[2]) == 1 then
  local ct = redis.call('TYPE', KEYS[2])['ok']
  local size = ct == 'string' and tonumber(redis.call('GET', KEYS[2])) or nil
  if size == nil or redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('DEL', KEYS[2])
  else
    redis.call('SET', KEYS[2], size - #ARGV[1] - len)
  end
end
return n
";

/// Deletes a scope's hash and its byte count in one step; whether there
/// was a hash (or garbage) under the scope's key.
const CLEAR_LUA: &str = r"
local n = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
return n
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
/// timeout, nothing panics. Anything but a hash under a scope's key
/// (garbage) holds no entry, and the scope's next `set` replaces it.
#[derive(Clone)]
pub struct RedisKv {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    handle: tokio::runtime::Handle,
    prefix: String,
    timeout: Duration,
    /// Reconnects after a failover left the client on a replica.
    demotion: Arc<cog_core::redis::Demotion>,
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
                demotion: Arc::default(),
            }),
        }
    }

    fn with(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            client: shared.client.clone(),
            handle: shared.handle.clone(),
            prefix: shared.prefix.clone(),
            timeout: shared.timeout,
            demotion: shared.demotion.clone(),
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

    /// The Redis key keeping the bytes of `scope`'s keys and values (in
    /// the same slot as [`key`](Self::key)).
    pub fn size_key(&self, scope: &KvScope) -> String {
        format!(
            "{}plugin-kv-bytes:{{{}}}:{}",
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
        let (client, demotion) = (self.inner.client.clone(), self.inner.demotion.clone());
        self.inner.handle.spawn(async move {
            let r = tokio::time::timeout(timeout, op).await;
            if let Ok(Err(e)) = &r {
                demotion.after_error(&client, e.details());
            }
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

    /// Copies `scope`'s hash from `from` after the move made at one of the
    /// placement revisions `moved`, once across the fleet (a marker on this store, kept for
    /// `ttl`): the copy replaces an older one this store may hold (a
    /// partition moved back); a hash `from` lacks leaves this store's as it
    /// is.
    fn adopt(
        &self,
        from: &RedisKv,
        scope: &KvScope,
        moved: std::ops::RangeInclusive<u64>,
        ttl: Duration,
    ) -> Result<(), KvError> {
        let (src, dst, key) = (from.client(), self.client(), [self.key(scope)]);
        let size = self.size_key(scope);
        self.run("RESTORE", async move {
            copy_keys_once(&src, &dst, &key, moved, ttl).await?;
            // The copy may have replaced the hash: its bytes are counted
            // again at the next set.
            dst.del::<i64, _>(size).await.map(drop)
        })
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
        let v: Option<Bytes> = self.run("HGET", async move {
            match client.hget(hash, field).await {
                // Garbage under the scope's key holds no entry.
                Err(e) if cog_core::redis::is_wrong_type(&e) => Ok(None),
                r => r,
            }
        })?;
        Ok(v.map(|b| b.to_vec()))
    }

    fn set(
        &self,
        scope: &KvScope,
        key: &[u8],
        value: &[u8],
        quota: KvQuota,
    ) -> Result<(), KvError> {
        let client = self.client();
        let keys = vec![self.key(scope), self.size_key(scope)];
        let int = |n: usize| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        let args = vec![
            Value::Bytes(Bytes::copy_from_slice(key)),
            Value::Bytes(Bytes::copy_from_slice(value)),
            int(quota.entries),
            int(quota.bytes),
        ];
        let r: i64 = self.run(
            "EVAL",
            async move { client.eval(SET_LUA, keys, args).await },
        )?;
        match r {
            -1 => Err(KvError::Full),
            -2 => Err(KvError::BytesFull),
            _ => Ok(()),
        }
    }

    fn delete(&self, scope: &KvScope, key: &[u8]) -> Result<bool, KvError> {
        let client = self.client();
        let keys = vec![self.key(scope), self.size_key(scope)];
        let args = vec![Value::Bytes(Bytes::copy_from_slice(key))];
        let n: i64 = self.run(
            "EVAL",
            async move { client.eval(DELETE_LUA, keys, args).await },
        )?;
        Ok(n > 0)
    }

    fn clear(&self, scope: &KvScope) -> Result<bool, KvError> {
        let client = self.client();
        let keys = vec![self.key(scope), self.size_key(scope)];
        let n: i64 = self.run("EVAL", async move {
            client.eval(CLEAR_LUA, keys, Vec::<Value>::new()).await
        })?;
        Ok(n > 0)
    }

    /// Pipelined, 128 scopes a round trip, each batch within
    /// the store's timeout.
    fn clear_all(&self, scopes: &[KvScope]) -> Result<usize, KvError> {
        let mut held = 0;
        for batch in scopes.chunks(CLEAR_BATCH) {
            let client = self.inner.client.clone();
            let keys: Vec<Vec<String>> = batch
                .iter()
                .map(|s| vec![self.key(s), self.size_key(s)])
                .collect();
            held += self.run("EVAL", async move {
                let pipeline = client.pipeline();
                // One `DEL` of both keys a scope (one slot: the tenant is
                // the hash tag): what `CLEAR_LUA` does — except that a
                // scope holding only a byte count is counted (a figure
                // for the log).
                for pair in keys {
                    let () = pipeline.del(pair).await?;
                }
                let cleared: Vec<i64> = pipeline.all().await?;
                Ok(cleared.into_iter().filter(|n| *n > 0).count())
            })?;
        }
        Ok(held)
    }
}

/// How many scopes [`RedisKv::clear_all`](KvStore::clear_all) clears in
/// one round trip.
const CLEAR_BATCH: usize = 128;

/// Plugin KV data over several Redis deployments: each tenant's scopes on
/// the deployment its partition is placed on (see
/// [`cog_core::placement`]), following the [`Router`] shared with the
/// process's other placed stores.
///
/// After a partition moves, the first operation on one of its scopes
/// copies the scope's hash from the old deployment (`DUMP`/`RESTORE`), for
/// `window` after the move (default 24 h). The copy is made once per move
/// and scope across the fleet (a marker next to the hash, set in the same
/// script as the restore): it replaces an older copy the new deployment
/// may hold — a partition moved back to a previous home gets the data
/// written while it was away — and no later copy overwrites what was
/// written since. A scope the old deployment lacks keeps what the new one
/// has. Should that copy fail — the old deployment unreachable — the
/// operation answers [`KvError::Unavailable`] and the next one tries again:
/// plugin data is not lost to a move, it waits.
#[derive(Clone)]
pub struct PlacedKv {
    inner: Arc<PlacedInner>,
}

struct PlacedInner {
    router: Arc<Router>,
    stores: Vec<RedisKv>,
    window: Duration,
    /// Scopes copied, with the placement revision they were copied at;
    /// bounded (cleared when full: a scope copied again finds its hash
    /// there and keeps it).
    copied: parking_lot::Mutex<HashSet<(u64, KvScope)>>,
}

/// How many copied scopes a [`PlacedKv`] remembers.
const COPIED_CAP: usize = 65_536;

impl std::fmt::Debug for PlacedKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacedKv")
            .field("router", &self.inner.router)
            .field("window", &self.inner.window)
            .finish_non_exhaustive()
    }
}

impl PlacedKv {
    /// A store following `router`, with a [`RedisKv`] for each of its
    /// deployments (the same prefix on each).
    ///
    /// # Errors
    /// [`PlacementError::UnknownDeployment`] naming a deployment of the
    /// router without a store.
    pub fn new(
        router: Arc<Router>,
        stores: impl IntoIterator<Item = (impl AsRef<str>, RedisKv)>,
    ) -> Result<Self, PlacementError> {
        let stores = router.arrange(stores)?;
        Ok(PlacedKv {
            inner: Arc::new(PlacedInner {
                router,
                stores,
                window: Duration::from_secs(24 * 3600),
                copied: parking_lot::Mutex::new(HashSet::new()),
            }),
        })
    }

    /// How long after a move scopes are copied on first use (default 24 h).
    /// Set it before cloning the store.
    pub fn window(self, window: Duration) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| PlacedInner {
            router: shared.router.clone(),
            stores: shared.stores.clone(),
            window: shared.window,
            copied: parking_lot::Mutex::new(HashSet::new()),
        });
        PlacedKv {
            inner: Arc::new(PlacedInner { window, ..inner }),
        }
    }

    /// The store holding `scope`, its data copied there first after a move.
    fn store(&self, scope: &KvScope) -> Result<&RedisKv, KvError> {
        let inner = &*self.inner;
        let route = inner.router.route(&scope.tenant);
        let store = &inner.stores[route.to];
        let Some(from) = route.from.filter(|_| route.since < inner.window) else {
            return Ok(store);
        };
        let key = (route.revision, scope.clone());
        if inner.copied.lock().contains(&key) {
            return Ok(store);
        }
        store.adopt(
            &inner.stores[from],
            scope,
            route.moved_in(),
            inner.window.saturating_sub(route.since),
        )?;
        let mut copied = inner.copied.lock();
        if copied.len() >= COPIED_CAP {
            copied.clear();
        }
        copied.insert(key);
        Ok(store)
    }
}

impl KvStore for PlacedKv {
    fn get(&self, scope: &KvScope, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.store(scope)?.get(scope, key)
    }

    fn set(
        &self,
        scope: &KvScope,
        key: &[u8],
        value: &[u8],
        quota: KvQuota,
    ) -> Result<(), KvError> {
        self.store(scope)?.set(scope, key, value, quota)
    }

    fn delete(&self, scope: &KvScope, key: &[u8]) -> Result<bool, KvError> {
        self.store(scope)?.delete(scope, key)
    }

    /// Clears the scope on every deployment, not only the one its tenant's
    /// partition is on: a copy left on a previous home would come back
    /// with the next move, or be copied over within the window of the
    /// last one.
    fn clear(&self, scope: &KvScope) -> Result<bool, KvError> {
        let mut held = false;
        for store in &self.inner.stores {
            held |= store.clear(scope)?;
        }
        Ok(held)
    }

    /// On every deployment, as [`clear`](KvStore::clear); a scope that held
    /// data on two deployments counts twice.
    fn clear_all(&self, scopes: &[KvScope]) -> Result<usize, KvError> {
        let mut held = 0;
        for store in &self.inner.stores {
            held += store.clear_all(scopes)?;
        }
        Ok(held)
    }

    /// Copies each scope as its first use after the move would, marked
    /// for this store's [`window`](PlacedKv::window) — keep it the
    /// services' own.
    fn copy_moved(
        &self,
        from: &str,
        to: &str,
        revision: u64,
        scopes: &[KvScope],
    ) -> Result<(), KvError> {
        let inner = &*self.inner;
        let index = |name: &str| {
            inner
                .router
                .deployments()
                .iter()
                .position(|d| &**d == name)
                .ok_or_else(|| {
                    KvError::Unavailable(crate::Cause::new(PlacementError::UnknownDeployment(
                        name.to_owned(),
                    )))
                })
        };
        let (from, to) = (index(from)?, index(to)?);
        if from == to {
            return Ok(());
        }
        for scope in scopes {
            inner.stores[to].adopt(
                &inner.stores[from],
                scope,
                revision..=revision,
                inner.window,
            )?;
        }
        Ok(())
    }
}
