//! What the run starts on loopback: the data Redis (limits, cache, plugin
//! KV — the one faults are done to), the control-plane Redis (append-only,
//! `fsync` on every write), one fault-injecting proxy per instance in
//! front of the data Redis, and the demo instances as child processes.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cog_testkit::{Proxy, RedisServer};

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

/// Everything the run drives.
#[derive(Debug)]
pub(crate) struct Topology {
    pub(crate) data: RedisServer,
    pub(crate) control: RedisServer,
    pub(crate) proxies: Vec<Proxy>,
    pub(crate) instances: Vec<Instance>,
}

impl Topology {
    /// Redis, the proxies, and `n` instances, each answering.
    pub(crate) async fn start(n: usize, python: Option<&str>) -> Result<Topology, String> {
        let data = RedisServer::start().map_err(|e| format!("data Redis: {e}"))?;
        let control =
            RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"])
                .map_err(|e| format!("control Redis: {e}"))?;
        let mut proxies = Vec::new();
        let mut instances = Vec::new();
        for _ in 0..n {
            let proxy = Proxy::start(&data.addr())
                .await
                .map_err(|e| format!("proxy: {e}"))?;
            let addr = free_addr()?;
            let mut env = vec![
                ("COG_LISTEN".to_owned(), addr.to_string()),
                ("COG_REDIS_URL".to_owned(), proxy.redis_url()),
                ("COG_CONTROL_URL".to_owned(), control.url()),
                ("COG_DEMO_INSTANCES".to_owned(), n.to_string()),
                ("COG_DEMO_UPSTREAM_MS".to_owned(), "20".to_owned()),
                ("OTEL_SDK_DISABLED".to_owned(), "true".to_owned()),
                ("OTEL_TRACES_EXPORTER".to_owned(), "none".to_owned()),
                ("OTEL_METRICS_EXPORTER".to_owned(), "none".to_owned()),
            ];
            if let Some(p) = python {
                env.push(("COG_PYTHON_WASI".to_owned(), p.to_owned()));
            }
            proxies.push(proxy);
            instances.push(Instance {
                addr,
                env,
                child: None,
            });
        }
        let mut t = Topology {
            data,
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
