//! The OTLP receiver, fed over both transports with the official protobuf
//! types.

use std::time::Duration;

use bytes::Bytes;
use cog_testkit::{OtlpReceiver, Transport};
use http_body_util::Full;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn request(name: &str) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "svc")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans: vec![Span {
                    trace_id: vec![0xab; 16],
                    span_id: vec![0x01; 8],
                    name: name.into(),
                    attributes: vec![kv("http.route", "/items/{id}")],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[tokio::test]
async fn receives_over_grpc_and_http_protobuf() {
    let receiver = OtlpReceiver::start().await.unwrap();

    let mut grpc = TraceServiceClient::connect(receiver.grpc_endpoint())
        .await
        .unwrap();
    grpc.export(request("over-grpc")).await.unwrap();

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let post = |content_type: &'static str, body: Vec<u8>| {
        hyper::Request::post(format!("{}/v1/traces", receiver.http_endpoint()))
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let ok = client
        .request(post(
            "application/x-protobuf",
            request("over-http").encode_to_vec(),
        ))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // Garbage and the wrong media type are refused, and record nothing.
    let bad = client
        .request(post("application/x-protobuf", vec![0xff; 9]))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let json = client
        .request(post("application/json", b"{}".to_vec()))
        .await
        .unwrap();
    assert_eq!(json.status(), 415);

    let spans = receiver.wait_for_spans(2, Duration::from_secs(5)).await;
    assert_eq!(spans.len(), 2);
    assert_eq!(receiver.requests(), 2);
    let grpc_span = spans
        .iter()
        .find(|s| s.transport == Transport::Grpc)
        .unwrap();
    assert_eq!(grpc_span.name(), "over-grpc");
    assert_eq!(grpc_span.attr("http.route").as_deref(), Some("/items/{id}"));
    assert_eq!(
        grpc_span.resource_attr("service.name").as_deref(),
        Some("svc")
    );
    assert_eq!(grpc_span.trace_id(), "ab".repeat(16));
    assert_eq!(grpc_span.parent_span_id(), "");
    let http_span = spans
        .iter()
        .find(|s| s.transport == Transport::HttpProtobuf)
        .unwrap();
    assert_eq!(http_span.name(), "over-http");
}
