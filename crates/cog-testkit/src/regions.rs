//! Regions on one machine: real redis-servers, every link between two of
//! them through a [`Proxy`] that adds latency and can be cut.

use std::time::Duration;

use crate::{Error, Proxy, RedisServer};

/// `n` regions, each a real redis-server, and a proxy for every directed
/// link between two regions (`from`'s clients reach `to`'s Redis through
/// it).
///
/// ```no_run
/// # async fn run() -> Result<(), cog_testkit::Error> {
/// use cog_testkit::Regions;
///
/// let regions = Regions::start(3, Regions::one_forty_eighty).await?;
/// let local = regions.url(0); // eu's own Redis
/// let far = regions.link_url(0, 2); // ap's Redis, 40 ms away
/// regions.isolate(2, true); // ap cut off, both ways
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Regions {
    servers: Vec<RedisServer>,
    /// links[from][to]
    links: Vec<Vec<Option<Proxy>>>,
}

impl Regions {
    /// Starts `n` servers and the links between them, `latency(from, to)`
    /// added each way.
    ///
    /// # Errors
    /// A server or a proxy did not start.
    pub async fn start(
        n: usize,
        latency: impl Fn(usize, usize) -> Duration,
    ) -> Result<Self, Error> {
        let servers: Vec<RedisServer> = (0..n)
            .map(|_| RedisServer::start())
            .collect::<Result<_, _>>()?;
        let mut links = Vec::new();
        for from in 0..n {
            let mut row = Vec::new();
            for (to, server) in servers.iter().enumerate() {
                if from == to {
                    row.push(None);
                    continue;
                }
                let p = Proxy::start(server.url().trim_start_matches("redis://")).await?;
                p.set_latency(latency(from, to));
                row.push(Some(p));
            }
            links.push(row);
        }
        Ok(Regions { servers, links })
    }

    /// Three regions 1 ms (0–1), 40 ms (0–2) and 80 ms (1–2) apart.
    pub fn one_forty_eighty(from: usize, to: usize) -> Duration {
        match (from.min(to), from.max(to)) {
            (0, 1) => Duration::from_millis(1),
            (0, 2) => Duration::from_millis(40),
            _ => Duration::from_millis(80),
        }
    }

    /// How many regions.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Region `region`'s own Redis, directly.
    pub fn url(&self, region: usize) -> String {
        self.servers[region].url()
    }

    /// Region `to`'s Redis as region `from` reaches it (through the link).
    pub fn link_url(&self, from: usize, to: usize) -> String {
        self.link(from, to).redis_url()
    }

    /// The link from `from` to `to`.
    ///
    /// # Panics
    /// When `from == to`: a region reaches its own Redis directly.
    pub fn link(&self, from: usize, to: usize) -> &Proxy {
        self.links[from][to]
            .as_ref()
            .expect("a region reaches its own Redis directly")
    }

    /// The server of region `region`.
    pub fn server(&self, region: usize) -> &RedisServer {
        &self.servers[region]
    }

    /// Cuts (or restores) every link to and from `region`.
    pub fn isolate(&self, region: usize, cut: bool) {
        for (from, row) in self.links.iter().enumerate() {
            for (to, p) in row.iter().enumerate() {
                if let Some(p) = p
                    && (from == region || to == region)
                {
                    if cut {
                        p.cut();
                    } else {
                        p.restore();
                    }
                }
            }
        }
    }
}
