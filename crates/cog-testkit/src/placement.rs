//! Placements the placed stores' tests share (limiter, cache, plugin KV).

use cog_core::placement::{Placement, partition};

/// A tenant (`t0`, `t1`, …) whose partition is not `tenant`'s: moving it
/// moves another partition.
pub fn elsewhere(tenant: &str) -> String {
    (0..)
        .map(|i| format!("t{i}"))
        .find(|t| partition(t) != partition(tenant))
        .expect("256 partitions")
}

/// Two deployments, `main` and `big`, and three tables of them: `home`
/// (every partition on `main`, revision 1), `away` (`tenant`'s partition
/// moved to `big`, revision 2), `later` (then [`elsewhere`]`(tenant)`'s
/// partition too, revision 3).
pub fn two_moves(tenant: &str) -> [Placement; 3] {
    let home = Placement::new(["main", "big"]).expect("valid names");
    let away = home
        .moved(partition(tenant), "big")
        .expect("a known deployment");
    let later = away
        .moved(partition(&elsewhere(tenant)), "big")
        .expect("a known deployment");
    [home, away, later]
}
