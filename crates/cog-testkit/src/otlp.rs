//! A real OTLP trace receiver, over gRPC and HTTP/protobuf.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot_free::Mutex;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::Error;

/// `std::sync::Mutex` that shrugs off poisoning (a panicking test thread
/// must not hide what the receiver got).
mod parking_lot_free {
    pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Self {
            Mutex(std::sync::Mutex::new(v))
        }

        pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// How a span reached the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/gRPC (`TraceService/Export`).
    Grpc,
    /// OTLP/HTTP with a protobuf body (`POST /v1/traces`).
    HttpProtobuf,
}

/// One span as received, with its resource and instrumentation scope.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The span, in the official OTLP protobuf type.
    pub span: Span,
    /// The resource attributes it was exported with.
    pub resource: Vec<KeyValue>,
    /// The instrumentation scope's name.
    pub scope: String,
    /// How it arrived.
    pub transport: Transport,
}

impl ReceivedSpan {
    /// The span's name.
    pub fn name(&self) -> &str {
        &self.span.name
    }

    /// A span attribute rendered as a string (ints, bools and doubles too).
    pub fn attr(&self, key: &str) -> Option<String> {
        find(&self.span.attributes, key)
    }

    /// A resource attribute rendered as a string.
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        find(&self.resource, key)
    }

    /// The trace id, lower-case hex.
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    /// The span id, lower-case hex.
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// The parent span id, lower-case hex (empty for a root span).
    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

fn find(attrs: &[KeyValue], key: &str) -> Option<String> {
    let value = attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    Some(render(value))
}

fn render(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    requests: usize,
    headers: Vec<hyper::HeaderMap>,
}

struct Shared {
    received: Mutex<Received>,
    arrived: Notify,
}

impl Shared {
    fn record(
        &self,
        req: ExportTraceServiceRequest,
        headers: hyper::HeaderMap,
        transport: Transport,
    ) {
        let mut r = self.received.lock();
        r.requests += 1;
        r.headers.push(headers);
        for rs in req.resource_spans {
            let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            for ss in rs.scope_spans {
                let scope = ss.scope.map(|s| s.name).unwrap_or_default();
                for span in ss.spans {
                    r.spans.push(ReceivedSpan {
                        span,
                        resource: resource.clone(),
                        scope: scope.clone(),
                        transport,
                    });
                }
            }
        }
        drop(r);
        self.arrived.notify_waiters();
    }
}

/// An OTLP trace receiver on two free loopback ports: gRPC and
/// HTTP/protobuf. It keeps every span it receives for assertions.
///
/// Needs a running tokio runtime; stops when dropped.
///
/// ```no_run
/// # async fn example() -> Result<(), cog_testkit::Error> {
/// let receiver = cog_testkit::OtlpReceiver::start().await?;
/// // point an exporter at receiver.grpc_endpoint() or receiver.http_endpoint()
/// let spans = receiver.wait_for_spans(1, std::time::Duration::from_secs(5)).await;
/// assert_eq!(spans[0].name(), "GET /items/{id}");
/// # Ok(()) }
/// ```
pub struct OtlpReceiver {
    grpc: SocketAddr,
    http: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for OtlpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpReceiver")
            .field("grpc", &self.grpc)
            .field("http", &self.http)
            .field("spans", &self.shared.received.lock().spans.len())
            .finish()
    }
}

struct Grpc(Arc<Shared>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request.metadata().clone().into_headers();
        self.0
            .record(request.into_inner(), headers, Transport::Grpc);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl OtlpReceiver {
    /// Starts both servers.
    pub async fn start() -> Result<Self, Error> {
        let shared = Arc::new(Shared {
            received: Mutex::new(Received::default()),
            arrived: Notify::new(),
        });
        let grpc_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::io("binding the OTLP/gRPC receiver"))?;
        let http_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::io("binding the OTLP/HTTP receiver"))?;
        let grpc = grpc_listener
            .local_addr()
            .map_err(Error::io("OTLP/gRPC address"))?;
        let http = http_listener
            .local_addr()
            .map_err(Error::io("OTLP/HTTP address"))?;

        let service = TraceServiceServer::new(Grpc(shared.clone()));
        let grpc_task = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        let http_task = tokio::spawn(serve_http(http_listener, shared.clone()));
        Ok(OtlpReceiver {
            grpc,
            http,
            shared,
            tasks: vec![grpc_task, http_task],
        })
    }

    /// `http://127.0.0.1:<port>` of the gRPC server.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `http://127.0.0.1:<port>` of the HTTP server (traces go to
    /// `/v1/traces` below it, as OTLP/HTTP exporters append).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.received.lock().spans.clone()
    }

    /// How many export requests arrived (over both transports).
    pub fn requests(&self) -> usize {
        self.shared.received.lock().requests
    }

    /// The headers (gRPC metadata) of every export request, in arrival
    /// order.
    pub fn request_headers(&self) -> Vec<hyper::HeaderMap> {
        self.shared.received.lock().headers.clone()
    }

    /// Waits until at least `n` spans have arrived or `timeout` passes,
    /// and returns what arrived.
    pub async fn wait_for_spans(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            let spans = self.spans();
            if spans.len() >= n || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve_http(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle_http(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle_http(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = |s: StatusCode| {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = s;
        Ok(r)
    };
    if req.method() != hyper::Method::POST || req.uri().path() != "/v1/traces" {
        return status(StatusCode::NOT_FOUND);
    }
    let protobuf = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-protobuf"));
    if !protobuf {
        return status(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await else {
        return status(StatusCode::BAD_REQUEST);
    };
    match ExportTraceServiceRequest::decode(body.to_bytes()) {
        Ok(export) => {
            shared.record(export, parts.headers, Transport::HttpProtobuf);
            let reply = ExportTraceServiceResponse {
                partial_success: None,
            }
            .encode_to_vec();
            let mut r = Response::new(Full::new(Bytes::from(reply)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/x-protobuf"),
            );
            Ok(r)
        }
        Err(_) => status(StatusCode::BAD_REQUEST),
    }
}
