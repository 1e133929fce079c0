//! `cog_trace::init()` as an application calls it: from the process
//! environment, once per process. Each test runs its body in a child
//! process of its own (this test binary, re-run with the variables set),
//! so variables and the global pipeline never leak between tests; the
//! parent holds the OTLP receiver and reads what arrived.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cog_testkit::{OtlpReceiver, ReceivedSpan};
use opentelemetry::trace::{Tracer as _, TracerProvider as _};

const CHILD: &str = "COG_TRACE_INIT_CHILD";
const INCOMING_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const INCOMING_SPAN: &str = "b7ad6b7169203331";

/// Whether this process is the child running `test`.
fn is_child(test: &str) -> bool {
    std::env::var(CHILD).is_ok_and(|t| t == test)
}

/// Runs `test` in a child process with `vars` and waits at most `bound`
/// for it to exit (a child still running then is killed: it hung).
fn run_child(test: &str, vars: &[(&str, String)], bound: Duration) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    for k in std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("OTEL_"))
    {
        cmd.env_remove(k);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "child {test} failed: {status}");
            return;
        }
        if started.elapsed() > bound {
            let _ = child.kill();
            panic!("child {test} did not exit within {bound:?}: it hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A request with an incoming W3C context through `TraceLayer::new()`
/// (the global pipeline `init` installed). The handler answers the trace
/// id it runs in as `x-seen-trace`.
async fn request_with_traceparent() -> http::Response<()> {
    use http_body_util::Empty;
    use opentelemetry::trace::TraceContextExt as _;
    use tower::{Layer, ServiceExt, service_fn};
    type Body = Empty<bytes::Bytes>;
    let svc =
        cog_trace::server::TraceLayer::new().layer(service_fn(|_req: http::Request<Body>| async {
            let seen = opentelemetry::Context::map_current(|cx| {
                cx.span().span_context().trace_id().to_string()
            });
            let res = http::Response::builder()
                .header("x-seen-trace", seen)
                .body(Body::new());
            Ok::<_, std::convert::Infallible>(res.unwrap())
        }));
    let req = http::Request::builder()
        .uri("/items/1")
        .header(
            "traceparent",
            format!("00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"),
        )
        .body(Body::new())
        .unwrap();
    svc.oneshot(req).await.unwrap().map(|_| ())
}

/// Whether a handler behind `TraceLayer::new()` sees the request's W3C
/// `baggage`.
async fn baggage_seen() -> bool {
    use http_body_util::Empty;
    use opentelemetry::baggage::BaggageExt as _;
    use tower::{Layer, ServiceExt, service_fn};
    type Body = Empty<bytes::Bytes>;
    let svc =
        cog_trace::server::TraceLayer::new().layer(service_fn(|_req: http::Request<Body>| async {
            let seen = opentelemetry::Context::map_current(|cx| cx.baggage().get("k").is_some());
            let res = http::Response::builder()
                .header("x-baggage-seen", if seen { "1" } else { "0" })
                .body(Body::new());
            Ok::<_, std::convert::Infallible>(res.unwrap())
        }));
    let req = http::Request::builder()
        .uri("/bag")
        .header("baggage", "k=v")
        .body(Body::new())
        .unwrap();
    svc.oneshot(req).await.unwrap().headers()["x-baggage-seen"] == "1"
}

fn server_span(spans: &[ReceivedSpan]) -> &ReceivedSpan {
    spans
        .iter()
        .find(|s| s.attr("url.path").as_deref() == Some("/items/1"))
        .expect("the server span")
}

/// A runtime for the parent's receiver: multi-thread, so the receiver
/// keeps serving while the test thread waits for the child.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// The child's body, on a runtime of its own.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

fn endpoint(receiver: &OtlpReceiver) -> (&'static str, String) {
    ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint())
}

#[test]
fn otel_propagators_from_the_environment_decide_what_is_read() {
    if is_child("otel_propagators_from_the_environment_decide_what_is_read") {
        block_on(async {
            let guard = cog_trace::init().unwrap();
            let res = request_with_traceparent().await;
            assert!(res.headers().contains_key("traceparent"));
            let named = std::env::var("OTEL_PROPAGATORS").unwrap();
            let (w3c, baggage) = (named.contains("tracecontext"), named.contains("baggage"));
            // Incoming baggage reaches the handler only when `baggage` is
            // named.
            assert_eq!(baggage_seen().await, baggage, "{named}");
            // The global propagator (what other instrumentation and
            // `ClientTraceLayer::new` use) is the one named too.
            use opentelemetry::trace::TraceContextExt as _;
            let mut incoming = std::collections::HashMap::new();
            incoming.insert(
                "traceparent".to_owned(),
                format!("00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"),
            );
            let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&incoming));
            assert_eq!(cx.span().span_context().is_valid(), w3c, "{named}");
            let remote = opentelemetry::trace::SpanContext::new(
                opentelemetry::trace::TraceId::from_hex(INCOMING_TRACE).unwrap(),
                opentelemetry::trace::SpanId::from_hex(INCOMING_SPAN).unwrap(),
                opentelemetry::trace::TraceFlags::SAMPLED,
                true,
                Default::default(),
            );
            let cx = opentelemetry::Context::new().with_remote_span_context(remote);
            let mut outgoing = std::collections::HashMap::new();
            opentelemetry::global::get_text_map_propagator(|p| {
                p.inject_context(&cx, &mut outgoing)
            });
            assert_eq!(outgoing.contains_key("traceparent"), w3c, "{named}");
            guard.shutdown_async().await;
        });
        return;
    }
    let rt = runtime();
    for (propagators, joins) in [
        ("tracecontext", true),
        ("none", false),
        ("tracecontext,baggage", true),
        ("baggage", false),
    ] {
        let receiver = rt.block_on(OtlpReceiver::start()).unwrap();
        let vars = [
            endpoint(&receiver),
            ("OTEL_PROPAGATORS", propagators.to_owned()),
        ];
        run_child(
            "otel_propagators_from_the_environment_decide_what_is_read",
            &vars,
            Duration::from_secs(30),
        );
        let spans = receiver.spans();
        let span = server_span(&spans);
        assert_eq!(span.trace_id() == INCOMING_TRACE, joins, "{propagators}");
        assert_eq!(
            span.parent_span_id() == INCOMING_SPAN,
            joins,
            "{propagators}"
        );
    }
}

#[test]
fn otel_sdk_disabled_through_init_exports_nothing() {
    if is_child("otel_sdk_disabled_through_init_exports_nothing") {
        block_on(async {
            let guard = cog_trace::init().unwrap();
            assert!(guard.provider().is_none());
            let res = request_with_traceparent().await;
            // No server span, so no `traceparent` answered (it used to be
            // the caller's own, echoed: the no-op span carries its
            // parent's context); the caller's context still reaches the
            // handler, to go on to the calls it makes.
            assert_eq!(res.headers().get("traceparent"), None);
            assert_eq!(res.headers()["x-seen-trace"], INCOMING_TRACE);
            span("would-be-exported");
            drop(guard);
        });
        return;
    }
    let rt = runtime();
    let receiver = rt.block_on(OtlpReceiver::start()).unwrap();
    let vars = [endpoint(&receiver), ("OTEL_SDK_DISABLED", "true".into())];
    run_child(
        "otel_sdk_disabled_through_init_exports_nothing",
        &vars,
        Duration::from_secs(30),
    );
    assert_eq!(receiver.requests(), 0, "{:?}", receiver.spans());
}

#[test]
fn a_second_init_is_refused() {
    if is_child("a_second_init_is_refused") {
        // Outside any runtime: export has a runtime of its own.
        let first = cog_trace::init().unwrap();
        let second = cog_trace::init().unwrap_err();
        assert!(
            matches!(second, cog_trace::InitError::AlreadyInitialized),
            "{second}"
        );
        drop(first);
        return;
    }
    run_child(
        "a_second_init_is_refused",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9".into()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "200".into()),
        ],
        Duration::from_secs(30),
    );
}

/// A span from the global tracer, ended now.
fn span(name: &'static str) {
    let tracer = opentelemetry::global::tracer_provider().tracer("t");
    drop(tracer.start(name));
}

#[test]
fn flush_and_drop_on_a_current_thread_runtime_do_not_hang() {
    if is_child("flush_and_drop_on_a_current_thread_runtime_do_not_hang") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let guard = cog_trace::init().unwrap();
            span("flushed");
            // On the runtime's only thread: the SDK's own batch task would
            // need this thread to run.
            guard.flush();
            span("dropped");
            drop(guard);
        });
        return;
    }
    let rt = runtime();
    let receiver = rt.block_on(OtlpReceiver::start()).unwrap();
    run_child(
        "flush_and_drop_on_a_current_thread_runtime_do_not_hang",
        &[endpoint(&receiver)],
        Duration::from_secs(30),
    );
    let mut names: Vec<_> = receiver
        .spans()
        .iter()
        .map(|s| s.name().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["dropped", "flushed"]);
}

#[test]
fn a_guard_dropped_at_the_end_of_tokio_main_flushes() {
    if is_child("a_guard_dropped_at_the_end_of_tokio_main_flushes") {
        // What `#[tokio::main] async fn main() { let _g = init()?; … }` is.
        block_on(async {
            let _guard = cog_trace::init().unwrap();
            span("last");
        });
        return;
    }
    let rt = runtime();
    let receiver = rt.block_on(OtlpReceiver::start()).unwrap();
    run_child(
        "a_guard_dropped_at_the_end_of_tokio_main_flushes",
        &[endpoint(&receiver)],
        Duration::from_secs(30),
    );
    let spans = receiver.spans();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].name(), "last");
}

/// A pipeline exporting to a receiver that runs on the caller's own
/// runtime: a wait that blocked that runtime would starve the receiver.
fn pipeline(receiver: &OtlpReceiver) -> cog_trace::TraceGuard {
    let endpoint = receiver.http_endpoint();
    cog_trace::TraceConfig::from_vars(|k| match k {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
        // A starved receiver fails the export quickly.
        "OTEL_EXPORTER_OTLP_TIMEOUT" => Some("1000".into()),
        _ => None,
    })
    .unwrap()
    .build()
    .unwrap()
}

fn end_span(guard: &cog_trace::TraceGuard, name: &'static str) {
    drop(guard.tracer("t").unwrap().start(name));
}

/// `flush` exports now (the batch processor alone would wait 5 s), from a
/// current-thread runtime that also runs the receiver.
#[tokio::test(flavor = "current_thread")]
async fn flush_exports_now_on_a_current_thread_runtime() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = pipeline(&receiver);
    end_span(&guard, "flushed");
    guard.flush();
    let spans = receiver.wait_for_spans(1, Duration::from_secs(2)).await;
    assert_eq!(spans.len(), 1, "flushed before the guard is dropped");
}

/// On a multi-thread runtime's only worker, `flush` hands the worker's
/// other tasks (the receiver) on while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn flush_on_a_busy_worker_lets_its_other_tasks_run() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = pipeline(&receiver);
    end_span(&guard, "flushed");
    // On the worker thread (the test body runs on the main thread).
    let guard = tokio::spawn(async move {
        guard.flush();
        guard
    })
    .await
    .unwrap();
    let spans = receiver.wait_for_spans(1, Duration::from_secs(2)).await;
    assert_eq!(spans.len(), 1);
    drop(guard);
}

/// `shutdown_async` waits off the runtime: the receiver, on the same
/// current-thread runtime, gets the last span.
#[tokio::test(flavor = "current_thread")]
async fn shutdown_async_does_not_block_the_runtime() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = pipeline(&receiver);
    end_span(&guard, "last");
    guard.shutdown_async().await;
    assert_eq!(receiver.spans().len(), 1);
}
