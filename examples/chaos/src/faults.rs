//! The faults, each done to the real thing and undone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cog_control::Control;
use tokio::sync::Mutex;

use crate::topology::Topology;

/// One fault of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The data Redis killed (`SIGKILL`), restarted empty.
    RedisKilled,
    /// The data Redis frozen (`SIGSTOP`), then thawed.
    RedisPaused,
    /// 200 ms added on every instance's Redis link, then one instance cut
    /// off from Redis (a partition) while the others keep it.
    SlowThenPartition,
    /// The data Redis out of memory (`maxmemory` + `noeviction`).
    RedisOutOfMemory,
    /// A demo instance killed (`SIGKILL`) and started again.
    InstanceKilled,
    /// A tenant's plugin that never returns, installed, then removed.
    SpinningPlugin,
    /// Under Redis Sentinel: the primary killed, its replica promoted; the
    /// old primary started again (it rejoins as a replica).
    Failover,
    /// In Redis Cluster: a master killed, its replica taking its slots;
    /// the old master started again (it rejoins as a replica).
    ClusterFailover,
}

impl Fault {
    /// Every fault of the single-Redis topology, in schedule order.
    pub(crate) const SINGLE: [Fault; 6] = [
        Fault::RedisKilled,
        Fault::RedisPaused,
        Fault::SlowThenPartition,
        Fault::RedisOutOfMemory,
        Fault::InstanceKilled,
        Fault::SpinningPlugin,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Fault::RedisKilled => "Redis killed, restarted empty",
            Fault::RedisPaused => "Redis paused (SIGSTOP)",
            Fault::SlowThenPartition => "+200 ms to Redis, then one instance partitioned",
            Fault::RedisOutOfMemory => "Redis out of memory (noeviction)",
            Fault::InstanceKilled => "an instance killed (SIGKILL), restarted",
            Fault::SpinningPlugin => "a plugin that never returns",
            Fault::Failover => "Sentinel failover: primary killed, replica promoted",
            Fault::ClusterFailover => {
                "Cluster failover: a master killed, its replica takes the slots"
            }
        }
    }

    /// How long the fault lasts at `scale` (1.0: the issue's figures).
    pub(crate) fn length(self, scale: f64) -> Duration {
        let s = match self {
            Fault::RedisKilled => 5.0,
            Fault::RedisPaused => 5.0,
            Fault::SlowThenPartition => 10.0,
            Fault::RedisOutOfMemory => 10.0,
            Fault::InstanceKilled => 3.0,
            Fault::SpinningPlugin => 10.0,
            // How long the old primary stays down after the promotion.
            Fault::Failover | Fault::ClusterFailover => 5.0,
        };
        Duration::from_secs_f64(s * scale)
    }

    /// Seconds of this fault during which one instance of `n` is cut off
    /// from Redis while the others keep it: the local fallback then admits
    /// its share on top of what Redis admits.
    pub(crate) fn partitioned(self, scale: f64) -> f64 {
        match self {
            Fault::SlowThenPartition => self.length(scale).as_secs_f64() / 2.0,
            _ => 0.0,
        }
    }

    /// How long every instance decides without Redis during this fault
    /// (Redis gone, frozen, slower than the limiter's timeout, or refusing
    /// writes), if it is a fleet-wide outage.
    pub(crate) fn outage(self, scale: f64) -> Option<f64> {
        match self {
            Fault::RedisKilled | Fault::RedisPaused | Fault::RedisOutOfMemory => {
                Some(self.length(scale).as_secs_f64())
            }
            Fault::SlowThenPartition => Some(self.length(scale).as_secs_f64() / 2.0),
            // Measured: from the kill to the promotion.
            Fault::InstanceKilled
            | Fault::SpinningPlugin
            | Fault::Failover
            | Fault::ClusterFailover => None,
        }
    }
}

/// A wasm plugin whose request hook loops forever.
fn spinner() -> Vec<u8> {
    wat::parse_str(
        r#"(module
             (memory (export "memory") 1)
             (func (export "cog_abi_version") (result i32) i32.const 1)
             (func (export "cog_on_request") (result i32) (loop $l (br $l)) i32.const 0))"#,
    )
    .expect("the spinner assembles")
}

/// How many scripts (`EVALSHA`, `EVAL`) `server` has run.
fn script_calls(server: &cog_testkit::RedisServer) -> u64 {
    let Ok(reply) = server.command(&["INFO", "commandstats"]) else {
        return 0;
    };
    let text = reply.as_text().unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// `f` on a blocking thread (Redis restarts wait for the server).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("a blocking step")
}

/// Does `fault` for `length`, then undoes it. For a failover, how long
/// the fleet was without a primary (from the kill to the promotion).
pub(crate) async fn run(
    fault: Fault,
    length: Duration,
    topology: &Arc<Mutex<Topology>>,
    control: &Control,
    victim: &str,
) -> Result<Option<f64>, String> {
    match fault {
        Fault::ClusterFailover => {
            let t = topology.clone();
            let (old, took) = blocking(move || -> Result<(u16, f64), String> {
                let t = t.blocking_lock();
                let c = t.cluster.as_ref().ok_or("no cluster in this topology")?;
                let masters = c.masters();
                let old = *masters.first().ok_or("the cluster has no master up")?;
                let node = c
                    .nodes()
                    .iter()
                    .find(|n| n.port() == old)
                    .ok_or("a master this run did not start")?;
                let killed = Instant::now();
                node.kill().map_err(|e| e.to_string())?;
                // Its replica has taken the slots when three masters are
                // up again and the cluster says ok.
                while c.masters().len() < masters.len() || c.masters().contains(&old) || !c.is_ok()
                {
                    if killed.elapsed() > Duration::from_secs(30) {
                        return Err(format!(
                            "no replica took the slots within 30 s (masters up {:?}, killed {old}, ok {})",
                            c.masters(),
                            c.is_ok()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok((old, killed.elapsed().as_secs_f64()))
            })
            .await?;
            tokio::time::sleep(length).await;
            let t = topology.clone();
            blocking(move || -> Result<(), String> {
                let t = t.blocking_lock();
                let c = t.cluster.as_ref().ok_or("no cluster in this topology")?;
                let node = c.nodes().iter().find(|n| n.port() == old).ok_or("gone")?;
                node.restart().map_err(|e| e.to_string())?;
                let deadline = Instant::now() + Duration::from_secs(30);
                while !c.is_ok() {
                    if Instant::now() > deadline {
                        return Err(
                            "the cluster did not settle after the old master came back".into()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                // The instances decide on the new master again.
                let fresh: Vec<&cog_testkit::RedisServer> = c
                    .nodes()
                    .iter()
                    .filter(|n| c.masters().contains(&n.port()))
                    .collect();
                let before: u64 = fresh.iter().map(|n| script_calls(n)).sum();
                let deadline = Instant::now() + Duration::from_secs(10);
                while fresh.iter().map(|n| script_calls(n)).sum::<u64>() <= before {
                    if Instant::now() > deadline {
                        return Err("the instances did not follow the new master".into());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(())
            })
            .await?;
            return Ok(Some(took));
        }
        Fault::Failover => {
            let t = topology.clone();
            let (old, took) = blocking(move || -> Result<(u16, f64), String> {
                let t = t.blocking_lock();
                let s = t.sentinel.as_ref().ok_or("no sentinel in this topology")?;
                let old = s.primary().ok_or("the sentinel names no primary")?;
                let primary = s
                    .servers
                    .iter()
                    .find(|r| r.port() == old)
                    .ok_or("the sentinel names a primary this run did not start")?;
                let killed = Instant::now();
                primary.kill().map_err(|e| e.to_string())?;
                while s.primary().is_none_or(|p| p == old) {
                    if killed.elapsed() > Duration::from_secs(30) {
                        return Err("no replica promoted within 30 s".into());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok((old, killed.elapsed().as_secs_f64()))
            })
            .await?;
            tokio::time::sleep(length).await;
            let t = topology.clone();
            blocking(move || -> Result<(), String> {
                let t = t.blocking_lock();
                let s = t.sentinel.as_ref().ok_or("no sentinel in this topology")?;
                let server = s.servers.iter().find(|r| r.port() == old).ok_or("gone")?;
                server.restart().map_err(|e| e.to_string())?;
                // Back as a replica before the next failover needs one.
                let deadline = Instant::now() + Duration::from_secs(30);
                while s.replicas() < 1 {
                    if Instant::now() > deadline {
                        return Err("the old primary never rejoined as a replica".into());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                // The instances decide on the new primary again (not only
                // in their local fallback): its script calls go up.
                let now = s.primary().ok_or("the sentinel names no primary")?;
                let primary = s
                    .servers
                    .iter()
                    .find(|r| r.port() == now)
                    .ok_or("the sentinel names a primary this run did not start")?;
                let before = script_calls(primary);
                let deadline = Instant::now() + Duration::from_secs(10);
                while script_calls(primary) <= before {
                    if Instant::now() > deadline {
                        return Err("the instances did not follow the new primary".into());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(())
            })
            .await?;
            return Ok(Some(took));
        }
        Fault::RedisKilled => {
            let t = topology.clone();
            blocking(move || t.blocking_lock().data.kill())
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::sleep(length).await;
            let t = topology.clone();
            blocking(move || t.blocking_lock().data.restart())
                .await
                .map_err(|e| e.to_string())?;
        }
        Fault::RedisPaused => {
            topology
                .lock()
                .await
                .data
                .pause()
                .map_err(|e| e.to_string())?;
            tokio::time::sleep(length).await;
            topology
                .lock()
                .await
                .data
                .resume()
                .map_err(|e| e.to_string())?;
        }
        Fault::SlowThenPartition => {
            {
                let t = topology.lock().await;
                for p in &t.proxies {
                    p.set_latency(Duration::from_millis(200));
                }
            }
            tokio::time::sleep(length / 2).await;
            {
                let t = topology.lock().await;
                for p in &t.proxies {
                    p.set_latency(Duration::ZERO);
                }
                t.proxies[0].cut();
            }
            tokio::time::sleep(length / 2).await;
            topology.lock().await.proxies[0].restore();
        }
        Fault::RedisOutOfMemory => {
            let t = topology.clone();
            blocking(move || {
                let t = t.blocking_lock();
                t.data
                    .command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])?;
                t.data.command(&["CONFIG", "SET", "maxmemory", "1"])
            })
            .await
            .map_err(|e| e.to_string())?;
            tokio::time::sleep(length).await;
            let t = topology.clone();
            blocking(move || {
                t.blocking_lock()
                    .data
                    .command(&["CONFIG", "SET", "maxmemory", "0"])
            })
            .await
            .map_err(|e| e.to_string())?;
        }
        Fault::InstanceKilled => {
            topology.lock().await.instances[1].kill();
            tokio::time::sleep(length).await;
            topology.lock().await.instances[1].restart().await?;
        }
        Fault::SpinningPlugin => {
            control
                .install_plugin(
                    "spinner",
                    &spinner(),
                    cog_control::PluginSpec {
                        attach: cog_control::Attach {
                            tenants: vec![victim.to_owned()],
                            plans: vec![],
                        },
                        limits: Some(cog_control::PluginLimits {
                            fuel: Some(u64::MAX / 2),
                            memory_bytes: None,
                            deadline: Some(cog_control::Window(Duration::from_millis(30))),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::sleep(length).await;
            control
                .delete_plugin("spinner")
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(None)
}
