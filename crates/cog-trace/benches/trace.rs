//! The cost of tracing a request, side by side with what users build
//! today.
//!
//! - `trace_layer/none`: the service alone.
//! - `trace_layer/cog_unsampled`: cog's layer, sampler always off.
//! - `trace_layer/cog_sampled`: cog's layer, every span recorded and handed
//!   to a no-op exporter.
//! - `trace_layer/tower_http_otel`: tower-http's `TraceLayer` with an
//!   OTel-naming `MakeSpan` (name, kind and the same HTTP attributes),
//!   parent extracted with the W3C propagator, and tracing-opentelemetry
//!   exporting to the same no-op exporter, sampled.
//!
//! - `trace_layer/cog_unsampled_overhead`: what `cog_unsampled` adds to
//!   `none`, measured in each sample as two back-to-back loops of the same
//!   length (alternating which goes first), so a noisy machine slows both
//!   alike. Its "time" is the difference.
//!
//! Every request carries a sampled `traceparent`.
//!
//! For instruction counts (callgrind), `COG_TRACE_COUNT=<function>:<n>`
//! runs `n` requests through `none`, `cog_unsampled` or `cog_sampled` and
//! exits instead of benchmarking: `scripts/callgrind-trace` runs it under
//! valgrind at two `n` and reports the instructions per request.

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use cog_trace::server::TraceLayer;
use criterion::{Criterion, criterion_group};
use http::{Request, Response};
use http_body_util::Full;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tower::{Layer, Service, ServiceExt, service_fn};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Debug)]
struct NoopExporter;

impl SpanExporter for NoopExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

fn provider(sampler: Sampler) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_simple_exporter(NoopExporter)
        .build()
}

type Body = Full<Bytes>;

fn request() -> Request<Body> {
    Request::get("/items/42?q=1")
        .header("host", "api.example.com")
        .header("user-agent", "bench/1.0")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Body::default())
        .unwrap()
}

/// What a handler answers: a small text body with its content type (as
/// axum does for a `String`).
fn ok() -> Response<Body> {
    let mut res = Response::new(Body::from("ok"));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

fn handler()
-> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(ok()) })
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// `iters` requests through `svc`, as `to_async(..).iter` runs them.
fn time_loop<S, B>(rt: &tokio::runtime::Runtime, svc: &S, iters: u64) -> std::time::Duration
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone,
{
    rt.block_on(async {
        let started = std::time::Instant::now();
        for _ in 0..iters {
            black_box(svc.clone().oneshot(request()).await.unwrap());
        }
        started.elapsed()
    })
}

/// A route table: templates are static strings.
fn route(p: &http::request::Parts) -> Option<&'static str> {
    p.uri.path().starts_with("/items/").then_some("/items/{id}")
}

/// As `init()` sets it up with OTEL_TRACES_SAMPLER=always_off.
fn always_off() -> cog_trace::TraceGuard {
    cog_trace::TraceConfig::from_vars(|k| match k {
        "OTEL_TRACES_SAMPLER" => Some("always_off".into()),
        "OTEL_TRACES_EXPORTER" => Some("none".into()),
        _ => None,
    })
    .unwrap()
    .build()
    .unwrap()
}

/// `COG_TRACE_COUNT=<function>:<n>`: `n` requests, no criterion.
fn count(spec: &str) {
    let (function, n) = spec
        .split_once(':')
        .expect("COG_TRACE_COUNT=<function>:<n>");
    let n: u64 = n.parse().expect("a request count");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match function {
        "none" => {
            let _ = time_loop(&rt, &handler(), n);
        }
        "cog_unsampled" => {
            let off = always_off();
            let svc = TraceLayer::from_guard(&off)
                .route_with(route)
                .layer(handler());
            let _ = time_loop(&rt, &svc, n);
        }
        "cog_sampled" => {
            let on = provider(Sampler::AlwaysOn);
            let svc = TraceLayer::new()
                .tracer(on.tracer("bench"))
                .w3c(false)
                .route_with(route)
                .layer(handler());
            let _ = time_loop(&rt, &svc, n);
        }
        other => panic!("no function {other}: none, cog_unsampled or cog_sampled"),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("trace_layer");

    let none = handler();
    g.bench_function("none", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(none.clone().oneshot(request()).await.unwrap()) })
    });

    let off = always_off();
    let unsampled = TraceLayer::from_guard(&off)
        .route_with(route)
        .layer(handler());
    g.bench_function("cog_unsampled", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(unsampled.clone().oneshot(request()).await.unwrap()) })
    });

    let mut none_first = false;
    g.bench_function("cog_unsampled_overhead", |b| {
        b.iter_custom(|iters| {
            none_first = !none_first;
            let (base, traced) = if none_first {
                let base = time_loop(&rt, &none, iters);
                (base, time_loop(&rt, &unsampled, iters))
            } else {
                let traced = time_loop(&rt, &unsampled, iters);
                (time_loop(&rt, &none, iters), traced)
            };
            traced.saturating_sub(base)
        })
    });

    let on = provider(Sampler::AlwaysOn);
    let sampled = TraceLayer::new()
        .tracer(on.tracer("bench"))
        .w3c(false)
        .route_with(route)
        .layer(handler());
    g.bench_function("cog_sampled", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(sampled.clone().oneshot(request()).await.unwrap()) })
    });

    let peer = provider(Sampler::AlwaysOn);
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(peer.tracer("bench")));
    let w3c = TraceContextPropagator::new();
    let tower_http = tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(move |req: &Request<Body>| {
            let route = if req.uri().path().starts_with("/items/") { "/items/{id}" } else { req.uri().path() };
            let span = tracing::info_span!(
                "request",
                otel.name = %format!("{} {}", req.method(), route),
                otel.kind = "server",
                http.request.method = %req.method(),
                http.route = route,
                url.path = req.uri().path(),
                url.scheme = "http",
                server.address = req.headers().get("host").and_then(|v| v.to_str().ok()).unwrap_or(""),
                user_agent.original = req.headers().get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or(""),
                network.protocol.version = "1.1",
                http.response.status_code = tracing::field::Empty,
            );
            let _ = span.set_parent(w3c.extract(&HeaderExtractor(req.headers())));
            span
        })
        .on_response(|res: &Response<Body>, _latency: std::time::Duration, span: &tracing::Span| {
            span.record("http.response.status_code", res.status().as_u16());
        })
        .layer(handler());
    tracing::subscriber::with_default(subscriber, || {
        g.bench_function("tower_http_otel", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(tower_http.clone().oneshot(request()).await.unwrap()) })
        });
    });
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(spec) = std::env::var("COG_TRACE_COUNT") {
        count(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
