//! The Redis tier: values, leases and invalidation messages.

use serde::{Deserialize, Serialize};

/// A message telling every instance to drop L1 entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Invalidation<K> {
    /// One key of one tenant.
    Key { tenant: String, key: K },
    /// Every key of one tenant.
    Tenant(String),
    /// Every key of one tenant carrying a tag.
    Tag { tenant: String, tag: String },
}

impl<K> Invalidation<K> {
    /// The tenant whose entries it names.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn tenant(&self) -> &str {
        match self {
            Invalidation::Key { tenant, .. }
            | Invalidation::Tenant(tenant)
            | Invalidation::Tag { tenant, .. } => tenant,
        }
    }
}

/// Why an L2 call did not answer.
#[derive(Debug, thiserror::Error)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum L2Error {
    #[error("redis call timed out")]
    Timeout,
    #[error("L2 circuit open")]
    CircuitOpen,
    #[error("redis call failed")]
    Redis(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl L2Error {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            L2Error::Timeout => "timeout",
            L2Error::CircuitOpen => "circuit_open",
            L2Error::Redis(_) => "redis",
        }
    }
}

/// What [`L2::lease`] found.
#[derive(Debug)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum LeaseOutcome {
    /// We hold the lease (this token): load, then release.
    Held(String),
    /// Someone else held it; we waited until they finished or it expired.
    Waited,
}

#[cfg(feature = "redis")]
pub(crate) use imp::{L2, L2Settings};

#[cfg(not(feature = "redis"))]
pub(crate) use disabled::L2;

#[cfg(not(feature = "redis"))]
mod disabled {
    use super::*;

    /// Without the `redis` feature there is no L2: this type has no values.
    pub(crate) enum L2 {}

    impl L2 {
        pub(crate) fn data_key<K: Serialize>(&self, _: &str, _: &K) -> Option<String> {
            match *self {}
        }
        pub(crate) fn circuit_open(&self) -> bool {
            match *self {}
        }
        pub(crate) async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, L2Error> {
            match *self {}
        }
        pub(crate) async fn set(&self, _: &str, _: Vec<u8>, _: u64) -> Result<(), L2Error> {
            match *self {}
        }
        pub(crate) async fn del(&self, _: &str) -> Result<(), L2Error> {
            match *self {}
        }
        pub(crate) async fn invalidate<K: Serialize>(
            &self,
            _: &Invalidation<K>,
        ) -> Result<(), L2Error> {
            match *self {}
        }
        pub(crate) async fn delete_tenants(&self, _: &[&str]) -> Result<(), L2Error> {
            match *self {}
        }
        pub(crate) async fn publish<K: Serialize>(
            &self,
            _: &Invalidation<K>,
        ) -> Result<(), L2Error> {
            match *self {}
        }
        pub(crate) async fn lease<K: Serialize>(&self, _: &str, _: &K) -> Option<LeaseOutcome> {
            match *self {}
        }
        pub(crate) async fn release<K: Serialize>(&self, _: &str, _: &K, _: String) {
            match *self {}
        }
        pub(crate) async fn add_to_tag(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: u64,
        ) -> Result<(), L2Error> {
            match *self {}
        }
    }
}

#[cfg(feature = "redis")]
mod imp {
    use std::time::Duration;

    use cog_core::breaker::Breaker;
    use cog_core::keys::{encode_segment, encode_segment_bytes};
    use fred::clients::Client;
    use fred::interfaces::{ClientLike, KeysInterface, LuaInterface, PubsubInterface};
    use fred::types::config::Options;
    use fred::types::{Expiration, SetOptions};

    use super::*;

    const RELEASE_LUA: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

    /// Adds a member to a tag set and extends (never shortens) the set's
    /// TTL; answers the set's size. `PTTL` + `PEXPIRE` rather than
    /// `PEXPIRE GT`, which needs Redis 7: this works on 6.2 (and older).
    /// Anything but a set under the set's name is garbage, replaced: kept,
    /// it would refuse every member, and no entry of the tag could be
    /// invalidated in L2.
    const TAG_ADD_LUA: &str = "local t = redis.call('TYPE', KEYS[1])['ok'] \
        if t ~= 'set' and t ~= 'none' then redis.call('DEL', KEYS[1]) end \
        redis.call('SADD', KEYS[1], ARGV[1]) \
        if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then \
        redis.call('PEXPIRE', KEYS[1], ARGV[2]) end \
        return redis.call('SCARD', KEYS[1])";

    /// Tag sets are pruned of members whose entries expired each time
    /// they grow past a multiple of this (and only then).
    const TAG_PRUNE_EVERY: u64 = 16;
    /// Members sampled per prune: twice [`TAG_PRUNE_EVERY`], so a set
    /// settles at about twice its live members however many expire.
    const TAG_PRUNE_SAMPLE: usize = 32;

    /// Keys asked for per `SCAN`/`SSCAN` page, and deleted per batch.
    const SCAN_PAGE: u32 = 500;

    /// `f` within `step`, a timeout being fred's error.
    async fn within<T>(
        step: Duration,
        what: &'static str,
        f: impl Future<Output = T>,
    ) -> Result<T, fred::error::Error> {
        tokio::time::timeout(step, f)
            .await
            .map_err(|_| fred::error::Error::new(fred::error::ErrorKind::Timeout, what))
    }

    /// Whether `key` holds a value and it is not a set.
    async fn holds_other_than_a_set(
        client: &Client,
        opts: &Options,
        step: Duration,
        key: &str,
    ) -> Result<bool, fred::error::Error> {
        let cmd = fred::types::CustomCommand::new_static("TYPE", None, false);
        let kind: String = within(
            step,
            "TYPE",
            client.with_options(opts).custom(cmd, vec![key]),
        )
        .await??;
        Ok(kind != "set" && kind != "none")
    }

    /// Deletes `keys` within `step`: one `DEL` for them all, or on
    /// Cluster one per hash slot, pipelined.
    async fn del_all<K>(
        client: &Client,
        opts: &Options,
        step: Duration,
        keys: Vec<K>,
    ) -> Result<(), fred::error::Error>
    where
        K: TryInto<fred::types::Key>,
        K::Error: Into<fred::error::Error>,
    {
        if keys.is_empty() {
            return Ok(());
        }
        let c = client.with_options(opts);
        let groups: Vec<Vec<fred::types::Key>> = if client.is_clustered() {
            fred::util::group_by_hash_slot(keys)?
                .into_values()
                .map(Vec::from)
                .collect()
        } else {
            vec![
                keys.into_iter()
                    .map(|k| k.try_into().map_err(Into::into))
                    .collect::<Result<_, _>>()?,
            ]
        };
        let dels = groups.into_iter().map(|g| c.del::<(), _>(g));
        within(step, "DEL batch", futures_util::future::try_join_all(dels))
            .await?
            .map(drop)
    }

    /// A Redis call of the L2, boxed (see `L2::call_within`).
    type L2Call<'a, T> = std::pin::Pin<Box<dyn Future<Output = Result<T, L2Error>> + Send + 'a>>;

    /// L2 settings, from the builder.
    #[derive(Debug, Clone)]
    pub(crate) struct L2Settings {
        pub(crate) prefix: String,
        pub(crate) timeout: Duration,
        pub(crate) retry_interval: Duration,
        pub(crate) lease: Option<Duration>,
    }

    impl Default for L2Settings {
        /// The builder's defaults: prefix `cog:cache:`, 50 ms timeout,
        /// 1 s circuit retry, no lease.
        fn default() -> Self {
            L2Settings {
                prefix: "cog:cache:".into(),
                timeout: Duration::from_millis(50),
                retry_interval: Duration::from_secs(1),
                lease: None,
            }
        }
    }

    pub(crate) struct L2 {
        client: Client,
        settings: L2Settings,
        pub(crate) breaker: Breaker,
        /// `cog.cache.l2.duration{op, outcome}`, seconds.
        duration: opentelemetry::metrics::Histogram<f64>,
        channel: String,
        /// Identifies this instance's own invalidation messages.
        pub(crate) origin: u64,
        /// Reconnects after a failover left the client on a replica.
        demotion: cog_core::redis::Demotion,
    }

    impl L2 {
        pub(crate) fn new(client: Client, settings: L2Settings) -> Self {
            let breaker =
                Breaker::new(settings.retry_interval, 2 * settings.timeout).with_jitter(0.3);
            L2 {
                channel: format!("{}invalidate", settings.prefix),
                client,
                settings,
                breaker,
                duration: opentelemetry::global::meter("cog-cache")
                    .f64_histogram("cog.cache.l2.duration")
                    .with_description("Redis calls of the L2 tier, by operation and outcome")
                    .with_unit("s")
                    .build(),
                origin: rand::random(),
                demotion: Default::default(),
            }
        }

        pub(crate) fn circuit_open(&self) -> bool {
            self.breaker.is_open()
        }

        /// The Redis key of `key`: named by its serialization, which keeps
        /// apart whatever its `Eq` keeps apart (its `Display` might not).
        /// `None` for a key whose `Serialize` fails: it lives in L1 only.
        pub(crate) fn data_key<K: Serialize>(&self, tenant: &str, key: &K) -> Option<String> {
            let bytes = postcard::to_stdvec(key).ok()?;
            Some(format!(
                "{}{}:{}",
                self.settings.prefix,
                encode_segment(tenant),
                encode_segment_bytes(&bytes)
            ))
        }

        /// The set of data keys carrying `tag`. `#tag:` cannot occur in a
        /// data key: encoded keys never hold a raw `:`.
        fn tag_key(&self, tenant: &str, tag: &str) -> String {
            format!(
                "{}{}:#tag:{}",
                self.settings.prefix,
                encode_segment(tenant),
                encode_segment(tag)
            )
        }

        /// Records `data_key` under `tag`; the set lives at least as long as
        /// the entry.
        pub(crate) async fn add_to_tag(
            &self,
            tenant: &str,
            tag: &str,
            data_key: &str,
            ttl_ms: u64,
        ) -> Result<(), L2Error> {
            let set = self.tag_key(tenant, tag);
            let c = self.client.with_options(&self.opts());
            let member = data_key.to_owned();
            let key = set.clone();
            let size: u64 = self
                .call("EVAL SADD", async move {
                    c.eval(TAG_ADD_LUA, vec![key], vec![member, ttl_ms.to_string()])
                        .await
                })
                .await?;
            if size >= 2 * TAG_PRUNE_EVERY && size.is_multiple_of(TAG_PRUNE_EVERY) {
                self.spawn_prune(set);
            }
            Ok(())
        }

        /// Removes members of a tag set whose entries are gone (expired or
        /// evicted), from a random sample, in the background. Members live
        /// in other hash slots than the set, so this cannot be one script
        /// on Cluster: it is a few plain calls, each under the timeout.
        fn spawn_prune(&self, set: String) {
            let c = self.client.with_options(&self.opts());
            let timeout = self.settings.timeout;
            tokio::spawn(async move {
                use fred::interfaces::SetsInterface;
                let prune = async {
                    let sample: Vec<String> = c.srandmember(&set, Some(TAG_PRUNE_SAMPLE)).await?;
                    let mut gone = Vec::new();
                    for member in sample {
                        if c.exists::<u32, _>(&member).await? == 0 {
                            gone.push(member);
                        }
                    }
                    if !gone.is_empty() {
                        c.srem::<(), _, _>(&set, gone).await?;
                    }
                    Ok::<_, fred::error::Error>(())
                };
                // Best effort: a failed prune leaves the set for the next.
                let _ = tokio::time::timeout(timeout * (TAG_PRUNE_SAMPLE as u32 + 2), prune).await;
            });
        }

        /// Deletes every data key recorded under `tag`, then the set:
        /// the set's members a page at a time (`SSCAN`), each page's keys
        /// at once. Every page and every batch of deletes answers within
        /// the timeout; the whole walk within 100 of them. Anything but a
        /// set under the set's name (garbage) is deleted as the set is.
        pub(crate) async fn delete_tag(&self, tenant: &str, tag: &str) -> Result<(), L2Error> {
            use fred::types::scan::Scanner;
            use futures_util::StreamExt;
            let set = self.tag_key(tenant, tag);
            let client = self.client.clone();
            let opts = self.opts();
            let step = self.settings.timeout;
            let work = async move {
                let mut pages = client.sscan(set.clone(), "*", Some(SCAN_PAGE)).boxed();
                while let Some(page) = within(step, "SSCAN page", pages.next()).await? {
                    let mut page = match page {
                        Ok(page) => page,
                        // Anything but a set under the set's name is
                        // garbage: it names no entry, and kept, it would
                        // refuse this invalidation each time it is retried.
                        // (fred reads Redis's `WRONGTYPE` to `SSCAN` as a
                        // reply it cannot parse: ask what is there.)
                        Err(e) if !cog_core::redis::is_outage(&e) => {
                            if holds_other_than_a_set(&client, &opts, step, &set).await? {
                                break;
                            }
                            return Err(e);
                        }
                        Err(e) => return Err(e),
                    };
                    let members: Vec<String> = page
                        .take_results()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|m| m.into_string())
                        .collect();
                    del_all(&client, &opts, step, members).await?;
                    page.next();
                }
                client.with_options(&opts).del::<(), _>(set).await
            };
            self.call_within("SSCAN+DEL", step * 100, work).await
        }

        /// Deletes every key of `tenant` (values, tag sets, leases),
        /// scanning every node of a cluster, a page of keys at a time.
        pub(crate) async fn delete_tenant(&self, tenant: &str) -> Result<(), L2Error> {
            self.delete_tenants(&[tenant]).await
        }

        /// [`delete_tenant`](Self::delete_tenant) for each of `tenants`, in
        /// one walk of the keyspace: Redis matches one tenant's keys
        /// itself; for several, the walk takes every key under the prefix
        /// and keeps those whose tenant segment is one of theirs.
        pub(crate) async fn delete_tenants(&self, tenants: &[&str]) -> Result<(), L2Error> {
            use futures_util::StreamExt;
            let glob: String = self
                .settings
                .prefix
                .chars()
                .flat_map(|c| match c {
                    '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            let (pattern, segments) = match tenants {
                [tenant] => (format!("{glob}{}:*", encode_segment(tenant)), None),
                _ => {
                    let segments: std::collections::HashSet<String> =
                        tenants.iter().map(|t| encode_segment(t)).collect();
                    (format!("{glob}*"), Some(segments))
                }
            };
            let prefix = self.settings.prefix.clone();
            // A data key is the prefix, the tenant's segment, `:`, the rest;
            // no segment holds a raw `:`.
            let theirs = move |key: &fred::types::Key| match &segments {
                None => true,
                Some(segments) => key
                    .as_str()
                    .and_then(|k| k.strip_prefix(prefix.as_str()))
                    .and_then(|rest| rest.split_once(':'))
                    .is_some_and(|(segment, _)| segments.contains(segment)),
            };
            let client = self.client.clone();
            let opts = self.opts();
            let step = self.settings.timeout;
            // A scan walks the whole keyspace: the whole walk may take more
            // than one call's timeout (still bounded), but every page and
            // every batch of deletes must answer within it — so a Redis
            // that is gone is noticed in one timeout, not in the walk's
            // bound.
            let bound = self.settings.timeout * 100;
            let work = async move {
                use fred::types::scan::Scanner;
                let mut pages = if client.is_clustered() {
                    client.scan_cluster(pattern, Some(SCAN_PAGE), None).boxed()
                } else {
                    client.scan(pattern, Some(SCAN_PAGE), None).boxed()
                };
                while let Some(page) = within(step, "SCAN page", pages.next()).await? {
                    let mut page = page?;
                    let mut keys = page.take_results().unwrap_or_default();
                    keys.retain(&theirs);
                    del_all(&client, &opts, step, keys).await?;
                    page.next();
                }
                Ok(())
            };
            self.call_within("SCAN+DEL", bound, work).await
        }

        fn lease_key<K: Serialize>(&self, tenant: &str, key: &K) -> Option<String> {
            let mut k = self.data_key(tenant, key)?;
            k.push_str(":lease");
            Some(k)
        }

        /// Runs one Redis call under the breaker and the timeout.
        fn call<'a, T, F>(&'a self, what: &'static str, f: F) -> L2Call<'a, T>
        where
            F: Future<Output = Result<T, fred::error::Error>> + Send + 'a,
            T: Send + 'a,
        {
            self.call_within(what, self.settings.timeout, f)
        }

        /// Runs Redis work under the breaker (refused at once while it is
        /// open) and the bound `timeout`.
        ///
        /// Boxed: fred's command futures are kilobytes each, and every
        /// future awaiting one — a cache lookup, the HTTP layer's request
        /// — would carry that much state (and copy it when moved) on the
        /// hit path too, where no Redis call is made. One allocation per
        /// Redis round trip instead.
        fn call_within<'a, T, F>(
            &'a self,
            what: &'static str,
            timeout: Duration,
            f: F,
        ) -> L2Call<'a, T>
        where
            F: Future<Output = Result<T, fred::error::Error>> + Send + 'a,
            T: Send + 'a,
        {
            Box::pin(self.run_call(what, timeout, f))
        }

        async fn run_call<T, F>(
            &self,
            what: &'static str,
            timeout: Duration,
            f: F,
        ) -> Result<T, L2Error>
        where
            F: Future<Output = Result<T, fred::error::Error>>,
        {
            if !self.breaker.allow().may_call() {
                return Err(L2Error::CircuitOpen);
            }
            let span = cog_core::telemetry::Child::redis("cog-cache", what, || {
                cog_core::telemetry::redis_peer(&self.client)
            });
            let started = std::time::Instant::now();
            // Whether Redis, or the way to it, failed — not a reply about
            // this one call, which says the server is up.
            let (result, outage) = match tokio::time::timeout(timeout, span.wrap(f)).await {
                Ok(Ok(v)) => (Ok(v), false),
                Ok(Err(e)) if e.kind() == &fred::error::ErrorKind::Timeout => {
                    (Err(L2Error::Timeout), true)
                }
                Ok(Err(e)) => {
                    self.demotion.after_error(&self.client, e.details());
                    let outage = cog_core::redis::is_outage(&e);
                    (Err(L2Error::Redis(Box::new(e))), outage)
                }
                Err(_) => (Err(L2Error::Timeout), true),
            };
            self.duration.record(
                started.elapsed().as_secs_f64(),
                &[
                    opentelemetry::KeyValue::new("op", what),
                    opentelemetry::KeyValue::new(
                        "outcome",
                        match &result {
                            Ok(_) => "ok",
                            Err(e) => e.kind(),
                        },
                    ),
                ],
            );
            if let Err(e) = &result {
                span.fail(e.kind(), || e.to_string());
            }
            // Only an outage opens the circuit: a reply about one call
            // (`WRONGTYPE` from garbage under one key, `NOPERM`) would
            // otherwise take L2 away from every tenant for the retry
            // interval, each time that key is touched.
            match &result {
                Err(e) if outage => {
                    if self.breaker.failure() {
                        tracing::warn!(target: "cog_cache", error = e as &dyn std::error::Error, "L2 circuit open: serving from L1 and loaders");
                    }
                }
                _ => {
                    if self.breaker.success() {
                        tracing::info!(target: "cog_cache", "redis reachable again, L2 circuit closed");
                    }
                }
            }
            result
        }

        fn opts(&self) -> Options {
            Options {
                timeout: Some(self.settings.timeout),
                fail_fast: true,
                max_attempts: Some(1),
                ..Default::default()
            }
        }

        pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, L2Error> {
            let c = self.client.with_options(&self.opts());
            self.call("GET", async move { c.get::<Option<Vec<u8>>, _>(key).await })
                .await
        }

        pub(crate) async fn set(
            &self,
            key: &str,
            value: Vec<u8>,
            ttl_ms: u64,
        ) -> Result<(), L2Error> {
            let c = self.client.with_options(&self.opts());
            self.call("SET", async move {
                c.set::<(), _, _>(key, value, Some(Expiration::PX(ttl_ms as i64)), None, false)
                    .await
            })
            .await
        }

        pub(crate) async fn del(&self, key: &str) -> Result<(), L2Error> {
            let c = self.client.with_options(&self.opts());
            self.call("DEL", async move { c.del::<(), _>(key).await })
                .await
        }

        /// Deletes what `msg` names here: a key, a tag's keys, or a
        /// tenant's.
        pub(crate) async fn invalidate<K: Serialize>(
            &self,
            msg: &Invalidation<K>,
        ) -> Result<(), L2Error> {
            match msg {
                Invalidation::Key { tenant, key } => match self.data_key(tenant, key) {
                    Some(k) => self.del(&k).await,
                    None => Ok(()),
                },
                Invalidation::Tag { tenant, tag } => self.delete_tag(tenant, tag).await,
                Invalidation::Tenant(tenant) => self.delete_tenant(tenant).await,
            }
        }

        /// Tells the other instances listening on this L2's channel to drop
        /// what `msg` names from their L1.
        pub(crate) async fn publish<K: Serialize>(
            &self,
            msg: &Invalidation<K>,
        ) -> Result<(), L2Error> {
            let Ok(payload) = postcard::to_stdvec(&(self.origin, msg)) else {
                // Only a key whose serialization fails has no message: it
                // lives in each instance's L1 only (it has no L2 key
                // either), so there is nothing another instance can be
                // told, now or on a retry.
                return Ok(());
            };
            let c = self.client.with_options(&self.opts());
            let channel = self.channel.clone();
            self.call("PUBLISH", async move {
                c.publish::<(), _, _>(channel, payload).await
            })
            .await
        }

        /// Takes the load lease for `key`, or waits for its holder.
        /// `None`: no lease configured, or L2 unusable.
        pub(crate) async fn lease<K: Serialize>(
            &self,
            tenant: &str,
            key: &K,
        ) -> Option<LeaseOutcome> {
            let ttl = self.settings.lease?;
            let lease_key = self.lease_key(tenant, key)?;
            let token = format!("{:016x}", rand::random::<u64>());
            if self.set_lease(&lease_key, &token, ttl, true).await.ok()? {
                return Some(LeaseOutcome::Held(token));
            }
            // Someone else is loading: wait for the lease to go away (released
            // after their write, or expired), polling with backoff.
            let deadline = tokio::time::Instant::now() + ttl;
            let mut pause = Duration::from_millis(5);
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
                let c = self.client.with_options(&self.opts());
                let k = lease_key.clone();
                match self
                    .call("PTTL", async move { c.pttl::<i64, _>(k).await })
                    .await
                {
                    // Gone.
                    Ok(-2) => return Some(LeaseOutcome::Waited),
                    // No lifetime: not a lease (each is set with one) but
                    // garbage, which would make every load of this key
                    // wait out the lease. Take its place.
                    Ok(-1) => {
                        self.set_lease(&lease_key, &token, ttl, false).await.ok()?;
                        return Some(LeaseOutcome::Held(token));
                    }
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
            Some(LeaseOutcome::Waited)
        }

        /// Sets the lease at `key` to `token` for `ttl` — only if nothing
        /// is there when `only_if_absent` (`SET NX`), else whatever it
        /// holds; whether it was set.
        async fn set_lease(
            &self,
            key: &str,
            token: &str,
            ttl: Duration,
            only_if_absent: bool,
        ) -> Result<bool, L2Error> {
            let c = self.client.with_options(&self.opts());
            let (k, t) = (key.to_owned(), token.to_owned());
            let what = if only_if_absent { "SET NX" } else { "SET" };
            let set: Option<String> = self
                .call(what, async move {
                    c.set(
                        k,
                        t,
                        Some(Expiration::PX(ttl.as_millis() as i64)),
                        only_if_absent.then_some(SetOptions::NX),
                        false,
                    )
                    .await
                })
                .await?;
            // `SET` answers `OK`, `SET NX` nil when the key was there.
            Ok(set.is_some())
        }

        /// Releases the lease if we still hold it (token check).
        pub(crate) async fn release<K: Serialize>(&self, tenant: &str, key: &K, token: String) {
            let c = self.client.with_options(&self.opts());
            let Some(k) = self.lease_key(tenant, key) else {
                return;
            };
            let _ = self
                .call("EVAL", async move {
                    c.eval::<i64, _, _, _>(RELEASE_LUA, vec![k], vec![token])
                        .await
                })
                .await;
        }
    }
}
