//! The server layer: one span per request. Split as tower-http's
//! `trace/`: the builder ([`layer`]), the service and how a span starts
//! ([`service`]), the response future ([`future`]) and body ([`body`]),
//! request metrics ([`metrics`]) and gRPC status handling ([`grpc`]).

mod body;
mod future;
mod grpc;
mod layer;
mod metrics;
mod service;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::TraceLayer;
pub use service::Trace;
