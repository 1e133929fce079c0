//! cog-cache against real Redis servers: stampedes, invalidation, failover.

mod cluster;
mod http;
mod l1;
mod placed;
mod redis;
mod regions;
mod rfc9111;
mod streamed;
mod support;
