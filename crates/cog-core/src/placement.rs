//! Tenant placement: every tenant falls in one of 256 partitions by a
//! stable hash, and a versioned table says which Redis deployment holds
//! each partition.
//!
//! The partition of a tenant is the first byte of the SHA-256 of its id:
//! stable across versions, platforms and languages, and spread evenly.

use std::fmt;
use std::sync::Arc;

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
    /// No deployments, more than 65 536, a repeated or an invalid name.
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
}
