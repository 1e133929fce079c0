//! Client layer → server layer: one trace across two services.

use std::convert::Infallible;

use cog_testkit::OtlpReceiver;
use cog_trace::client::ClientTraceLayer;
use cog_trace::server::TraceLayer;
use http::{Request, Response, StatusCode};
use opentelemetry::trace::FutureExt as _;
use tower::{Layer, ServiceExt, service_fn};

use crate::support::{Body, config, spans};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_span_parents_the_downstream_server_span() {
    let receiver = OtlpReceiver::start().await.unwrap();
    // Two services, each with its own pipeline, exporting to one receiver.
    let downstream_guard = config(&receiver, true, &[("OTEL_SERVICE_NAME", "downstream")])
        .build()
        .unwrap();
    let upstream_guard = config(&receiver, false, &[("OTEL_SERVICE_NAME", "upstream")])
        .build()
        .unwrap();
    let downstream = TraceLayer::from_guard(&downstream_guard).layer(service_fn(
        |req: Request<Body>| async move {
            let status = if req.uri().path() == "/missing" {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            };
            let mut res = Response::new(Body::from("down"));
            *res.status_mut() = status;
            Ok::<_, Infallible>(res)
        },
    ));
    // The upstream's outgoing client, calling the downstream service.
    let client = ClientTraceLayer::from_guard(&upstream_guard).layer(downstream.clone());
    let upstream =
        TraceLayer::from_guard(&upstream_guard).layer(service_fn(move |_req: Request<Body>| {
            let client = client.clone();
            async move {
                let out =
                    Request::get("http://svc:p4ss@downstream.internal:9000/v1/thing?token=s3cret")
                        .body(Body::default())
                        .unwrap();
                let res = client.clone().oneshot(out).await.unwrap();
                let missing = Request::get("http://downstream.internal:9000/missing")
                    .body(Body::default())
                    .unwrap();
                let _ = client.oneshot(missing).await.unwrap();
                Ok::<_, Infallible>(res)
            }
        }));
    let res = upstream
        .oneshot(Request::get("/start").body(Body::default()).unwrap())
        .with_current_context()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Flush both pipelines, then read everything the receiver got.
    spans(&upstream_guard, &receiver, 0).await;
    let got = spans(&downstream_guard, &receiver, 5).await;
    assert_eq!(
        got.len(),
        5,
        "{:#?}",
        got.iter().map(|s| s.name()).collect::<Vec<_>>()
    );
    let by = |service: &str, kind: i32| {
        got.iter()
            .filter(|s| {
                s.resource_attr("service.name").as_deref() == Some(service) && s.span.kind == kind
            })
            .collect::<Vec<_>>()
    };
    let (server_up, clients, servers_down) =
        (by("upstream", 2), by("upstream", 3), by("downstream", 2));
    assert_eq!(
        (server_up.len(), clients.len(), servers_down.len()),
        (1, 2, 2)
    );
    let root = server_up[0];
    for c in &clients {
        assert_eq!(c.trace_id(), root.trace_id());
        assert_eq!(c.parent_span_id(), root.span_id());
        assert_eq!(c.name(), "GET");
        assert_eq!(
            c.attr("server.address").as_deref(),
            Some("downstream.internal")
        );
        assert_eq!(c.attr("server.port").as_deref(), Some("9000"));
    }
    let ok_client = clients
        .iter()
        .find(|c| c.attr("http.response.status_code").as_deref() == Some("200"))
        .unwrap();
    assert_eq!(
        ok_client.attr("url.full").as_deref(),
        Some("http://REDACTED:REDACTED@downstream.internal:9000/v1/thing?token=REDACTED")
    );
    // Neither the URI's password nor the query's token is in any span.
    for s in &got {
        let shown = format!("{:?}", s.span);
        assert!(
            !shown.contains("p4ss") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
    let missing_client = clients
        .iter()
        .find(|c| c.attr("http.response.status_code").as_deref() == Some("404"))
        .unwrap();
    assert_eq!(
        missing_client.span.status.as_ref().unwrap().code,
        2,
        "404 is an error for a client"
    );
    for s in &servers_down {
        assert_eq!(s.trace_id(), root.trace_id());
        assert!(clients.iter().any(|c| c.span_id() == s.parent_span_id()));
    }
    let missing_server = servers_down
        .iter()
        .find(|s| s.attr("http.response.status_code").as_deref() == Some("404"))
        .unwrap();
    assert_eq!(
        missing_server.span.status.as_ref().map_or(0, |st| st.code),
        0,
        "404 leaves a server span unset"
    );
}

/// W3C baggage sent to the first service reaches the handler's context
/// and, through the client layer, the next service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baggage_flows_through_both_services() {
    use opentelemetry::baggage::BaggageExt as _;
    use std::sync::{Arc, Mutex};

    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = config(&receiver, true, &[]).build().unwrap();
    // (the `baggage` header downstream got, the tenant its context held)
    type Seen = Vec<(String, Option<String>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let record = seen.clone();
    let downstream = TraceLayer::from_guard(&guard).layer(service_fn(move |req: Request<Body>| {
        let tenant = opentelemetry::Context::current()
            .baggage()
            .get("tenant")
            .map(|v| v.to_string());
        let header = req
            .headers()
            .get("baggage")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        record.lock().unwrap().push((header, tenant));
        async { Ok::<_, Infallible>(Response::new(Body::from("down"))) }
    }));
    let client = ClientTraceLayer::from_guard(&guard).layer(downstream);
    let upstream = TraceLayer::from_guard(&guard).layer(service_fn(move |_req: Request<Body>| {
        let client = client.clone();
        let tenant = opentelemetry::Context::current()
            .baggage()
            .get("tenant")
            .map(|v| v.to_string());
        async move {
            assert_eq!(tenant.as_deref(), Some("acme"), "upstream handler");
            let out = Request::get("http://down/x").body(Body::default()).unwrap();
            Ok::<_, Infallible>(client.oneshot(out).await.unwrap())
        }
    }));
    let res = upstream
        .oneshot(
            Request::get("/start")
                .header("baggage", "tenant=acme,plan=pro")
                .body(Body::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].0.contains("tenant=acme"), "{:?}", seen[0].0);
    assert_eq!(seen[0].1.as_deref(), Some("acme"));
    spans(&guard, &receiver, 3).await;
}

/// Both layers are ready exactly when their inner service is: neither
/// hides the backpressure of what it wraps.
#[tokio::test]
async fn readiness_is_the_inner_services() {
    use cog_testkit::service::{Gate, assert_ready_with_inner};
    let gate = Gate::<Body>::new();
    let mut server = TraceLayer::new().layer(gate.clone());
    assert_ready_with_inner::<_, Request<Body>, _>(&mut server, &gate);
    let gate = Gate::<Body>::new();
    let mut client = ClientTraceLayer::new().layer(gate.clone());
    assert_ready_with_inner::<_, Request<Body>, _>(&mut client, &gate);
}

/// `server.address`, `server.port` and `url.full` name the origin: the
/// URI's (with the scheme's default port), else the `Host` header's; a
/// request with neither records the reference as requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_spans_name_the_origin() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = config(&receiver, false, &[]).build().unwrap();
    let client =
        ClientTraceLayer::from_guard(&guard).layer(service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::default()))
        }));
    /// URI, `Host`, then the span's `server.address`, `server.port` and
    /// `url.full`.
    type Case = (
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        &'static str,
    );
    let cases: [Case; 4] = [
        (
            "https://api.example.com/a",
            None,
            Some("api.example.com"),
            Some("443"),
            "https://api.example.com/a",
        ),
        (
            "http://api.example.com/b",
            None,
            Some("api.example.com"),
            Some("80"),
            "http://api.example.com/b",
        ),
        (
            "/c?token=s3cret",
            Some("backend.internal:8080"),
            Some("backend.internal"),
            Some("8080"),
            "http://backend.internal:8080/c?token=REDACTED",
        ),
        ("/d", None, None, None, "/d"),
    ];
    for (uri, host, ..) in &cases {
        let mut req = Request::get(*uri);
        if let Some(host) = host {
            req = req.header("host", *host);
        }
        client
            .clone()
            .oneshot(req.body(Body::default()).unwrap())
            .await
            .unwrap();
    }
    let got = spans(&guard, &receiver, cases.len()).await;
    assert_eq!(got.len(), cases.len());
    for (_, _, address, port, full) in cases {
        let s = got
            .iter()
            .find(|s| s.attr("url.full").as_deref() == Some(full))
            .unwrap_or_else(|| panic!("no span with url.full {full}: {got:#?}"));
        assert_eq!(s.attr("server.address").as_deref(), address, "{full}");
        assert_eq!(s.attr("server.port").as_deref(), port, "{full}");
    }
}
