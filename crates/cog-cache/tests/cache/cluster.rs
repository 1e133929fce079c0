//! L2 on a real 3-master Redis Cluster: values, tags and tenants spread
//! over every node, invalidated whole.

use std::time::Duration;

use cog_testkit::{RedisCluster, Reply};

use crate::support::{eventually, with_defaults};

/// Keys held by the whole cluster.
fn keys(cluster: &RedisCluster) -> i64 {
    cluster
        .nodes()
        .iter()
        .map(|n| match n.command(&["DBSIZE"]).unwrap() {
            Reply::Int(n) => n,
            other => panic!("{other:?}"),
        })
        .sum()
}

/// A tag's values and a tenant's keys live in every slot: invalidating
/// either deletes them on every node (grouped by slot, no CROSSSLOT), and
/// leaves everything else.
///
/// What is tested is where the deletes go, not the timeout: with the
/// default 50 ms, a loaded machine (the whole suite at once) timed a call
/// out now and then, and that invalidation then landed later, from the
/// retry queue — after the count below. Two seconds leave no call to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_and_tenants_are_invalidated_on_every_node() {
    let cluster = RedisCluster::start().unwrap();
    let patient = async || {
        cog_cache::TieredCache::builder()
            .redis(crate::support::client(&cluster.url()).await)
            .schema("v1")
            .redis_timeout(Duration::from_secs(2))
            .build()
            .unwrap()
    };
    let a: crate::support::Cache = patient().await;
    let b: crate::support::Cache = patient().await;
    b.invalidations_ready().await;
    let acme = a.tenant("acme");
    let tagged = acme.tagged(["t"]);
    for i in 0..1500 {
        tagged.insert(format!("t{i}"), "v".into()).await;
    }
    for i in 0..500 {
        acme.insert(format!("u{i}"), "v".into()).await;
    }
    for i in 0..100 {
        a.tenant("other").insert(format!("o{i}"), "v".into()).await;
    }
    // 2 100 values and the tag's set.
    assert_eq!(keys(&cluster), 2101);
    for node in cluster.nodes() {
        let Reply::Int(n) = node.command(&["DBSIZE"]).unwrap() else {
            panic!()
        };
        assert!(n > 500, "values on every node: {n}");
    }

    tagged.invalidate_tag("t").await;
    assert_eq!(keys(&cluster), 600);
    assert_eq!(b.tenant("acme").get(&"t7".to_owned()).await, None);
    assert_eq!(
        b.tenant("acme").get(&"u7".to_owned()).await.as_deref(),
        Some("v")
    );

    acme.invalidate_tenant().await;
    assert_eq!(keys(&cluster), 100);
    // b's L1 copy goes when the message arrives.
    eventually("b drops acme's entries", async || {
        b.tenant("acme").get(&"u7".to_owned()).await.is_none()
    })
    .await;
    assert_eq!(
        b.tenant("other").get(&"o7".to_owned()).await.as_deref(),
        Some("v")
    );
    assert_eq!(a.stats().l2_errors, 0);
}

/// On a cluster as on one server, a subscription Redis refuses (the ACL
/// user may not use the channel) is not taken for one: fred sends a
/// subscriber's `SUBSCRIBE` to one node, and whether the connection is
/// subscribed must be asked of that node too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscription_is_seen_on_a_cluster_too() {
    let cluster = RedisCluster::start().unwrap();
    let url = cluster.acl_user("reader", false).unwrap();
    let cache = with_defaults(&url).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), cache.invalidations_ready())
            .await
            .is_err(),
        "ready while Redis refuses the subscription"
    );
    cluster.acl_user("reader", true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), cache.invalidations_ready())
        .await
        .expect("ready once Redis allows the channel");

    // The question goes to the node that holds the subscription, every
    // time (of three masters, a node at random would be wrong two times
    // in three).
    use fred::interfaces::PubsubInterface;
    use fred::prelude::{Builder, ClientLike, Config};
    let sub = Builder::from_config(Config::from_url(&cluster.url()).unwrap())
        .build_subscriber_client()
        .unwrap();
    sub.init().await.unwrap();
    sub.subscribe("ch").await.unwrap();
    for _ in 0..12 {
        assert!(cog_core::redis::is_subscribed(&sub).await.unwrap());
    }
}
