//! cog-control against real stores: the same suite on the file store and
//! on a real redis-server, then the live directory and its layers.

mod admin;
mod admin_ops;
mod directory;
mod plugins;
mod suite;
