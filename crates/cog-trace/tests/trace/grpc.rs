//! gRPC over a real tonic server and client: rpc.* attributes and the
//! status read from the trailers or from a trailers-only answer.

use cog_testkit::OtlpReceiver;
use cog_trace::server::TraceLayer;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use crate::support::{config, spans};

/// Answers by the number of resource spans sent: 0 → OK, 1 → UNAVAILABLE,
/// otherwise INVALID_ARGUMENT.
struct App;

#[tonic::async_trait]
impl TraceService for App {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        match request.into_inner().resource_spans.len() {
            0 => Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: None,
            })),
            1 => Err(tonic::Status::unavailable("try later")),
            _ => Err(tonic::Status::invalid_argument("no")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_get_rpc_attributes_and_status_mapping() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = config(&receiver, true, &[]).build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .layer(TraceLayer::from_guard(&guard))
        .add_service(TraceServiceServer::new(App))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(server);

    let mut client = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let req = |n: usize| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans::default(); n],
    };
    let ok = client.export(req(0)).await.unwrap();
    // The server span's traceparent rides in the response metadata.
    assert!(ok.metadata().get("traceparent").is_some());
    let unavailable = client.export(req(1)).await.unwrap_err();
    assert_eq!(unavailable.code(), tonic::Code::Unavailable);
    let invalid = client.export(req(2)).await.unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);

    let got = spans(&guard, &receiver, 3).await;
    server.abort();
    assert_eq!(got.len(), 3);
    let by_code = |code: &str| {
        got.iter()
            .find(|s| s.attr("rpc.grpc.status_code").as_deref() == Some(code))
            .unwrap_or_else(|| panic!("no span with grpc status {code}"))
    };
    for s in &got {
        assert_eq!(
            s.name(),
            "opentelemetry.proto.collector.trace.v1.TraceService/Export"
        );
        assert_eq!(s.span.kind, 2, "SPAN_KIND_SERVER");
        assert_eq!(s.attr("rpc.system").as_deref(), Some("grpc"));
        assert_eq!(
            s.attr("rpc.service").as_deref(),
            Some("opentelemetry.proto.collector.trace.v1.TraceService")
        );
        assert_eq!(s.attr("rpc.method").as_deref(), Some("Export"));
        assert_eq!(s.attr("http.response.status_code").as_deref(), Some("200"));
    }
    // OK (from the trailers): unset.
    assert_eq!(by_code("0").span.status.as_ref().map_or(0, |st| st.code), 0);
    // UNAVAILABLE (trailers-only): the server failed → error.
    let failed = by_code("14");
    assert_eq!(failed.span.status.as_ref().unwrap().code, 2);
    assert_eq!(failed.attr("error.type").as_deref(), Some("14"));
    // INVALID_ARGUMENT: the client's mistake → unset.
    assert_eq!(by_code("3").span.status.as_ref().map_or(0, |st| st.code), 0);
}
