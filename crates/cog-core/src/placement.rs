//! Tenant placement: every tenant falls in one of 256 partitions by a
//! stable hash, and a versioned table says which Redis deployment holds
//! each partition.
//!
//! The partition of a tenant is the first byte of the SHA-256 of its id:
//! stable across versions, platforms and languages, and spread evenly.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How many partitions there are.
pub const PARTITIONS: usize = 256;

/// The partition of `tenant`: the first byte of SHA-256 of its id.
pub fn partition(tenant: &str) -> u8 {
    Sha256::digest(tenant.as_bytes())[0]
}

/// Which deployment holds each partition, at a revision.
///
/// Cheap to clone (the table is shared).
#[derive(Clone, PartialEq, Eq)]
pub struct Placement {
    revision: u64,
    deployments: Arc<[Arc<str>]>,
    /// Index into `deployments`, per partition.
    table: Arc<[u16; PARTITIONS]>,
}

impl fmt::Debug for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placement")
            .field("revision", &self.revision)
            .field("deployments", &self.deployments)
            .finish_non_exhaustive()
    }
}

/// Why a placement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// A deployment the placement does not know.
    #[error("unknown deployment `{0}`")]
    UnknownDeployment(String),
    /// No deployments, more than 65 535, a repeated or an invalid name.
    #[error("invalid deployments: {0}")]
    Deployments(String),
}

impl Placement {
    /// Revision 1: every partition on the first of `deployments` (names:
    /// 1–64 of `a-z A-Z 0-9 _ - .`, distinct).
    ///
    /// # Errors
    /// [`PlacementError::Deployments`] for an empty list, a repeated or an
    /// invalid name.
    pub fn new<S: Into<Arc<str>>>(
        deployments: impl IntoIterator<Item = S>,
    ) -> Result<Self, PlacementError> {
        let deployments: Arc<[Arc<str>]> = deployments.into_iter().map(Into::into).collect();
        if deployments.is_empty() || deployments.len() > usize::from(u16::MAX) {
            return Err(PlacementError::Deployments(
                "between 1 and 65 535 deployments".into(),
            ));
        }
        for (i, d) in deployments.iter().enumerate() {
            let valid = !d.is_empty()
                && d.len() <= 64
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !valid {
                return Err(PlacementError::Deployments(format!(
                    "`{d}` is not a valid name"
                )));
            }
            if deployments[..i].contains(d) {
                return Err(PlacementError::Deployments(format!("`{d}` twice")));
            }
        }
        Ok(Placement {
            revision: 1,
            deployments,
            table: Arc::new([0; PARTITIONS]),
        })
    }

    /// The revision: every move adds one.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// This placement at `revision`: how a control plane numbers the
    /// tables it stores (so that no two of its tables share a revision; see
    /// [`Router::reset_placement`]).
    #[must_use]
    pub fn at_revision(mut self, revision: u64) -> Placement {
        self.revision = revision;
        self
    }

    /// The deployments, in the order given.
    pub fn deployments(&self) -> &[Arc<str>] {
        &self.deployments
    }

    /// The deployment holding `partition`.
    pub fn deployment_of(&self, partition: u8) -> &str {
        &self.deployments[usize::from(self.table[usize::from(partition)])]
    }

    /// The deployment holding `tenant`'s partition.
    pub fn deployment_for(&self, tenant: &str) -> &str {
        self.deployment_of(partition(tenant))
    }

    /// This placement with `partition` on `deployment`, one revision on
    /// (the same revision when it is there already).
    ///
    /// # Errors
    /// [`PlacementError::UnknownDeployment`].
    pub fn moved(&self, partition: u8, deployment: &str) -> Result<Placement, PlacementError> {
        let to = self
            .deployments
            .iter()
            .position(|d| &**d == deployment)
            .ok_or_else(|| PlacementError::UnknownDeployment(deployment.to_owned()))?;
        let mut next = self.clone();
        if usize::from(next.table[usize::from(partition)]) != to {
            Arc::make_mut(&mut next.table)[usize::from(partition)] = to as u16;
            next.revision += 1;
        }
        Ok(next)
    }

    /// A placement read back from its parts: `revision`, the deployments,
    /// and the partitions not on the first deployment (the rest are).
    ///
    /// # Errors
    /// As [`new`](Self::new), and [`PlacementError::UnknownDeployment`]
    /// for a partition placed on a deployment not in the list.
    pub fn from_parts<S: Into<Arc<str>>>(
        revision: u64,
        deployments: impl IntoIterator<Item = S>,
        moved: impl IntoIterator<Item = (u8, impl AsRef<str>)>,
    ) -> Result<Self, PlacementError> {
        let mut placement = Placement::new(deployments)?;
        let table = Arc::make_mut(&mut placement.table);
        for (partition, deployment) in moved {
            let deployment = deployment.as_ref();
            let i = placement
                .deployments
                .iter()
                .position(|d| &**d == deployment)
                .ok_or_else(|| PlacementError::UnknownDeployment(deployment.to_owned()))?;
            table[usize::from(partition)] = i as u16;
        }
        placement.revision = revision;
        Ok(placement)
    }

    /// This placement with one more deployment, holding no partition yet,
    /// one revision on.
    ///
    /// # Errors
    /// [`PlacementError::Deployments`] for an invalid or a known name.
    pub fn with_deployment(&self, deployment: &str) -> Result<Placement, PlacementError> {
        let names = self.deployments.iter().cloned().chain([deployment.into()]);
        let mut next = Placement::new(names)?;
        next.table = self.table.clone();
        next.revision = self.revision + 1;
        Ok(next)
    }

    /// Every partition with its deployment, in partition order.
    pub fn partitions(&self) -> impl Iterator<Item = (u8, &str)> + '_ {
        (0..=u8::MAX).map(|p| (p, self.deployment_of(p)))
    }

    /// Partitions whose deployment differs between `self` and `newer`.
    pub fn changed(&self, newer: &Placement) -> Vec<u8> {
        (0..=u8::MAX)
            .filter(|&p| self.deployment_of(p) != newer.deployment_of(p))
            .collect()
    }

    /// Partitions per deployment, in the order of [`deployments`](Self::deployments).
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.deployments.len()];
        for &d in self.table.iter() {
            counts[usize::from(d)] += 1;
        }
        counts
    }
}

/// Where a tenant's data is now, and where it was before the last switch
/// (see [`Router::route`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The position of the deployment holding the partition, in
    /// [`Router::deployments`].
    pub to: usize,
    /// The position of the deployment that held it before the last switch,
    /// when that differs from `to`: data not yet on `to` may be there.
    pub from: Option<usize>,
    /// How long ago the partition moved to `to` (since the router started
    /// if it never moved).
    pub since: Duration,
    /// The revision of the placement that moved the partition to `to`
    /// (of the router's first placement if it never moved): it names the
    /// move, so a copy made once per move is made once, whatever other
    /// partitions do since.
    pub revision: u64,
    /// The revision the router followed before the switch that moved the
    /// partition (equal to `revision` if it never moved). A router that
    /// skipped revisions — it polls, and two moves landed in one poll —
    /// knows only that the move is one of `after + 1 ..= revision`
    /// ([`moved_in`](Self::moved_in)); every instance's range holds the
    /// move's own revision.
    pub after: u64,
}

impl Route {
    /// The revisions the move that put the partition where it is may have
    /// been made at: `after + 1 ..= revision` (empty if it never moved).
    /// Instances that saw different revisions name one move by different
    /// ranges, all holding its revision, and a later move of the partition
    /// by a range starting past it — how [`copy_keys_once`](crate::redis::copy_keys_once)
    /// tells a move already copied from a new one.
    pub fn moved_in(&self) -> std::ops::RangeInclusive<u64> {
        self.after + 1..=self.revision
    }
}

/// Routes tenants to deployments by a [`Placement`] that can change while
/// in use — one per process, shared by every placed store (limiter, cache,
/// plugin KV), so [`set_placement`](Self::set_placement) moves them all at
/// once.
///
/// It knows the deployments this process has a connection to; a placement
/// may name more (a deployment added to the control plane before the
/// instances are configured for it) as long as no partition is placed on
/// one it does not know.
pub struct Router {
    names: Arc<[Arc<str>]>,
    state: RwLock<Routed>,
}

struct Routed {
    current: Placement,
    /// Per partition: the position of its deployment now, before its last
    /// move ([`NONE`] if it never moved), when it moved, the revision
    /// that moved it and the one followed before.
    to: [u16; PARTITIONS],
    from: [u16; PARTITIONS],
    moved: [Instant; PARTITIONS],
    revision: [u64; PARTITIONS],
    after: [u64; PARTITIONS],
}

const NONE: u16 = u16::MAX;

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("deployments", &self.names)
            .field("revision", &self.read().current.revision)
            .finish()
    }
}

impl Router {
    /// A router over `deployments` (the ones this process can reach),
    /// starting at `placement`.
    ///
    /// # Errors
    /// [`PlacementError::UnknownDeployment`] when `placement` puts a
    /// partition on a deployment not in `deployments`;
    /// [`PlacementError::Deployments`] for an invalid list.
    pub fn new<S: Into<Arc<str>>>(
        deployments: impl IntoIterator<Item = S>,
        placement: Placement,
    ) -> Result<Self, PlacementError> {
        let names = Placement::new(deployments)?.deployments;
        let to = positions(&names, &placement)?;
        let revision = placement.revision;
        Ok(Router {
            names,
            state: RwLock::new(Routed {
                current: placement,
                to,
                from: [NONE; PARTITIONS],
                moved: [Instant::now(); PARTITIONS],
                revision: [revision; PARTITIONS],
                after: [revision; PARTITIONS],
            }),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Routed> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The deployments this router routes to, in the order of
    /// [`Route::to`].
    pub fn deployments(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The position of `deployment` in [`deployments`](Self::deployments).
    pub fn position(&self, deployment: &str) -> Option<usize> {
        self.names.iter().position(|d| &**d == deployment)
    }

    /// `stores`, named by deployment, in the order of
    /// [`deployments`](Self::deployments) (names the router does not know
    /// are left out) — how a placed store lines up its connections.
    ///
    /// # Errors
    /// [`PlacementError::UnknownDeployment`] naming a deployment of the
    /// router that `stores` lacks.
    pub fn arrange<S>(
        &self,
        stores: impl IntoIterator<Item = (impl AsRef<str>, S)>,
    ) -> Result<Vec<S>, PlacementError> {
        let mut slots: Vec<Option<S>> = self.names.iter().map(|_| None).collect();
        for (name, store) in stores {
            if let Some(i) = self.position(name.as_ref()) {
                slots[i] = Some(store);
            }
        }
        slots
            .into_iter()
            .zip(self.names.iter())
            .map(|(s, name)| s.ok_or_else(|| PlacementError::UnknownDeployment(name.to_string())))
            .collect()
    }

    /// The placement in force.
    pub fn placement(&self) -> Placement {
        self.read().current.clone()
    }

    /// Switches to `placement` if its revision is newer than the one in
    /// force; whether it did (placements may arrive late or twice).
    ///
    /// # Errors
    /// [`PlacementError::UnknownDeployment`] when it puts a partition on a
    /// deployment this router does not know; nothing changes then.
    pub fn set_placement(&self, placement: Placement) -> Result<bool, PlacementError> {
        self.switch(placement, false)
    }

    /// Switches to `placement` whatever its revision, if it differs from the
    /// one in force; whether it did. For a control plane whose store went
    /// back (restored from a backup, failed over to a replica without its
    /// last writes): the placement it holds now is the one in force, though
    /// this router followed a newer one since lost — instances started
    /// since route by it, and this one must too. A partition this moves is
    /// named by `placement`'s revision alone ([`Route::moved_in`]).
    ///
    /// # Errors
    /// As [`set_placement`](Self::set_placement).
    pub fn reset_placement(&self, placement: Placement) -> Result<bool, PlacementError> {
        self.switch(placement, true)
    }

    fn switch(&self, placement: Placement, reset: bool) -> Result<bool, PlacementError> {
        let to = positions(&self.names, &placement)?;
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let newer = placement.revision > state.current.revision;
        if !(newer || (reset && placement != state.current)) {
            return Ok(false);
        }
        // A partition that moves again before its data followed keeps
        // only its latest previous home: data still on the one before is
        // lost to it (the store's copy window says how long it follows).
        // Moved back, its data is where it just was, not the older copy at
        // home.
        let (now, before) = (Instant::now(), state.current.revision);
        for (p, &to) in to.iter().enumerate() {
            if state.to[p] != to {
                state.from[p] = state.to[p];
                state.to[p] = to;
                state.moved[p] = now;
                state.revision[p] = placement.revision;
                // Reset to an older revision: the range is that revision.
                state.after[p] = before.min(placement.revision.saturating_sub(1));
            }
        }
        state.current = placement;
        Ok(true)
    }

    /// Where `tenant`'s data is.
    pub fn route(&self, tenant: &str) -> Route {
        self.route_partition(partition(tenant))
    }

    /// Where `partition`'s data is.
    pub fn route_partition(&self, partition: u8) -> Route {
        let state = self.read();
        let p = usize::from(partition);
        Route {
            to: usize::from(state.to[p]),
            from: (state.from[p] != NONE).then(|| usize::from(state.from[p])),
            since: state.moved[p].elapsed(),
            revision: state.revision[p],
            after: state.after[p],
        }
    }
}

/// Per partition, the position in `names` of its deployment.
fn positions(
    names: &[Arc<str>],
    placement: &Placement,
) -> Result<[u16; PARTITIONS], PlacementError> {
    let mut map = vec![None; placement.deployments.len()];
    let mut to = [0; PARTITIONS];
    for (p, &d) in placement.table.iter().enumerate() {
        let pos = match map[usize::from(d)] {
            Some(pos) => pos,
            None => {
                let name = &placement.deployments[usize::from(d)];
                let pos = names
                    .iter()
                    .position(|n| n == name)
                    .ok_or_else(|| PlacementError::UnknownDeployment(name.to_string()))?;
                map[usize::from(d)] = Some(pos);
                pos
            }
        };
        to[p] = pos as u16;
    }
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_even() {
        // Golden values: the partition function is part of the data
        // layout and must never change.
        assert_eq!(partition("acme"), 0x82);
        assert_eq!(partition(""), 0xe3);
        assert_eq!(partition("tenant-1"), 0x0a);
        let mut seen = [0u32; PARTITIONS];
        for i in 0..100_000 {
            seen[usize::from(partition(&format!("tenant-{i}")))] += 1;
        }
        // ~390 each: none empty, none more than twice its share.
        assert!(seen.iter().all(|&n| n > 200 && n < 800), "{seen:?}");
    }

    #[test]
    fn moves_change_one_partition_and_the_revision() {
        let p = Placement::new(["main", "big"]).unwrap();
        assert_eq!(p.revision(), 1);
        assert_eq!(p.deployment_for("acme"), "main");
        let q = p.moved(partition("acme"), "big").unwrap();
        assert_eq!(q.revision(), 2);
        assert_eq!(q.deployment_for("acme"), "big");
        assert_eq!(p.changed(&q), vec![partition("acme")]);
        assert_eq!(q.counts(), vec![255, 1]);
        // Already there: nothing changes.
        assert_eq!(q.moved(partition("acme"), "big").unwrap(), q);
        assert_eq!(
            q.moved(0, "nowhere"),
            Err(PlacementError::UnknownDeployment("nowhere".into()))
        );
    }

    #[test]
    fn bad_deployment_lists_are_refused() {
        for bad in [&[][..], &["a", "a"], &["a b"], &[""]] {
            assert!(
                matches!(
                    Placement::new(bad.iter().copied()),
                    Err(PlacementError::Deployments(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn placements_round_trip_through_their_parts() {
        let p = Placement::new(["main", "big"])
            .unwrap()
            .moved(7, "big")
            .unwrap()
            .moved(200, "big")
            .unwrap();
        let moved: Vec<(u8, &str)> = p.partitions().filter(|(_, d)| *d != "main").collect();
        assert_eq!(moved, [(7, "big"), (200, "big")]);
        let back = Placement::from_parts(p.revision(), ["main", "big"], moved).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            Placement::from_parts(3, ["main"], [(1, "big")]),
            Err(PlacementError::UnknownDeployment("big".into()))
        );
        let more = p.with_deployment("eu").unwrap();
        assert_eq!(more.revision(), p.revision() + 1);
        assert_eq!(more.counts(), vec![254, 2, 0]);
        assert!(matches!(
            more.with_deployment("big"),
            Err(PlacementError::Deployments(_))
        ));
    }

    #[test]
    fn a_router_switches_to_newer_placements_and_remembers_the_last_home() {
        let p = Placement::new(["a", "b"]).unwrap();
        // The router knows more deployments than the placement, in another order.
        let router = Router::new(["b", "c", "a"], p.clone()).unwrap();
        let acme = partition("acme");
        assert_eq!(router.route("acme").to, 2);
        assert_eq!(router.route("acme").from, None);
        assert_eq!(router.route("acme").revision, 1);
        assert!(router.route("acme").moved_in().is_empty());

        let q = p.moved(acme, "b").unwrap();
        assert!(router.set_placement(q.clone()).unwrap());
        let r = router.route("acme");
        assert_eq!((r.to, r.from, r.revision), (0, Some(2), 2));
        assert_eq!(r.moved_in(), 2..=2);
        assert!(r.since < Duration::from_secs(1));
        // Other partitions did not move.
        let other = (0..=u8::MAX).find(|&x| x != acme).unwrap();
        assert_eq!(router.route_partition(other).from, None);
        // Older or equal revisions are ignored.
        assert!(!router.set_placement(p).unwrap());
        assert!(!router.set_placement(q.clone()).unwrap());
        assert_eq!(router.placement(), q);

        // A placement on a deployment the router lacks changes nothing.
        let far = q.with_deployment("z").unwrap();
        assert!(router.set_placement(far.clone()).unwrap()); // no partition on z yet
        let err = router.set_placement(far.moved(acme, "z").unwrap());
        assert_eq!(err, Err(PlacementError::UnknownDeployment("z".into())));
        assert_eq!(router.route("acme").to, 0);
        // The switch to `far` moved nothing: acme's previous home stays.
        assert_eq!(router.route("acme").from, Some(2));
        // Moving another partition keeps acme's previous home too; moving
        // acme back home makes `b` (where its data just was) the one.
        router
            .set_placement(far.moved(other, "b").unwrap())
            .unwrap();
        assert_eq!(router.route("acme").from, Some(2));
        assert_eq!(router.route_partition(other).from, Some(2));
        // A route names the move that put its partition where it is: the
        // revision of acme's move, not of the other partition's since.
        assert_eq!(router.placement().revision(), 4);
        assert_eq!(router.route("acme").revision, 2);
        assert_eq!(router.route_partition(other).revision, 4);
        assert_eq!(router.route_partition(other).moved_in(), 4..=4);
        let back = router.placement().moved(acme, "a").unwrap();
        router.set_placement(back).unwrap();
        assert_eq!(
            (router.route("acme").to, router.route("acme").from),
            (2, Some(0))
        );
        assert_eq!(router.route("acme").revision, 5);
        assert_eq!(router.route("acme").moved_in(), 5..=5);
        assert_eq!(router.position("a"), Some(2));
        assert_eq!(router.deployments().len(), 3);
        assert!(Router::new(["b"], q.moved(acme, "a").unwrap()).is_err());
        assert_eq!(
            router.arrange([("a", 1), ("x", 9), ("c", 3), ("b", 2)]),
            Ok(vec![2, 3, 1])
        );
        assert_eq!(
            router.arrange([("a", 1), ("b", 2)]),
            Err(PlacementError::UnknownDeployment("c".into()))
        );
    }

    /// A router that skips revisions (two moves in one poll) names a move
    /// by the range it may have been made in, which holds the revision an
    /// instance that saw every one names it by.
    #[test]
    fn a_skipped_revision_widens_the_moves_range() {
        let home = Placement::new(["a", "b"]).unwrap();
        let acme = partition("acme");
        let other = (0..=u8::MAX).find(|&x| x != acme).unwrap();
        let away = home.moved(acme, "b").unwrap(); // revision 2
        let later = away.moved(other, "b").unwrap(); // revision 3
        let (every, skipping) = (
            Router::new(["a", "b"], home.clone()).unwrap(),
            Router::new(["a", "b"], home).unwrap(),
        );
        every.set_placement(away).unwrap();
        every.set_placement(later.clone()).unwrap();
        skipping.set_placement(later).unwrap();
        assert_eq!(every.route("acme").moved_in(), 2..=2);
        let skipped = skipping.route("acme");
        assert_eq!((skipped.revision, skipped.after), (3, 1));
        assert_eq!(skipped.moved_in(), 2..=3);
        assert_eq!(skipping.route_partition(other).moved_in(), 2..=3);
    }

    /// A reset follows an older table (the control plane's store went
    /// back), names the moves it makes by that table's revision alone, and
    /// leaves the router taking the tables that follow it.
    #[test]
    fn a_reset_follows_an_older_table() {
        let home = Placement::new(["a", "b"]).unwrap();
        let acme = partition("acme");
        let away = home.moved(acme, "b").unwrap().at_revision(7);
        let router = Router::new(["a", "b"], home.clone()).unwrap();
        router.set_placement(away.clone()).unwrap();
        assert!(
            !router.set_placement(home.clone()).unwrap(),
            "older: not taken"
        );
        assert!(router.reset_placement(home.clone()).unwrap());
        assert_eq!(router.placement(), home);
        let r = router.route("acme");
        assert_eq!((r.to, r.from), (0, Some(1)), "back home, from b");
        assert_eq!(r.moved_in(), 1..=1);
        assert!(!router.reset_placement(home.clone()).unwrap(), "the same");
        // The table after the restored one is newer than it: taken.
        let other = (0..=u8::MAX).find(|&x| x != acme).unwrap();
        let next = home.moved(other, "b").unwrap().at_revision(2);
        assert!(router.set_placement(next).unwrap());
        assert_eq!(router.route_partition(other).moved_in(), 2..=2);
        // A reset to a newer table is a plain switch.
        assert!(router.reset_placement(away.clone().at_revision(9)).unwrap());
        assert_eq!(router.route("acme").moved_in(), 3..=9);
    }
}
