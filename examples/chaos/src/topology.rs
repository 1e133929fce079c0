//! What the run starts on loopback: the data Redis (limits, cache, plugin
//! KV — the one faults are done to), the control-plane Redis (append-only,
//! `fsync` on every write), one fault-injecting proxy per instance in
//! front of the data Redis, and the demo instances as child processes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cog_testkit::{Proxy, RedisCluster, RedisServer};

/// A demo instance: this binary run with `--instance`.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) addr: SocketAddr,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Instance {
    fn spawn(&mut self) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| format!("this binary: {e}"))?;
        let child = Command::new(exe)
            .arg("--instance")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting an instance: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// Its process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `SIGKILL`: no drain, no goodbye.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same address and waits until it answers.
    pub(crate) async fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.spawn()?;
            if ready(self.addr, Duration::from_secs(20)).await {
                return Ok(());
            }
            self.kill();
            if Instant::now() > deadline {
                return Err(format!("instance {} did not come back", self.addr));
            }
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `/healthz` answers within `within`.
pub(crate) async fn ready(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let req = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
            let mut buf = [0u8; 12];
            if s.write_all(req).await.is_ok()
                && s.read_exact(&mut buf).await.is_ok()
                && buf.starts_with(b"HTTP/1.1 200")
            {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn free_addr() -> Result<SocketAddr, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map_err(|e| e.to_string())
}

/// A Redis Sentinel watching a primary and its replica (`redis-server
/// --sentinel`, quorum 1, a primary down after 1 s).
#[derive(Debug)]
pub(crate) struct Sentinel {
    port: u16,
    /// The primary at the start, then its replica.
    pub(crate) servers: Vec<RedisServer>,
    child: Child,
    dir: PathBuf,
}

/// The service name the sentinel watches.
const SERVICE: &str = "cogdata";

impl Sentinel {
    fn start() -> Result<Sentinel, String> {
        let primary = RedisServer::start().map_err(|e| format!("primary: {e}"))?;
        let replica = RedisServer::start_with_args(&[
            "--replicaof",
            "127.0.0.1",
            &primary.port().to_string(),
        ])
        .map_err(|e| format!("replica: {e}"))?;
        let port = free_addr()?.port();
        let dir =
            std::env::temp_dir().join(format!("cog-chaos-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                 sentinel monitor {SERVICE} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {SERVICE} 1000\n\
                 sentinel failover-timeout {SERVICE} 5000\n\
                 sentinel parallel-syncs {SERVICE} 1\n",
                dir.display(),
                primary.port()
            ),
        )
        .map_err(|e| e.to_string())?;
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server --sentinel: {e}"))?;
        let s = Sentinel {
            port,
            servers: vec![primary, replica],
            child,
            dir,
        };
        // Ready once it names the primary and has seen its replica.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if s.primary() == Some(s.servers[0].port()) && s.replicas() >= 1 {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("the sentinel never saw the primary and its replica".into())
    }

    fn ask(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The port of the primary the sentinel names now.
    pub(crate) fn primary(&self) -> Option<u16> {
        let text = self.ask(&["SENTINEL", "get-master-addr-by-name", SERVICE])?;
        text.lines().nth(1)?.trim().parse().ok()
    }

    /// How many replicas the sentinel knows of and finds up.
    pub(crate) fn replicas(&self) -> usize {
        self.ask(&["SENTINEL", "replicas", SERVICE])
            .map(|t| t.lines().filter(|l| l.trim() == "slave").count())
            .unwrap_or(0)
    }

    /// The URL a client finds the primary by.
    fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName={SERVICE}",
            self.port
        )
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the instances keep limits, cache and plugin data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One Redis, reached through a fault-injecting proxy per instance.
    Single,
    /// A primary and a replica under Redis Sentinel.
    Sentinel,
    /// A Redis Cluster of three masters, each with a replica.
    Cluster,
}

/// Everything the run drives.
#[derive(Debug)]
pub(crate) struct Topology {
    /// The data Redis (`Single`).
    pub(crate) data: RedisServer,
    /// The primary, its replica and their sentinel (`Sentinel`).
    pub(crate) sentinel: Option<Sentinel>,
    /// Three masters and their replicas (`Cluster`).
    pub(crate) cluster: Option<RedisCluster>,
    pub(crate) control: RedisServer,
    pub(crate) proxies: Vec<Proxy>,
    pub(crate) instances: Vec<Instance>,
}

impl Topology {
    /// Redis as `shape` says, and `n` instances, each answering.
    pub(crate) async fn start(n: usize, shape: Shape) -> Result<Topology, String> {
        let data = RedisServer::start().map_err(|e| format!("data Redis: {e}"))?;
        let cluster = match shape {
            Shape::Cluster => Some(
                tokio::task::spawn_blocking(|| RedisCluster::start_with_replicas(3, 1))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("cluster: {e}"))?,
            ),
            _ => None,
        };
        let sentinel = match shape {
            Shape::Single | Shape::Cluster => None,
            Shape::Sentinel => Some(
                tokio::task::spawn_blocking(Sentinel::start)
                    .await
                    .map_err(|e| e.to_string())??,
            ),
        };
        let control =
            RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"])
                .map_err(|e| format!("control Redis: {e}"))?;
        let mut proxies = Vec::new();
        let mut instances = Vec::new();
        for _ in 0..n {
            let url = match (&sentinel, &cluster) {
                (Some(s), _) => s.url(),
                (_, Some(c)) => c.url(),
                (None, None) => {
                    let proxy = Proxy::start(&data.addr())
                        .await
                        .map_err(|e| format!("proxy: {e}"))?;
                    let url = proxy.redis_url();
                    proxies.push(proxy);
                    url
                }
            };
            let addr = free_addr()?;
            let env = vec![
                ("COG_LISTEN".to_owned(), addr.to_string()),
                ("COG_REDIS_URL".to_owned(), url),
                ("COG_CONTROL_URL".to_owned(), control.url()),
                ("COG_DEMO_INSTANCES".to_owned(), n.to_string()),
                ("COG_DEMO_UPSTREAM_MS".to_owned(), "20".to_owned()),
                ("OTEL_SDK_DISABLED".to_owned(), "true".to_owned()),
                ("OTEL_TRACES_EXPORTER".to_owned(), "none".to_owned()),
                ("OTEL_METRICS_EXPORTER".to_owned(), "none".to_owned()),
            ];
            instances.push(Instance {
                addr,
                env,
                child: None,
            });
        }
        let mut t = Topology {
            data,
            sentinel,
            cluster,
            control,
            proxies,
            instances,
        };
        for i in &mut t.instances {
            i.restart().await?;
        }
        Ok(t)
    }
}
