//! Real `redis-server` processes for tests.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Error;
use crate::resp::{self, Reply};

const READY_TIMEOUT: Duration = Duration::from_secs(15);
const CMD_TIMEOUT: Duration = Duration::from_secs(5);

/// One real `redis-server` on a free loopback port, persistence off.
///
/// The process is killed when this value is dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    /// For a Sentinel: the port of the master it watches.
    sentinel_of: Option<u16>,
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    /// Starts a standalone server on a free port and waits until it answers
    /// `PING`.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(Vec::new(), false, None)
    }

    /// Like [`start`](Self::start), with more `redis-server` arguments
    /// (`["--dir", "/proc"]`, say); later arguments win over the defaults.
    pub fn start_with_args(args: &[&str]) -> Result<Self, Error> {
        Self::start_with(args.iter().map(|a| (*a).to_owned()).collect(), false, None)
    }

    fn start_with(
        extra_args: Vec<String>,
        cluster_bus: bool,
        sentinel_of: Option<u16>,
    ) -> Result<Self, Error> {
        ensure_installed()?;
        let mut last = None;
        // A free port can be taken between our probe and the server's bind:
        // retry on a fresh port rather than fail the test.
        for _ in 0..5 {
            let port = free_port(cluster_bus)?;
            let dir = tempfile::Builder::new()
                .prefix("cog-redis-")
                .tempdir()
                .map_err(Error::io("creating a temp dir for redis-server"))?;
            let server = RedisServer {
                port,
                dir,
                extra_args: extra_args.clone(),
                sentinel_of,
                child: Mutex::new(None),
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn spawn(&self) -> Result<(), Error> {
        let log = self.log_path();
        let mut command = Command::new("redis-server");
        if let Some(master) = self.sentinel_of {
            // A Sentinel needs a configuration file it can rewrite.
            let conf = self.dir.path().join("sentinel.conf");
            if !conf.exists() {
                std::fs::write(
                    &conf,
                    format!(
                        "sentinel monitor {SERVICE} 127.0.0.1 {master} 1\n\
                         sentinel down-after-milliseconds {SERVICE} 60000\n\
                         sentinel failover-timeout {SERVICE} 5000\n"
                    ),
                )
                .map_err(Error::io("writing sentinel.conf"))?;
            }
            command.arg(&conf).arg("--sentinel");
        }
        let child = command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Error::io("spawning redis-server"))?;
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&self) -> Result<(), Error> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.command(&["PING"]) {
                // Our server, not another test's that took the port first
                // (ours then exits with "address in use").
                Ok(Reply::Status(s)) if s == "PONG" && self.answering_is_ours() => return Ok(()),
                Ok(Reply::Status(s)) if s == "PONG" => {
                    self.kill_child();
                    return Err(Error::NotReady {
                        what: format!("redis-server on port {}", self.port),
                        secs: 0,
                        detail: "the port is served by another process".to_owned(),
                    });
                }
                // LOADING and friends: keep waiting.
                Ok(_) | Err(_) if Instant::now() < deadline => {}
                other => {
                    self.kill_child();
                    return Err(Error::NotReady {
                        what: format!("redis-server on port {}", self.port),
                        secs: READY_TIMEOUT.as_secs(),
                        detail: format!("{other:?}; log: {}", self.log_tail()),
                    });
                }
            }
            if self.exited() {
                return Err(Error::NotReady {
                    what: format!("redis-server on port {}", self.port),
                    secs: 0,
                    detail: format!("process exited; log: {}", self.log_tail()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answering on our port is the process we started.
    fn answering_is_ours(&self) -> bool {
        let Some(pid) = self.pid() else { return false };
        let info = self
            .command(&["INFO", "server"])
            .ok()
            .and_then(|r| r.as_text())
            .unwrap_or_default();
        info.lines()
            .filter_map(|l| l.strip_prefix("process_id:"))
            .any(|p| p.trim() == pid.to_string())
    }

    fn exited(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// The TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>`, for client libraries.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Makes ACL user `user` (its password: its name) able to use every
    /// key and command, and every pub/sub channel only when `channels` —
    /// for what a service does when Redis refuses it its channels. Called
    /// again, it changes the user: taking the channels away closes the
    /// user's subscribed connections (Redis 7). The URL that logs in as it.
    ///
    /// # Errors
    /// The server could not be reached or refused the command.
    pub fn acl_user(&self, user: &str, channels: bool) -> Result<String, Error> {
        let channels = if channels {
            "allchannels"
        } else {
            "resetchannels"
        };
        let password = format!(">{user}");
        self.command(&[
            "ACL", "SETUSER", user, "on", &password, "~*", "+@all", channels,
        ])?;
        Ok(format!("redis://{user}:{user}@127.0.0.1:{}", self.port))
    }

    /// The process id, while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Child::id)
    }

    /// Sends one command over a fresh connection and returns the reply.
    ///
    /// Uses a tiny built-in RESP client, so tests can set up or inspect
    /// state without going through the client under test.
    pub fn command(&self, args: &[&str]) -> Result<Reply, Error> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.command_bytes(&args)
    }

    /// Like [`command`](Self::command), with binary arguments.
    pub fn command_bytes(&self, args: &[&[u8]]) -> Result<Reply, Error> {
        resp::command(self.port, args, CMD_TIMEOUT)
            .map_err(Error::io(format!("redis command on port {}", self.port)))
    }

    /// `key`'s value, serialized by `DUMP` — a replica's copy, to put back
    /// with [`restore`](Self::restore) as a failover to it would.
    ///
    /// # Panics
    /// The server could not be reached, or `key` does not exist.
    pub fn dump(&self, key: &str) -> Vec<u8> {
        match self.command(&["DUMP", key]).unwrap() {
            Reply::Bulk(Some(bytes)) => bytes,
            other => panic!("DUMP {key}: {other:?}"),
        }
    }

    /// Puts back `key`'s value as [`dump`](Self::dump) gave it, replacing
    /// what is there (`RESTORE … REPLACE`, no expiry).
    ///
    /// # Panics
    /// The server could not be reached or refused.
    pub fn restore(&self, key: &str, dumped: &[u8]) {
        let reply = self
            .command_bytes(&[b"RESTORE", key.as_bytes(), b"0", dumped, b"REPLACE"])
            .unwrap();
        assert!(
            !matches!(reply, Reply::Error(_)),
            "RESTORE {key}: {reply:?}"
        );
    }

    /// How many times the server has answered `command` (lower case), as
    /// `INFO commandstats` counts — for tests of how many round trips of a
    /// kind something makes.
    ///
    /// # Panics
    /// The server could not be reached, or answered something else.
    pub fn calls(&self, command: &str) -> u64 {
        let Reply::Bulk(Some(info)) = self.command(&["INFO", "commandstats"]).unwrap() else {
            panic!("INFO answers a bulk string");
        };
        let field = format!("cmdstat_{command}:calls=");
        String::from_utf8(info)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(field.as_str()))
            .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
    }

    /// Sends one command on a thread of its own, for commands that do not
    /// answer soon (a script that never ends, a blocking pop). The reply,
    /// or the read timeout (5 s), is the thread's result.
    pub fn spawn_command(&self, args: &[&str]) -> std::thread::JoinHandle<Result<Reply, Error>> {
        let port = self.port;
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        std::thread::spawn(move || {
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            resp::command(port, &args, CMD_TIMEOUT)
                .map_err(Error::io(format!("redis command on port {port}")))
        })
    }

    /// Kills the server with `SIGKILL` (no shutdown, no goodbye to clients).
    /// The port stays reserved for [`restart`](Self::restart).
    pub fn kill(&self) -> Result<(), Error> {
        self.kill_child();
        Ok(())
    }

    fn kill_child(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut c) = child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server with `SIGSTOP`: connections stay open, nothing is
    /// answered — what a very slow or partitioned server looks like.
    pub fn pause(&self) -> Result<(), Error> {
        self.signal(Signal::SIGSTOP, "SIGSTOP")
    }

    /// Thaws a [paused](Self::pause) server with `SIGCONT`.
    pub fn resume(&self) -> Result<(), Error> {
        self.signal(Signal::SIGCONT, "SIGCONT")
    }

    fn signal(&self, sig: Signal, name: &'static str) -> Result<(), Error> {
        let pid = self.pid().ok_or_else(|| Error::Io {
            context: format!("{name}: redis-server on port {} is not running", self.port),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        kill(Pid::from_raw(pid as i32), sig).map_err(|source| Error::Signal {
            signal: name,
            pid,
            source,
        })
    }

    /// Starts the server again on the same port (killing it first if it
    /// still runs). Its data is gone: persistence is off.
    pub fn restart(&self) -> Result<(), Error> {
        self.kill_child();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                // The old socket may linger for a moment.
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill_child();
    }
}

/// The service name a [`RedisSentinel`] watches.
const SERVICE: &str = "mymaster";

/// A master, its replica, and one Sentinel watching them (service
/// `mymaster`, quorum 1), on loopback — what a
/// client behind Sentinel sees fail over.
#[derive(Debug)]
pub struct RedisSentinel {
    servers: [RedisServer; 2],
    sentinel: RedisServer,
}

impl RedisSentinel {
    /// Starts the three processes, and waits until the replica is in sync
    /// and the Sentinel knows it. The Sentinel fails over when told
    /// ([`failover`](Self::failover)), never on its own: a master is down
    /// only after a minute without answers, so a loaded test machine does
    /// not fail over behind a test's back.
    pub fn start() -> Result<Self, Error> {
        let master = RedisServer::start_with_args(&["--repl-diskless-sync-delay", "0"])?;
        let port = master.port().to_string();
        let replica = RedisServer::start_with_args(&[
            "--replicaof",
            "127.0.0.1",
            &port,
            "--repl-diskless-sync-delay",
            "0",
        ])?;
        let sentinel = RedisServer::start_with(Vec::new(), false, Some(master.port()))?;
        let this = RedisSentinel {
            servers: [master, replica],
            sentinel,
        };
        this.wait_for("the replica in sync and known to the Sentinel", || {
            let synced = this.servers[1]
                .command(&["INFO", "replication"])
                .ok()
                .and_then(|r| r.as_text())
                .is_some_and(|i| i.contains("master_link_status:up"));
            let known = matches!(
                this.sentinel.command(&["SENTINEL", "REPLICAS", SERVICE]),
                Ok(Reply::Array(Some(r))) if !r.is_empty()
            );
            synced && known
        })?;
        Ok(this)
    }

    /// `redis-sentinel://…?sentinelServiceName=mymaster`, as `fred`
    /// expects it.
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://{}/0?sentinelServiceName={SERVICE}",
            self.sentinel.addr()
        )
    }

    /// The Sentinel process.
    pub fn sentinel(&self) -> &RedisServer {
        &self.sentinel
    }

    /// The server the Sentinel names master now.
    pub fn master(&self) -> Result<&RedisServer, Error> {
        let port = self.master_port()?;
        self.servers
            .iter()
            .find(|s| s.port() == port)
            .ok_or_else(|| Error::NotReady {
                what: "the Sentinel's master".into(),
                secs: 0,
                detail: format!("port {port} is none of ours"),
            })
    }

    /// The replica of [`master`](Self::master).
    pub fn replica(&self) -> Result<&RedisServer, Error> {
        let port = self.master_port()?;
        Ok(self
            .servers
            .iter()
            .find(|s| s.port() != port)
            .expect("two servers"))
    }

    fn master_port(&self) -> Result<u16, Error> {
        match self
            .sentinel
            .command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE])?
        {
            Reply::Array(Some(addr)) if addr.len() == 2 => addr[1]
                .as_text()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| Error::NotReady {
                    what: "the Sentinel's master".into(),
                    secs: 0,
                    detail: format!("{addr:?}"),
                }),
            other => Err(Error::NotReady {
                what: "the Sentinel's master".into(),
                secs: 0,
                detail: format!("{other:?}"),
            }),
        }
    }

    /// Fails over (`SENTINEL FAILOVER`): the replica becomes master, the
    /// old master its replica. Returns once the new master takes writes
    /// and the old one follows it.
    pub fn failover(&self) -> Result<(), Error> {
        let (old, new) = (self.master()?.port(), self.replica()?.port());
        // Every write so far on the replica first: nothing is lost. (Not
        // `WAIT`: it counts only the writes of its own connection.)
        let offset = |server: &RedisServer, field: &str| {
            server
                .command(&["INFO", "replication"])
                .ok()
                .and_then(|r| r.as_text())
                .and_then(|info| {
                    info.lines()
                        .find_map(|l| l.strip_prefix(field)?.trim().parse::<u64>().ok())
                })
        };
        let written = offset(self.master()?, "master_repl_offset:").unwrap_or(0);
        let replica = self.replica()?;
        self.wait_for("the replica to take every write", || {
            offset(replica, "slave_repl_offset:").is_some_and(|o| o >= written)
        })?;
        // Refused (`NOGOODSLAVE`) until the Sentinel has the replica's
        // own report, some time after it learned of it.
        let mut refused = None;
        self.wait_for("the Sentinel to accept a failover", || {
            match self.sentinel.command(&["SENTINEL", "FAILOVER", SERVICE]) {
                Ok(Reply::Status(_)) => true,
                other => {
                    refused = Some(format!("{other:?}"));
                    false
                }
            }
        })
        .map_err(|_| Error::NotReady {
            what: "a Sentinel failover".into(),
            secs: READY_TIMEOUT.as_secs(),
            detail: refused.unwrap_or_default(),
        })?;
        let role = |port: u16| {
            self.servers
                .iter()
                .find(|s| s.port() == port)
                .and_then(|s| s.command(&["ROLE"]).ok())
                .and_then(|r| match r {
                    Reply::Array(Some(r)) => r.first().and_then(Reply::as_text),
                    _ => None,
                })
        };
        self.wait_for("the failover", || {
            self.master_port().ok() == Some(new) && role(new).as_deref() == Some("master")
        })?;
        // The Sentinel turns the old master into a replica when it next
        // looks at it (up to 10 s): do it now, as it would.
        let old_server = self.servers.iter().find(|s| s.port() == old);
        if let Some(server) = old_server {
            server.command(&["REPLICAOF", "127.0.0.1", &new.to_string()])?;
        }
        self.wait_for("the old master to follow", || {
            role(old).as_deref() == Some("slave")
        })
    }

    /// [`failover`](Self::failover) from async code: on a blocking thread,
    /// handing the set back once it is done.
    ///
    /// # Panics
    /// When the failover fails (this is a test kit).
    pub async fn failed_over(self) -> Self {
        tokio::task::spawn_blocking(move || {
            self.failover().expect("a Sentinel failover");
            self
        })
        .await
        .expect("the failover thread")
    }

    fn wait_for(&self, what: &str, mut done: impl FnMut() -> bool) -> Result<(), Error> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !done() {
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    what: what.to_owned(),
                    secs: READY_TIMEOUT.as_secs(),
                    detail: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// A real Redis Cluster of N masters on loopback, no replicas.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts a 3-master cluster and waits until every node reports
    /// `cluster_state:ok`.
    pub fn start() -> Result<Self, Error> {
        Self::start_with_masters(3)
    }

    /// Starts a cluster of `masters` nodes, the 16 384 slots spread evenly.
    pub fn start_with_masters(masters: usize) -> Result<Self, Error> {
        Self::start_with_replicas(masters, 0)
    }

    /// Starts a cluster of `masters` nodes, the slots spread evenly, each
    /// with `replicas` replicas (nodes `masters..`, replica `j` of master
    /// `i` at `masters + i * replicas + j`). A master that fails is
    /// replaced by one of its replicas after the node timeout (2 s).
    pub fn start_with_replicas(masters: usize, replicas: usize) -> Result<Self, Error> {
        assert!(masters > 0, "a cluster needs at least one master");
        let nodes = (0..masters * (1 + replicas))
            .map(|_| {
                RedisServer::start_with(
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                        // Replicas sync at once, not after 5 s.
                        "--repl-diskless-sync-delay",
                        "0",
                    ]
                    .map(String::from)
                    .to_vec(),
                    true,
                    None,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = RedisCluster { nodes };
        cluster.assign_slots(masters)?;
        cluster.wait_ok()?;
        cluster.attach_replicas(masters, replicas)?;
        Ok(cluster)
    }

    /// Makes the replica nodes replicate their masters, and waits until
    /// every master has its replicas in its view.
    fn attach_replicas(&self, masters: usize, replicas: usize) -> Result<(), Error> {
        for i in 0..masters {
            let id = self.nodes[i]
                .command(&["CLUSTER", "MYID"])?
                .as_text()
                .unwrap_or_default();
            for j in 0..replicas {
                let replica = &self.nodes[masters + i * replicas + j];
                let deadline = Instant::now() + Duration::from_secs(30);
                // The replica must have learnt of the master first.
                loop {
                    match replica.command(&["CLUSTER", "REPLICATE", &id])? {
                        Reply::Status(_) => break,
                        other if Instant::now() > deadline => {
                            return Err(Error::NotReady {
                                what: "redis cluster replica".into(),
                                secs: 30,
                                detail: format!("{other:?}"),
                            });
                        }
                        _ => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        // Seen as replicas, and synced: a replica that never had its
        // master's data cannot take over from it.
        let synced = |n: &RedisServer| {
            n.command(&["INFO", "replication"])
                .ok()
                .and_then(|r| r.as_text())
                .is_some_and(|t| t.contains("master_link_status:up"))
        };
        while self.replicas_up() < masters * replicas || !self.nodes[masters..].iter().all(synced) {
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    what: "redis cluster replicas".into(),
                    secs: 30,
                    detail: format!("{} of {} up", self.replicas_up(), masters * replicas),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// `CLUSTER NODES` as one live node sees it: (port, is a master, is
    /// failed) per node.
    fn view(&self) -> Vec<(u16, bool, bool)> {
        for node in &self.nodes {
            let Some(text) = node
                .command(&["CLUSTER", "NODES"])
                .ok()
                .and_then(|r| r.as_text())
            else {
                continue;
            };
            return text
                .lines()
                .filter_map(|l| {
                    let mut f = l.split(' ');
                    let addr = f.nth(1)?;
                    let flags = f.next()?;
                    let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
                    Some((port, flags.contains("master"), flags.contains("fail")))
                })
                .collect();
        }
        Vec::new()
    }

    /// Replicas the cluster sees up and connected to a master.
    fn replicas_up(&self) -> usize {
        self.view().iter().filter(|(_, m, f)| !m && !f).count()
    }

    /// The ports of the masters the cluster sees up.
    pub fn masters(&self) -> Vec<u16> {
        self.view()
            .into_iter()
            .filter(|(_, m, f)| *m && !f)
            .map(|(p, _, _)| p)
            .collect()
    }

    /// Whether every live node reports `cluster_state:ok`.
    pub fn is_ok(&self) -> bool {
        self.nodes.iter().all(|n| {
            n.command(&["CLUSTER", "INFO"])
                .ok()
                .and_then(|r| r.as_text())
                .is_none_or(|t| t.contains("cluster_state:ok"))
        })
    }

    fn assign_slots(&self, masters: usize) -> Result<(), Error> {
        let n = masters;
        for (i, node) in self.nodes[..masters].iter().enumerate() {
            let start = (16384 * i / n).to_string();
            let end = (16384 * (i + 1) / n - 1).to_string();
            expect_ok(node.command(&["CLUSTER", "ADDSLOTSRANGE", &start, &end])?)?;
        }
        let first = &self.nodes[0];
        for node in &self.nodes[1..] {
            expect_ok(first.command(&[
                "CLUSTER",
                "MEET",
                "127.0.0.1",
                &node.port().to_string(),
            ])?)?;
        }
        Ok(())
    }

    fn wait_ok(&self) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let want_nodes = format!("cluster_known_nodes:{}", self.nodes.len());
        loop {
            let mut last = String::new();
            let all_ok = self.nodes.iter().all(|node| {
                let info = node
                    .command(&["CLUSTER", "INFO"])
                    .ok()
                    .and_then(|r| r.as_text())
                    .unwrap_or_default();
                let ok = info.contains("cluster_state:ok") && info.contains(&want_nodes);
                if !ok {
                    last = info;
                }
                ok
            });
            if all_ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    what: "redis cluster".into(),
                    secs: 30,
                    detail: last.replace("\r\n", " "),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The cluster's nodes (each a master).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// [`RedisServer::acl_user`] on every node; the `redis-cluster://` URL
    /// that logs in as it.
    ///
    /// # Errors
    /// A node could not be reached or refused the command.
    pub fn acl_user(&self, user: &str, channels: bool) -> Result<String, Error> {
        for node in &self.nodes {
            node.acl_user(user, channels)?;
        }
        Ok(self.url().replacen(
            "redis-cluster://",
            &format!("redis-cluster://{user}:{user}@"),
            1,
        ))
    }

    /// A `redis-cluster://` URL naming every node, as `fred` expects it.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://{}", self.nodes[0].addr());
        for (i, node) in self.nodes[1..].iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str("node=");
            url.push_str(&node.addr());
        }
        url
    }
}

fn expect_ok(reply: Reply) -> Result<(), Error> {
    match reply {
        Reply::Status(_) => Ok(()),
        other => Err(Error::NotReady {
            what: "redis cluster setup".into(),
            secs: 0,
            detail: format!("{other:?}"),
        }),
    }
}

fn ensure_installed() -> Result<(), Error> {
    match Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotInstalled {
            program: "redis-server",
        }),
        Err(e) => Err(Error::io("running redis-server --version")(e)),
    }
}

/// A free loopback port; with `cluster_bus`, `port + 10000` is free too
/// (Redis Cluster's bus port).
fn free_port(cluster_bus: bool) -> Result<u16, Error> {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").map_err(Error::io("binding a probe port"))?;
        let port = l
            .local_addr()
            .map_err(Error::io("reading probe port"))?
            .port();
        if !cluster_bus {
            return Ok(port);
        }
        if port <= 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Io {
        context: "no free port pair for a cluster node".into(),
        source: std::io::ErrorKind::AddrInUse.into(),
    })
}
