//! Server spans: names, attributes, parents, status, sampling, flushing.

use std::time::Duration;

use cog_testkit::{OtlpReceiver, Transport};
use tower::Layer;

use crate::support::{app, config, request, send, spans, spans_within};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_span_over_grpc_with_semantic_conventions() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = config(
        &receiver,
        true,
        &[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-api-key=k%3D1,x-token=a%2541",
        )],
    )
    .build()
    .unwrap();
    let svc = app(&guard);
    let res = send(
        &svc,
        request(
            "/items/42?q=secret&page=2",
            &[
                ("traceparent", &format!("00-{TRACE}-{PARENT}-01")),
                ("host", "api.example.com:8443"),
                ("user-agent", "curl/8.0"),
                ("authorization", "Bearer never-recorded"),
            ],
        ),
    )
    .await;
    assert_eq!(res.status(), 200);
    // The response names the server span: same trace, a new span id.
    let tp = res.headers()["traceparent"].to_str().unwrap().to_owned();
    assert!(
        tp.starts_with(&format!("00-{TRACE}-")) && tp.ends_with("-01"),
        "{tp}"
    );
    assert!(!tp.contains(PARENT));

    let spans = spans(&guard, &receiver, 1).await;
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(s.transport, Transport::Grpc);
    assert_eq!(s.name(), "GET /items/{id}");
    assert_eq!(s.span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(s.trace_id(), TRACE);
    assert_eq!(s.parent_span_id(), PARENT);
    assert!(tp.contains(&s.span_id()));
    assert_eq!(
        s.resource_attr("service.name").as_deref(),
        Some("svc-under-test")
    );
    for (k, v) in [
        ("http.request.method", "GET"),
        ("http.route", "/items/{id}"),
        ("url.path", "/items/42"),
        ("url.query", "q=REDACTED&page=REDACTED"),
        ("url.scheme", "http"),
        ("server.address", "api.example.com"),
        ("server.port", "8443"),
        ("client.address", "203.0.113.9"),
        ("user_agent.original", "curl/8.0"),
        ("network.protocol.version", "1.1"),
        ("http.response.status_code", "200"),
        ("http.response.body.size", "5"),
    ] {
        assert_eq!(s.attr(k).as_deref(), Some(v), "{k}");
    }
    let all = format!("{:?}", s.span);
    assert!(
        !all.contains("never-recorded"),
        "Authorization leaked into the span"
    );
    // Status unset for a success.
    assert_eq!(s.span.status.as_ref().map_or(0, |st| st.code), 0);
    // OTEL_EXPORTER_OTLP_HEADERS went out as gRPC metadata.
    let headers = receiver.request_headers();
    assert_eq!(headers[0]["x-api-key"], "k=1");
    assert_eq!(headers[0]["x-token"], "a%41");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_over_http_protobuf_and_4xx_left_unset() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = config(
        &receiver,
        false,
        &[(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            // `%25` is a `%`: the value is `a%41`, not `aA`.
            "authorization=Basic%20abc,x-token=a%2541",
        )],
    )
    .build()
    .unwrap();
    let svc = app(&guard);
    assert_eq!(send(&svc, request("/boom", &[])).await.status(), 500);
    let spans = spans(&guard, &receiver, 1).await;
    let s = &spans[0];
    assert_eq!(s.transport, Transport::HttpProtobuf);
    assert_eq!(s.name(), "GET /boom");
    assert_eq!(s.parent_span_id(), "", "a fresh trace has no parent");
    assert_eq!(s.attr("error.type").as_deref(), Some("500"));
    assert_eq!(s.span.status.as_ref().unwrap().code, 2, "STATUS_CODE_ERROR");
    // OTEL_EXPORTER_OTLP_TRACES_HEADERS went out as HTTP headers.
    assert_eq!(receiver.request_headers()[0]["authorization"], "Basic abc");
    assert_eq!(receiver.request_headers()[0]["x-token"], "a%41");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_decisions_are_honoured() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let off = config(&receiver, true, &[("OTEL_TRACES_SAMPLER", "always_off")])
        .build()
        .unwrap();
    let res = send(&app(&off), request("/items/1", &[])).await;
    // Unsampled: still a traceparent (flag 00), nothing exported.
    assert!(
        res.headers()["traceparent"]
            .to_str()
            .unwrap()
            .ends_with("-00")
    );
    // Flushed: had there been a span, it would be here.
    assert!(
        spans_within(&off, &receiver, 1, Duration::from_millis(500))
            .await
            .is_empty()
    );

    // Parent-based: an unsampled parent keeps the trace unsampled; a root
    // request is sampled.
    let pb = config(&receiver, true, &[]).build().unwrap();
    let svc = app(&pb);
    let res = send(
        &svc,
        request(
            "/items/2",
            &[("traceparent", &format!("00-{TRACE}-{PARENT}-00"))],
        ),
    )
    .await;
    // Same trace, a span id of its own, still unsampled.
    let tp = res.headers()["traceparent"].to_str().unwrap().to_owned();
    assert!(
        tp.starts_with(&format!("00-{TRACE}-")) && tp.ends_with("-00"),
        "{tp}"
    );
    assert!(!tp.contains(PARENT), "{tp}");
    send(&svc, request("/items/3", &[])).await;
    let got = spans(&pb, &receiver, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attr("url.path").as_deref(), Some("/items/3"));

    // Filtered requests get no span at all.
    send(&svc, request("/healthz", &[])).await;
    assert_eq!(
        spans_within(&pb, &receiver, 2, Duration::from_millis(500))
            .await
            .len(),
        1
    );

    // Parent-based with roots off: only a sampled parent's request records.
    let pbo = config(
        &receiver,
        true,
        &[("OTEL_TRACES_SAMPLER", "parentbased_always_off")],
    )
    .build()
    .unwrap();
    let svc = app(&pbo);
    send(&svc, request("/items/4", &[])).await;
    for (path, flags) in [("/items/5", "00"), ("/items/6", "01")] {
        let tp = format!("00-{TRACE}-{PARENT}-{flags}");
        let res = send(&svc, request(path, &[("traceparent", &tp)])).await;
        let answered = res.headers()["traceparent"].to_str().unwrap().to_owned();
        assert!(answered.ends_with(&format!("-{flags}")), "{answered}");
    }
    let got = spans_within(&pbo, &receiver, 3, Duration::from_millis(500)).await;
    let paths: Vec<_> = got.iter().filter_map(|s| s.attr("url.path")).collect();
    assert_eq!(paths, ["/items/3", "/items/6"]);
}

/// What most requests do not have: a method outside the standard ones
/// (`_OTHER`, the original kept), HTTP/2 and HTTP/1.0; and the response
/// body keeps the inner body's size and end (hyper's `Content-Length`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_versions_and_the_body_as_they_are() {
    use http_body::Body as _;

    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = config(&receiver, false, &[]).build().unwrap();
    let svc = app(&guard);
    let cases = [
        ("/items/1", "PURGE", http::Version::HTTP_2, "2"),
        ("/items/2", "GET", http::Version::HTTP_10, "1.0"),
        ("/items/3", "GET", http::Version::HTTP_09, "0.9"),
        ("/items/4", "GET", http::Version::HTTP_3, "3"),
    ];
    for (path, method, version, _) in cases {
        let mut req = request(path, &[]);
        *req.method_mut() = http::Method::from_bytes(method.as_bytes()).unwrap();
        *req.version_mut() = version;
        let res = send(&svc, req).await;
        assert_eq!(res.body().size_hint().exact(), Some(5), "\"hello\"");
        assert!(!res.body().is_end_stream());
    }
    let got = spans(&guard, &receiver, cases.len()).await;
    for (path, method, _, version) in cases {
        let s = got
            .iter()
            .find(|s| s.attr("url.path").as_deref() == Some(path))
            .unwrap();
        assert_eq!(
            s.attr("network.protocol.version").as_deref(),
            Some(version),
            "{path}"
        );
        let (attr, original) = match method {
            "GET" => ("GET", None),
            other => ("_OTHER", Some(other)),
        };
        assert_eq!(s.attr("http.request.method").as_deref(), Some(attr));
        assert_eq!(
            s.attr("http.request.method_original").as_deref(),
            original,
            "{path}"
        );
    }

    // An empty answer ends where it starts.
    let empty = cog_trace::server::TraceLayer::from_guard(&guard).layer(tower::service_fn(
        |_req: http::Request<crate::support::Body>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(crate::support::Body::default()))
        },
    ));
    let res = tower::ServiceExt::oneshot(empty, request("/empty", &[]))
        .await
        .unwrap();
    assert!(res.body().is_end_stream());
    assert_eq!(res.body().size_hint().exact(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_every_ended_span() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = config(&receiver, true, &[]).build().unwrap();
    let svc = app(&guard);
    for i in 0..50 {
        send(&svc, request(&format!("/items/{i}"), &[])).await;
    }
    tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .unwrap();
    let got = receiver.wait_for_spans(50, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 50, "spans lost at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_endpoints_link_instead_of_parenting() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = config(&receiver, true, &[]).build().unwrap();
    let svc = cog_trace::server::TraceLayer::from_guard(&guard)
        .public_endpoint(true)
        .layer(crate::support::app(&guard).into_inner());
    send(
        &svc,
        request("/x", &[("traceparent", &format!("00-{TRACE}-{PARENT}-01"))]),
    )
    .await;
    let s = &spans(&guard, &receiver, 1).await[0];
    assert_eq!(s.parent_span_id(), "");
    assert_ne!(s.trace_id(), TRACE);
    assert_eq!(s.span.links.len(), 1);
    assert_eq!(s.span.links[0].span_id, hex(PARENT));
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_capture_is_an_allow_list_without_secrets() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = config(&receiver, true, &[]).build().unwrap();
    let svc = cog_trace::server::TraceLayer::from_guard(&guard)
        .capture_request_headers([
            http::HeaderName::from_static("x-request-id"),
            http::header::AUTHORIZATION,
            http::header::COOKIE,
            http::HeaderName::from_static("x-api-key"),
        ])
        .layer(crate::support::app(&guard).into_inner());
    send(
        &svc,
        request(
            "/x",
            &[
                ("x-request-id", "req-1"),
                ("x-other", "not-captured"),
                ("authorization", "Bearer top-secret"),
                ("cookie", "session=top-secret"),
                ("x-api-key", "sk_live_top-secret"),
            ],
        ),
    )
    .await;
    let s = &spans(&guard, &receiver, 1).await[0];
    let attrs = format!("{:?}", s.span.attributes);
    assert!(
        attrs.contains("http.request.header.x-request-id") && attrs.contains("req-1"),
        "{attrs}"
    );
    assert!(!attrs.contains("not-captured"));
    assert!(
        !attrs.contains("top-secret"),
        "a secret header was captured: {attrs}"
    );
}

/// Without `route_with`, the layer names the span after the route the
/// router matched (what axum's `MatchedPath` gives through `Router::layer`;
/// here the router-neutral `MatchedRoute`), and never after the raw path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_matched_route_names_the_span_by_default() {
    use http::{Request, Response};
    use tower::{ServiceExt, service_fn};
    type Body = http_body_util::Full<bytes::Bytes>;
    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = config(&receiver, false, &[]).build().unwrap();
    let svc = cog_trace::server::TraceLayer::from_guard(&guard).layer(service_fn(
        |_req: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Body::default()))
        },
    ));
    let mut routed = Request::post("/v1/items/42").body(Body::default()).unwrap();
    routed
        .extensions_mut()
        .insert(cog_trace::MatchedRoute("/v1/items/{id}".into()));
    svc.clone().oneshot(routed).await.unwrap();
    let unrouted = Request::post("/v1/items/43").body(Body::default()).unwrap();
    svc.oneshot(unrouted).await.unwrap();

    let spans = spans(&guard, &receiver, 2).await;
    let mut names: Vec<_> = spans.iter().map(|s| s.name().to_owned()).collect();
    names.sort();
    assert_eq!(names, ["POST", "POST /v1/items/{id}"]);
    let routed = spans.iter().find(|s| s.name() != "POST").unwrap();
    assert_eq!(routed.attr("http.route").as_deref(), Some("/v1/items/{id}"));
    let unrouted = spans.iter().find(|s| s.name() == "POST").unwrap();
    assert_eq!(unrouted.attr("http.route"), None);
}

/// `client.address` is the peer however the server hands it over: axum's
/// `ConnectInfo` (served for real, with connect info), or a `PeerAddr`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_is_read_from_axum_connect_info_or_a_peer_addr() {
    use http::{Request, Response};
    use tower::{ServiceExt, service_fn};
    type Body = http_body_util::Full<bytes::Bytes>;
    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = config(&receiver, false, &[]).build().unwrap();

    let app = axum::Router::new()
        .route("/items/{id}", axum::routing::get(|| async { "item" }))
        .layer(cog_trace::server::TraceLayer::from_guard(&guard));
    let addr = cog_testkit::peer::serve_with_peers(app).await;
    // From another loopback address than the server's.
    assert_eq!(
        cog_testkit::peer::get_from("127.0.0.3", addr, "/items/7").await,
        200
    );

    let svc = cog_trace::server::TraceLayer::from_guard(&guard).layer(service_fn(
        |_req: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Body::default()))
        },
    ));
    let mut req = Request::get("/peer").body(Body::default()).unwrap();
    req.extensions_mut()
        .insert(cog_trace::PeerAddr("[2001:db8::9]:4000".parse().unwrap()));
    svc.oneshot(req).await.unwrap();

    let spans = spans(&guard, &receiver, 2).await;
    let served = spans
        .iter()
        .find(|s| s.name() == "GET /items/{id}")
        .unwrap();
    assert_eq!(served.attr("client.address").as_deref(), Some("127.0.0.3"));
    let peer = spans.iter().find(|s| s.name() == "GET").unwrap();
    assert_eq!(peer.attr("client.address").as_deref(), Some("2001:db8::9"));
}

#[tokio::test]
async fn the_services_are_built_directly_or_through_their_layers() {
    use cog_trace::client::ClientTrace;
    use cog_trace::server::Trace;
    use http::{Request, Response, StatusCode};
    use tower::{ServiceExt, service_fn};
    type Body = http_body_util::Full<bytes::Bytes>;
    let teapot = || {
        service_fn(|_req: Request<Body>| async {
            let mut res = Response::new(Body::default());
            *res.status_mut() = StatusCode::IM_A_TEAPOT;
            Ok::<_, std::convert::Infallible>(res)
        })
    };
    let req = || Request::get("/x").body(Body::default()).unwrap();
    let direct = Trace::new(teapot());
    let _ = direct.get_ref();
    assert_eq!(direct.oneshot(req()).await.unwrap().status(), 418);
    let layered = Trace::<()>::layer().layer(teapot());
    assert_eq!(layered.oneshot(req()).await.unwrap().status(), 418);
    let client = ClientTrace::new(teapot());
    let _ = client.get_ref();
    assert_eq!(client.oneshot(req()).await.unwrap().status(), 418);
    let client = ClientTrace::<()>::layer().layer(teapot());
    assert_eq!(client.oneshot(req()).await.unwrap().status(), 418);
}

/// Each of the builder's settings takes effect. The layers start from
/// `TraceLayer::new()`, whose globals are no-ops in this binary (no
/// `init`): spans arrive only through `tracer`, and the parent is joined
/// only through `propagator` or `w3c`. With `trusted_hops(1)` the client
/// is the address the proxy reports; with `keep_query(true)` the query is
/// recorded as sent. A layer given a tracer samples with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builders_settings_take_effect() {
    use std::convert::Infallible;
    use std::sync::Arc;

    use http::{Request, Response};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tower::{ServiceExt, service_fn};

    type Body = http_body_util::Full<bytes::Bytes>;
    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = config(&receiver, false, &[]).build().unwrap();
    let handler = service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::default()))
    });
    let off = config(
        &receiver,
        false,
        &[
            ("OTEL_TRACES_SAMPLER", "always_off"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ],
    )
    .build()
    .unwrap();
    let own = || cog_trace::server::TraceLayer::new().tracer(guard.tracer("own").unwrap());
    let layers = [
        ("/tracer-only", own()),
        (
            "/propagator",
            own()
                .propagator(Arc::new(TraceContextPropagator::new()))
                .trusted_hops(1)
                .keep_query(true),
        ),
        ("/w3c", own().w3c(false)),
        // The tracer's own sampler decides, not the sampler of the
        // pipeline the layer came from (which drops everything).
        (
            "/sampler",
            cog_trace::server::TraceLayer::from_guard(&off).tracer(guard.tracer("own").unwrap()),
        ),
    ];
    for (path, layer) in layers {
        let req = request(
            &format!("{path}?q=1&page=2"),
            &[
                ("traceparent", &format!("00-{TRACE}-{PARENT}-01")),
                ("x-forwarded-for", "198.51.100.7"),
            ],
        );
        let res = layer.layer(handler).oneshot(req).await.unwrap();
        assert!(res.headers().contains_key("traceparent"), "{path}");
    }
    let got = spans(&guard, &receiver, 4).await;
    assert_eq!(got.len(), 4);
    let span = |path: &str| {
        got.iter()
            .find(|s| s.attr("url.path").as_deref() == Some(path))
            .unwrap_or_else(|| panic!("no span for {path}"))
    };
    for s in &got {
        assert_eq!(s.scope, "own", "the layer's tracer");
    }
    // The global (no-op) propagator: a new trace.
    let alone = span("/tracer-only");
    assert_ne!(alone.trace_id(), TRACE);
    assert_eq!(alone.parent_span_id(), "");
    assert_eq!(alone.attr("client.address").as_deref(), Some("203.0.113.9"));
    assert_eq!(
        alone.attr("url.query").as_deref(),
        Some("q=REDACTED&page=REDACTED")
    );
    let joined = span("/propagator");
    assert_eq!(
        (joined.trace_id().as_str(), joined.parent_span_id().as_str()),
        (TRACE, PARENT)
    );
    assert_eq!(
        joined.attr("client.address").as_deref(),
        Some("198.51.100.7")
    );
    assert_eq!(joined.attr("url.query").as_deref(), Some("q=1&page=2"));
    let w3c = span("/w3c");
    assert_eq!(
        (w3c.trace_id().as_str(), w3c.parent_span_id().as_str()),
        (TRACE, PARENT)
    );
}

/// A pipeline whose propagators leave out `baggage` reads none: a layer
/// from its guard joins the parent and leaves the request's `baggage` out
/// of the handler's context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baggage_is_read_only_when_its_propagator_is_named() {
    use std::convert::Infallible;

    use http::{Request, Response};
    use opentelemetry::baggage::BaggageExt as _;
    use opentelemetry::trace::TraceContextExt as _;
    use tower::{ServiceExt, service_fn};

    type Body = http_body_util::Full<bytes::Bytes>;
    let receiver = OtlpReceiver::start().await.unwrap();
    for (propagators, read) in [("tracecontext", false), ("tracecontext,baggage", true)] {
        let guard = config(
            &receiver,
            false,
            &[
                ("OTEL_PROPAGATORS", propagators),
                ("OTEL_TRACES_EXPORTER", "none"),
            ],
        )
        .build()
        .unwrap();
        let svc = cog_trace::server::TraceLayer::from_guard(&guard).layer(service_fn(
            |_req: Request<Body>| async {
                let (bag, trace) = opentelemetry::Context::map_current(|cx| {
                    (
                        cx.baggage().get("k").is_some(),
                        cx.span().span_context().trace_id().to_string(),
                    )
                });
                let res = Response::builder()
                    .header("x-baggage-seen", if bag { "1" } else { "0" })
                    .header("x-trace", trace)
                    .body(Body::default());
                Ok::<_, Infallible>(res.unwrap())
            },
        ));
        let req = request(
            "/bag",
            &[
                ("traceparent", &format!("00-{TRACE}-{PARENT}-01")),
                ("baggage", "k=v"),
            ],
        );
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.headers()["x-trace"], TRACE, "{propagators}");
        assert_eq!(
            res.headers()["x-baggage-seen"] == "1",
            read,
            "{propagators}"
        );
    }
}
