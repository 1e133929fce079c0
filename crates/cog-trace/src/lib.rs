//! OpenTelemetry tracing for tower services.
//!
//! - [`TraceLayer`](server::TraceLayer): one server span per request, named `{method}
//!   {route}`, kind server, with the stable HTTP semantic-convention
//!   attributes (`http.request.method`, `url.path`, `url.scheme`,
//!   `url.query` with values redacted, `http.route`,
//!   `http.response.status_code`, `server.address`, `server.port`,
//!   `client.address`, `user_agent.original`, `network.protocol.version`,
//!   body sizes, `error.type`). 5xx and service errors set the span status
//!   to error; 4xx leave it unset. The server span's `traceparent` is
//!   written into the response (none when tracing is disabled: there is no
//!   server span, and the caller's own would only be echoed).
//! - gRPC (tonic): a request with `content-type: application/grpc…` gets a
//!   span named `{rpc.service}/{rpc.method}` with `rpc.system`,
//!   `rpc.service`, `rpc.method` and `rpc.grpc.status_code` (read from the
//!   trailers, or from the headers of a trailers-only answer); the codes
//!   that mean the server failed set the status to error.
//! - Context: W3C `traceparent` / `tracestate` / `baggage` are extracted
//!   with the configured propagators. Malformed, repeated or oversized
//!   fields start a fresh trace — never an error. A public endpoint links
//!   to an incoming context instead of joining it.
//! - Cheap when unsampled: the sampler decides on the span name and two
//!   attributes; all other attributes are built only for recording spans.
//! - The span is the current OpenTelemetry context while the inner service
//!   runs, so `tracing` spans created in handlers (through
//!   `tracing-opentelemetry`) become its children.
//! - Metrics: `http.server.request.duration` (histogram, seconds) and
//!   `http.server.active_requests`, through the global OpenTelemetry meter
//!   provider as it is when the layer is built. Install the provider
//!   first; with none installed (the API's no-op provider), the layer
//!   skips metrics entirely — no clock read, no attributes.
//! - [`ClientTraceLayer`](client::ClientTraceLayer): a client span per outgoing request, child of
//!   the current context, whose context is injected into the request.
//! - [`init`]: the SDK from the standard `OTEL_*` variables (see
//!   [`TraceConfig`]), OTLP over gRPC or HTTP/protobuf; the returned
//!   [`TraceGuard`] flushes every ended span when dropped.
//!
//! - Route: with axum, add the layer with `Router::layer` and spans are
//!   named `{method} {route}` (`POST /v1/complete`) and metrics carry
//!   `http.route`, from axum's `MatchedPath` (feature `axum`, default).
//!   Other routers insert a [`MatchedRoute`] extension, or pass
//!   [`TraceLayer::route_with`](server::TraceLayer::route_with).
//! - Inside a sampled request, cog's other crates add internal spans
//!   (`ratelimit.decide`, `cache.lookup`, `plugin.call`) and a client span
//!   per Redis call (`db.system.name = "redis"`, `db.operation.name`,
//!   `server.address`, `server.port`), from the global tracer provider
//!   that [`init`] installs. Steps that stay in process — an L1 cache
//!   hit, an in-memory limiter decision — take under a microsecond and get
//!   no span of their own (one would cost more than the step). Unsampled
//!   requests open nothing.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let _guard = cog_trace::init()?; // OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_ENDPOINT, …
//! let layer = cog_trace::server::TraceLayer::new().filter(|parts| parts.uri.path() != "/healthz");
//! // axum: Router::new().route("/items/{id}", get(item)).layer(layer)
//! //   → spans named `GET /items/{id}`
//! # let _ = layer; Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod attributes;
pub mod client;
mod console;
mod init;
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub mod prometheus;
mod propagation;
pub mod server;

pub use cog_core::peer::PeerAddr;
pub use cog_core::route::MatchedRoute;
pub use init::{Exporter, InitError, SamplerKind, TraceConfig, TraceGuard, init};

/// The README's examples, compiled as doctests so that they keep up
/// with the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
