//! cog-trace against a real OTLP receiver, over gRPC and HTTP/protobuf.

mod malformed;
mod server;
mod support;
