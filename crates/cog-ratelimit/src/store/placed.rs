//! A store over several Redis deployments, each tenant's state on the one
//! its partition is placed on (see [`cog_core::placement`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cog_core::placement::{Placement, PlacementError, partition};
use fred::interfaces::ClientLike;
use fred::types::{CustomCommand, Value};
use parking_lot::RwLock;

use super::lease::KeyRef;
use super::{Lease, RedisStore, Store, StoreError};
use crate::decision::Decision;
use crate::quota::Quota;

type TenantOf = dyn Fn(&str) -> &str + Send + Sync;

/// Rate-limit state spread over several Redis deployments by tenant: a
/// tenant's subjects are decided on the deployment its partition is placed
/// on.
///
/// # Moving a partition
///
/// [`set_placement`](Self::set_placement) with a newer placement moves
/// partitions online. For [`copy_window`](Self::copy_window) after a move
/// (default 24 h: the longest period of the limits in use), the first
/// decision for a subject of a moved partition copies its state from the
/// old deployment to the new one (`DUMP`/`RESTORE`, never over state the
/// new one has already), so limits carry on where they were.
///
/// **Error during a move**: instances still on the old placement keep
/// deciding on the old deployment until they get the new one; what they
/// admit after the first copy is not seen by the new deployment. The fleet
/// therefore admits at most the limit plus what the lagging instances admit
/// in the placement's propagation time (at most the limit's rate × that
/// time, plus a burst). A failed copy (the old deployment unreachable)
/// starts the subject fresh: at most one burst more.
#[derive(Clone)]
pub struct PlacedStore {
    inner: Arc<Inner>,
}

struct Inner {
    stores: Vec<(Arc<str>, RedisStore)>,
    placed: RwLock<Placed>,
    tenant_of: Box<TenantOf>,
    window: Duration,
    /// Subjects copied since the last move.
    copied: quick_cache::sync::Cache<(u64, Box<str>), ()>,
}

#[derive(Clone)]
struct Placed {
    current: Placement,
    previous: Option<Placement>,
    moved_at: Instant,
}

impl std::fmt::Debug for PlacedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacedStore")
            .field("placement", &self.inner.placed.read().current)
            .finish_non_exhaustive()
    }
}

impl PlacedStore {
    /// A store deciding on `stores` (a name and a store per deployment)
    /// by `placement`. Subjects are tenant ids; see
    /// [`tenant_of`](Self::tenant_of) otherwise.
    ///
    /// # Errors
    /// [`PlacementError::UnknownDeployment`] when the placement names a
    /// deployment without a store.
    pub fn new(
        placement: Placement,
        stores: impl IntoIterator<Item = (impl Into<Arc<str>>, RedisStore)>,
    ) -> Result<Self, PlacementError> {
        let stores: Vec<(Arc<str>, RedisStore)> =
            stores.into_iter().map(|(n, s)| (n.into(), s)).collect();
        check(&placement, &stores)?;
        Ok(PlacedStore {
            inner: Arc::new(Inner {
                stores,
                placed: RwLock::new(Placed {
                    current: placement,
                    previous: None,
                    moved_at: Instant::now(),
                }),
                tenant_of: Box::new(|s| s),
                window: Duration::from_secs(24 * 3600),
                copied: quick_cache::sync::Cache::new(65_536),
            }),
        })
    }

    fn with(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            stores: shared.stores.clone(),
            placed: RwLock::new(shared.placed.read().clone()),
            tenant_of: Box::new(|s| s),
            window: shared.window,
            copied: quick_cache::sync::Cache::new(65_536),
        });
        f(&mut inner);
        PlacedStore {
            inner: Arc::new(inner),
        }
    }

    /// How to find the tenant in a subject (default: the subject is the
    /// tenant id). Set it before cloning the store.
    pub fn tenant_of(self, f: impl Fn(&str) -> &str + Send + Sync + 'static) -> Self {
        self.with(|i| i.tenant_of = Box::new(f))
    }

    /// How long after a move state is copied on first touch (default
    /// 24 h). Set it before cloning the store.
    pub fn copy_window(self, window: Duration) -> Self {
        self.with(|i| i.window = window)
    }

    /// The placement in force.
    pub fn placement(&self) -> Placement {
        self.inner.placed.read().current.clone()
    }

    /// Switches to `placement` if it is newer than the one in force (an
    /// older or equal revision is ignored: placements may arrive out of
    /// order).
    ///
    /// # Errors
    /// [`PlacementError::UnknownDeployment`] when it names a deployment
    /// without a store.
    pub fn set_placement(&self, placement: Placement) -> Result<(), PlacementError> {
        check(&placement, &self.inner.stores)?;
        let mut placed = self.inner.placed.write();
        if placement.revision() > placed.current.revision() {
            let old = std::mem::replace(&mut placed.current, placement);
            placed.previous = Some(old);
            placed.moved_at = Instant::now();
            self.inner.copied.clear();
        }
        Ok(())
    }

    /// The position of `deployment`'s store.
    fn index(&self, deployment: &str) -> usize {
        self.inner
            .stores
            .iter()
            .position(|(n, _)| &**n == deployment)
            .expect("placements are checked against the stores")
    }

    /// The store deciding for `subject` now, copying its state there first
    /// if its partition moved recently and this is its first decision since.
    async fn route(&self, subject: &str, quota: &Quota) -> &RedisStore {
        let p = partition((self.inner.tenant_of)(subject));
        let (to, from) = {
            let placed = self.inner.placed.read();
            let to = self.index(placed.current.deployment_of(p));
            let from = placed
                .previous
                .as_ref()
                .filter(|_| placed.moved_at.elapsed() < self.inner.window)
                .map(|prev| self.index(prev.deployment_of(p)))
                .filter(|from| *from != to);
            (to, from)
        };
        let store = &self.inner.stores[to].1;
        if let Some(from) = from
            && self
                .inner
                .copied
                .get(&KeyRef(quota.fingerprint(), subject))
                .is_none()
        {
            self.inner
                .copied
                .insert((quota.fingerprint(), subject.into()), ());
            copy(
                &self.inner.stores[from].1,
                store,
                &store.keys(subject, quota),
            )
            .await;
        }
        store
    }
}

fn check(placement: &Placement, stores: &[(Arc<str>, RedisStore)]) -> Result<(), PlacementError> {
    for d in placement.deployments() {
        if !stores.iter().any(|(n, _)| n == d) {
            return Err(PlacementError::UnknownDeployment(d.to_string()));
        }
    }
    Ok(())
}

/// Copies `keys` from `from` to `to` (`DUMP`, `PTTL`, `RESTORE` without
/// `REPLACE`: state `to` has already wins). Failures are logged: the
/// subject then starts fresh on `to`.
async fn copy(from: &RedisStore, to: &RedisStore, keys: &[String]) {
    let cmd = |name: &'static str| CustomCommand::new_static(name, None, false);
    for key in keys {
        let dumped: Result<Value, _> = from.client().custom(cmd("DUMP"), vec![key.clone()]).await;
        let bytes = match dumped {
            Ok(Value::Bytes(b)) => b,
            Ok(Value::String(s)) => s.into_inner(),
            Ok(_) => continue, // nothing there
            Err(e) => {
                tracing::warn!(target: "cog_ratelimit", error = %e, "copying limiter state after a move failed");
                continue;
            }
        };
        let ttl: i64 = from
            .client()
            .custom(cmd("PTTL"), vec![key.clone()])
            .await
            .unwrap_or(-1);
        let ttl = ttl.max(0);
        let restored: Result<Value, _> = to
            .client()
            .custom(
                cmd("RESTORE"),
                vec![
                    Value::from(key.as_str()),
                    Value::Integer(ttl),
                    Value::Bytes(bytes),
                ],
            )
            .await;
        if let Err(e) = restored
            && !e.details().starts_with("BUSYKEY")
        {
            tracing::warn!(target: "cog_ratelimit", error = %e, "restoring limiter state after a move failed");
        }
    }
}

impl Store for PlacedStore {
    async fn check(&self, subject: &str, quota: &Quota, cost: u64) -> Result<Decision, StoreError> {
        self.route(subject, quota)
            .await
            .check(subject, quota, cost)
            .await
    }

    async fn inspect(&self, subject: &str, quota: &Quota) -> Result<Decision, StoreError> {
        self.route(subject, quota)
            .await
            .inspect(subject, quota)
            .await
    }

    async fn reset(&self, subject: &str, quota: &Quota) -> Result<(), StoreError> {
        // Every deployment: a reset must not come back from an old one.
        for (_, store) in &self.inner.stores {
            store.reset(subject, quota).await?;
        }
        Ok(())
    }

    fn release(&self, lease: Lease) {
        // The slots are on the deployment that decided, which may have
        // changed since: release on every one (removing a member another
        // does not hold is a no-op).
        let Some(((_, last), rest)) = self.inner.stores.split_last() else {
            return;
        };
        for (_, store) in rest {
            if let Some(copy) = lease.duplicate() {
                store.release(copy);
            }
        }
        last.release(lease);
    }
}
