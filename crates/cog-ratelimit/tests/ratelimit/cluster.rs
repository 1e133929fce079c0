//! The Redis store against a real 3-master Redis Cluster.

use std::sync::Arc;

use cog_ratelimit::{Limit, Quota};
use cog_testkit::RedisCluster;

use crate::support::{admitted, store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_exact_accuracy_multi_limit_and_hostile_subjects() {
    let cluster = RedisCluster::start().unwrap();
    let url = cluster.url();

    // Several instances hammering one key: never more than the limit.
    let quota = Quota::single(Limit::per_day(200)).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let store = Arc::new(store(&url).await.local_deny(false));
        for _ in 0..6 {
            let (store, quota) = (store.clone(), quota.clone());
            tasks.push(tokio::spawn(async move {
                admitted(&*store, "hot", &quota, 25, 1).await
            }));
        }
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 200);

    // Multi-limit quotas with every kind touch several keys of one subject:
    // the hash tag keeps them in one slot (no CROSSSLOT), whatever the
    // subject looks like.
    let store = store(&url).await.local_deny(false);
    let quota = Quota::new([
        Limit::per_minute(3),
        Limit::sliding_window(10, std::time::Duration::from_secs(60)),
        Limit::concurrency(100),
    ])
    .unwrap();
    let big = "z".repeat(10 * 1024);
    for subject in ["tenant-1", "{tenant-1}", "}{", "ünï code", big.as_str(), ""] {
        assert_eq!(
            admitted(&store, subject, &quota, 5, 1).await,
            3,
            "{subject:?}"
        );
    }

    // Subjects spread over all three masters.
    let mut used_nodes = 0;
    for node in cluster.nodes() {
        let n = node.command(&["DBSIZE"]).unwrap().as_text().unwrap();
        if n != "0" {
            used_nodes += 1;
        }
    }
    assert!(used_nodes >= 2, "all keys on one node");
}
