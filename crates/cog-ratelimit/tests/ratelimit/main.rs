//! cog-ratelimit against real Redis servers and clusters, and the tower
//! layer end to end.

mod cluster;
mod differential;
mod failure;
mod layer;
mod leased;
mod memory;
mod placed;
mod redis;
mod region;
mod support;
