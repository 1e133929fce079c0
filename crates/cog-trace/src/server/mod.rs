//! The server middleware: one span (and the HTTP server metrics) per
//! request. [`TraceLayer`] builds it; see the [crate docs](crate) for the
//! attributes, propagation and metrics.

mod active;
mod body;
mod future;
mod grpc;
mod layer;
mod metrics;
mod service;
mod shared;

// Split as tower-http's `trace/`: the builder (layer), the service and how
// a span starts (service), the response future and body, request metrics
// and gRPC status handling.

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::TraceLayer;
pub use service::Trace;
