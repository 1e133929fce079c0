//! gRPC over the server layer: recognising a call, and ending its span
//! with the status from the trailers.

use http::request::Parts;
use http::{HeaderMap, Method, header};
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};

/// `(rpc.service, rpc.method)` of a gRPC request: `content-type:
/// application/grpc…` and a `/package.Service/Method` path.
pub(super) fn grpc_call(parts: &Parts) -> Option<(&str, &str)> {
    if parts.method != Method::POST {
        return None;
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE)?.as_bytes();
    if !content_type.starts_with(b"application/grpc") {
        return None;
    }
    let (service, method) = parts.uri.path().strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// How a gRPC call ended.
pub(super) enum GrpcEnd {
    /// `grpc-status` as sent (`None` when it is not a number).
    Status(Option<u32>),
    /// The body ended without trailers.
    NoStatus,
    /// The body failed.
    BodyError,
}

pub(super) fn grpc_status(headers: &HeaderMap) -> GrpcEnd {
    GrpcEnd::Status(
        headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()),
    )
}

/// Records `rpc.grpc.status_code` and ends the span. For a server, the
/// codes that mean the server failed (UNKNOWN, DEADLINE_EXCEEDED,
/// UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS) set the status to
/// error; the others (a client's mistake, or OK) leave it unset.
pub(super) fn end_grpc(cx: &Context, how: GrpcEnd) {
    let span = cx.span();
    if span.is_recording() {
        match how {
            GrpcEnd::Status(Some(code)) => {
                span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
                if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
                    span.set_attribute(KeyValue::new("error.type", code.to_string()));
                    span.set_status(Status::error(""));
                }
            }
            GrpcEnd::Status(None) | GrpcEnd::NoStatus => {
                span.set_attribute(KeyValue::new("error.type", "_OTHER"));
                span.set_status(Status::error("the call ended without a valid grpc-status"));
            }
            GrpcEnd::BodyError => {
                span.set_attribute(KeyValue::new("error.type", "_OTHER"));
                span.set_status(Status::error("the response body failed"));
            }
        }
    }
    end(&span);
}

/// Ends a recording span (ending one that does not record would only read
/// the clock).
fn end(span: &opentelemetry::trace::SpanRef<'_>) {
    if span.is_recording() {
        span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, path: &str, content_type: Option<&str>) -> Parts {
        let mut b = http::Request::builder().method(method).uri(path);
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(()).unwrap().into_parts().0
    }

    /// A gRPC call is a POST of `application/grpc…` to
    /// `/service/method`, both parts non-empty, nothing after them.
    #[test]
    fn what_a_grpc_call_is() {
        let grpc = Some("application/grpc+proto");
        let p = parts(Method::POST, "/pkg.Svc/Get", grpc);
        assert_eq!(grpc_call(&p), Some(("pkg.Svc", "Get")));
        for (method, path, ct) in [
            (Method::GET, "/pkg.Svc/Get", grpc),
            (Method::POST, "/pkg.Svc/Get", Some("application/json")),
            (Method::POST, "/pkg.Svc/Get", None),
            (Method::POST, "//Get", grpc),
            (Method::POST, "/pkg.Svc/", grpc),
            (Method::POST, "/pkg.Svc/Get/more", grpc),
            (Method::POST, "/pkg.Svc", grpc),
        ] {
            let p = parts(method.clone(), path, ct);
            assert_eq!(grpc_call(&p), None, "{method} {path} {ct:?}");
        }
    }
}
