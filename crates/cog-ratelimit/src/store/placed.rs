//! A store over several Redis deployments, each tenant's state on the one
//! its partition is placed on (see [`cog_core::placement`]).

use std::sync::Arc;
use std::time::Duration;

use cog_core::placement::{Placement, PlacementError, Router};
use cog_core::redis::copy_keys_once;

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
/// old deployment to the new one (`DUMP`/`RESTORE`), so limits carry on
/// where they were. The copy is made once per move and subject across the
/// fleet (a marker key on the new deployment, kept for the rest of the
/// window): the first instance's copy replaces whatever the new deployment
/// held — an older copy when a partition moves back to a previous home —
/// and no later copy overwrites decisions taken since.
///
/// **Error during a move**: instances still on the old placement keep
/// deciding on the old deployment until they get the new one; what they
/// admit after the first copy is not seen by the new deployment. The fleet
/// therefore admits at most the limit plus what the lagging instances admit
/// in the placement's propagation time (at most the limit's rate × that
/// time, plus a burst). Decisions taken on the new deployment by another
/// instance while the first copy is in flight are overwritten by it. After
/// a failed copy (the old deployment unreachable) the instance that tried
/// goes on from what the new deployment holds — fresh, or an older copy
/// from a previous stay: at most one limit more; the next instance to
/// decide for the subject tries the copy again.
#[derive(Clone)]
pub struct PlacedStore {
    inner: Arc<Inner>,
}

struct Inner {
    router: Arc<Router>,
    /// One store per deployment, in the router's order.
    stores: Vec<RedisStore>,
    tenant_of: Box<TenantOf>,
    window: Duration,
    /// Subjects copied, by the revision of their partition's move and the
    /// quota's fingerprint.
    copied: quick_cache::sync::Cache<(u64, u64, Box<str>), ()>,
}

/// A key of `Inner::copied`, borrowed.
#[derive(Hash)]
struct Copied<'a>(u64, u64, &'a str);

impl quick_cache::Equivalent<(u64, u64, Box<str>)> for Copied<'_> {
    fn equivalent(&self, key: &(u64, u64, Box<str>)) -> bool {
        self.0 == key.0 && self.1 == key.1 && self.2 == &*key.2
    }
}

impl std::fmt::Debug for PlacedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacedStore")
            .field("router", &self.inner.router)
            .field("copy_window", &self.inner.window)
            .finish_non_exhaustive()
    }
}

impl PlacedStore {
    /// A store deciding on `stores` (a name and a store per deployment)
    /// by `placement`. Subjects are tenant ids; see
    /// [`tenant_of`](Self::tenant_of) otherwise.
    ///
    /// # Errors
    /// [`PlacementError::UnknownDeployment`] when the placement puts a
    /// partition on a deployment without a store.
    pub fn new(
        placement: Placement,
        stores: impl IntoIterator<Item = (impl Into<Arc<str>>, RedisStore)>,
    ) -> Result<Self, PlacementError> {
        let stores: Vec<(Arc<str>, RedisStore)> =
            stores.into_iter().map(|(n, s)| (n.into(), s)).collect();
        let router = Router::new(stores.iter().map(|(n, _)| n.clone()), placement)?;
        Self::routed(Arc::new(router), stores)
    }

    /// A store deciding by a shared `router` (one per process: the cache
    /// and the plugin KV can follow the same one), with a store for each
    /// of the router's deployments.
    ///
    /// # Errors
    /// [`PlacementError::UnknownDeployment`] naming a deployment of the
    /// router without a store.
    pub fn routed(
        router: Arc<Router>,
        stores: impl IntoIterator<Item = (impl Into<Arc<str>>, RedisStore)>,
    ) -> Result<Self, PlacementError> {
        let stores = router.arrange(stores.into_iter().map(|(n, s)| (n.into(), s)))?;
        Ok(PlacedStore {
            inner: Arc::new(Inner {
                router,
                stores,
                tenant_of: Box::new(|s| s),
                window: Duration::from_secs(24 * 3600),
                copied: quick_cache::sync::Cache::new(65_536),
            }),
        })
    }

    fn with(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            router: shared.router.clone(),
            stores: shared.stores.clone(),
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

    /// The router this store follows.
    pub fn router(&self) -> &Arc<Router> {
        &self.inner.router
    }

    /// The placement in force.
    pub fn placement(&self) -> Placement {
        self.inner.router.placement()
    }

    /// Switches to `placement` if it is newer than the one in force (an
    /// older or equal revision is ignored: placements may arrive out of
    /// order). With a shared router, every store following it switches.
    ///
    /// # Errors
    /// [`PlacementError::UnknownDeployment`] when it puts a partition on a
    /// deployment without a store.
    pub fn set_placement(&self, placement: Placement) -> Result<(), PlacementError> {
        self.inner.router.set_placement(placement).map(drop)
    }

    /// The store deciding for `subject` now, copying its state there first
    /// if its partition moved recently and this is its first decision since.
    async fn route(&self, subject: &str, quota: &Quota) -> &RedisStore {
        let inner = &*self.inner;
        let route = inner.router.route((inner.tenant_of)(subject));
        let store = &inner.stores[route.to];
        let Some(from) = route.from.filter(|_| route.since < inner.window) else {
            return store;
        };
        let fingerprint = quota.fingerprint();
        if inner
            .copied
            .get(&Copied(route.revision, fingerprint, subject))
            .is_none()
        {
            inner
                .copied
                .insert((route.revision, fingerprint, subject.into()), ());
            // The leased mode's ledgers too: the units leased out by the
            // old home come back to the new one.
            let keys = store.all_keys(subject, quota);
            // Once per move across the fleet: the first instance copies,
            // replacing an older copy `store` may hold (a partition moved
            // back); later ones would overwrite decisions taken since.
            if let Err(e) = copy_keys_once(
                inner.stores[from].client(),
                store.client(),
                &keys,
                route.moved_in(),
                inner.window.saturating_sub(route.since),
            )
            .await
            {
                tracing::warn!(target: "cog_ratelimit", error = %e, "copying limiter state after a move failed");
            }
        }
        store
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
        for store in &self.inner.stores {
            store.reset(subject, quota).await?;
        }
        Ok(())
    }

    fn release(&self, lease: Lease) {
        // The slots are on the deployment that decided, which may have
        // changed since: release on every one (removing a member another
        // does not hold is a no-op).
        let Some((last, rest)) = self.inner.stores.split_last() else {
            return;
        };
        for store in rest {
            if let Some(copy) = lease.duplicate() {
                store.release(copy);
            }
        }
        last.release(lease);
    }
}
