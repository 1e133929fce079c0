//! Where the demo instances' Redis lives: one (from `COG_REDIS_URL`, or
//! none), three regions behind latency-adding links (`--regions`), or two
//! deployments tenants are placed on (`--deployments`) — the last two on
//! redis-servers this process starts.

use cog_testkit::{RedisServer, Regions};
use example_demo::app;

/// The regions' names, nearest first.
pub(crate) const REGIONS: [&str; 3] = ["eu", "us", "ap"];

/// The placement deployments' names.
pub(crate) const DEPLOYMENTS: [&str; 2] = ["d0", "d1"];

pub(crate) enum Topology {
    /// `COG_REDIS_URL` (or in memory).
    Single,
    /// Three redis-servers as regions; the control plane in `eu`.
    Regions(Regions),
    /// Two redis-servers as placement deployments; the control plane and
    /// invalidation messages on the first.
    Deployments(Vec<RedisServer>),
}

impl Topology {
    pub(crate) async fn start(regions: bool, deployments: bool) -> Result<Self, app::Error> {
        Ok(if regions {
            Topology::Regions(Regions::start(REGIONS.len(), Regions::one_forty_eighty).await?)
        } else if deployments {
            Topology::Deployments(vec![RedisServer::start()?, RedisServer::start()?])
        } else {
            Topology::Single
        })
    }

    /// Groups of instances: one per region, else one.
    pub(crate) fn groups(&self) -> usize {
        match self {
            Topology::Regions(_) => REGIONS.len(),
            _ => 1,
        }
    }

    /// The configuration of an instance of `group`.
    pub(crate) fn config(&self, base: &app::Config, group: usize) -> app::Config {
        match self {
            Topology::Single => base.clone(),
            Topology::Regions(r) => {
                let reach = |to: usize| {
                    if to == group {
                        r.url(group)
                    } else {
                        r.link_url(group, to)
                    }
                };
                app::Config {
                    redis_url: Some(r.url(group)),
                    control_url: Some(reach(0)),
                    region: Some(REGIONS[group].into()),
                    regions: (0..REGIONS.len())
                        .map(|i| (REGIONS[i].to_owned(), reach(i)))
                        .collect(),
                    region_sync: std::time::Duration::from_millis(250),
                    // The control plane is 40–80 ms away for two regions.
                    redis_timeout: std::time::Duration::from_millis(300),
                    ..base.clone()
                }
            }
            Topology::Deployments(servers) => app::Config {
                redis_url: Some(servers[0].url()),
                deployments: DEPLOYMENTS
                    .iter()
                    .zip(servers)
                    .map(|(n, s)| ((*n).to_owned(), s.url()))
                    .collect(),
                ..base.clone()
            },
        }
    }

    /// What the report calls the backends.
    pub(crate) fn describe(&self, base: &app::Config) -> String {
        match self {
            Topology::Single if base.redis_url.is_some() => "Redis".into(),
            Topology::Single => "in memory".into(),
            Topology::Regions(_) => {
                "3 regions (eu, us, ap; links 1/40/80 ms), global limits, control plane in eu"
                    .into()
            }
            Topology::Deployments(_) => "2 Redis deployments, tenants placed by partition".into(),
        }
    }
}
