//! cog-trace against a real OTLP receiver, over gRPC and HTTP/protobuf.

mod bridge;
mod client;
mod grpc;
mod malformed;
mod server;
mod support;
