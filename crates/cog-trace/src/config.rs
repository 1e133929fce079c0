//! Setting up the OpenTelemetry SDK from the standard `OTEL_*` variables.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// A variable holds a value we cannot use.
    #[error("{var}={value:?}: {reason}")]
    InvalidVar {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The OTLP exporter could not be built.
    #[error("building the OTLP exporter: {0}")]
    Exporter(String),
    /// Export needs a tokio runtime (batching runs on it). No longer
    /// returned: export runs on a runtime of its own.
    #[error("tracing export must be set up inside a tokio runtime")]
    NoRuntime,
    /// [`init`] already installed a pipeline in this process: a second one
    /// would leave layers built earlier on the first one's sampler. Keep
    /// the first guard, or build more pipelines with
    /// [`TraceConfig::build`] and [`TraceLayer::from_guard`](crate::TraceLayer::from_guard).
    #[error("cog_trace::init was already called in this process")]
    AlreadyInitialized,
}

/// Where ended spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exporter {
    /// OTLP over gRPC to `endpoint`.
    OtlpGrpc {
        /// e.g. `http://localhost:4317`.
        endpoint: String,
    },
    /// OTLP over HTTP with protobuf bodies to `endpoint` (the full URL,
    /// `/v1/traces` included).
    OtlpHttp {
        /// e.g. `http://localhost:4318/v1/traces`.
        endpoint: String,
    },
    /// One line per ended span on standard output (for development; the
    /// line is written when the span ends, on the thread that ends it).
    Console,
    /// Nowhere: spans are sampled and recorded (so context propagates) but
    /// not exported.
    None,
}

/// Tracing settings, normally read from the `OTEL_*` variables.
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `OTEL_SDK_DISABLED` | `true`: no tracing at all | `false` |
/// | `OTEL_SERVICE_NAME` | `service.name` | `unknown_service` |
/// | `OTEL_RESOURCE_ATTRIBUTES` | `k=v,k2=v2` (values percent-decoded) | — |
/// | `OTEL_TRACES_SAMPLER` | `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, `parentbased_always_off`, `parentbased_traceidratio` | `parentbased_always_on` |
/// | `OTEL_TRACES_SAMPLER_ARG` | ratio for the `*traceidratio` samplers | `1.0` |
/// | `OTEL_PROPAGATORS` | `tracecontext`, `baggage`, `none` (comma list) | `tracecontext,baggage` |
/// | `OTEL_TRACES_EXPORTER` | `otlp`, `console` (one line per span on stdout), `none` | `otlp` |
/// | `OTEL_EXPORTER_OTLP_PROTOCOL`, `…_TRACES_PROTOCOL` | `grpc`, `http/protobuf` | `http/protobuf` |
/// | `OTEL_EXPORTER_OTLP_ENDPOINT` | base URL (`/v1/traces` appended for HTTP) | `http://localhost:4318` / `:4317` |
/// | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | full URL, used as is | — |
/// | `OTEL_EXPORTER_OTLP_TIMEOUT`, `…_TRACES_TIMEOUT` | export timeout, ms | `10000` |
/// | `OTEL_EXPORTER_OTLP_HEADERS`, `…_TRACES_HEADERS` | `k=v,k2=v2` sent with every export (values percent-decoded; the traces variable wins per key) | — |
#[derive(Clone)]
pub struct TraceConfig {
    /// No SDK at all: the layers stay on their unsampled path.
    pub disabled: bool,
    /// `service.name`.
    pub service_name: String,
    /// Other resource attributes.
    pub resource: Vec<KeyValue>,
    /// The sampler.
    pub sampler: SamplerKind,
    /// Propagators, by name.
    pub propagators: Vec<String>,
    /// Where spans go.
    pub exporter: Exporter,
    /// Export timeout.
    pub timeout: Duration,
    /// Headers (gRPC metadata) sent with every OTLP export, e.g. a
    /// vendor's API key. Never printed by `Debug`.
    pub headers: Vec<(String, String)>,
}

impl fmt::Debug for TraceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceConfig")
            .field("disabled", &self.disabled)
            .field("service_name", &self.service_name)
            .field("sampler", &self.sampler)
            .field("propagators", &self.propagators)
            .field("exporter", &self.exporter)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The sampler named by `OTEL_TRACES_SAMPLER`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum SamplerKind {
    /// Record everything.
    AlwaysOn,
    /// Record nothing.
    AlwaysOff,
    /// Record this fraction of traces, by trace id.
    TraceIdRatio(f64),
    /// Follow the parent's decision; for roots, record everything.
    ParentBasedAlwaysOn,
    /// Follow the parent's decision; for roots, record nothing.
    ParentBasedAlwaysOff,
    /// Follow the parent's decision; for roots, record this fraction.
    ParentBasedTraceIdRatio(f64),
}

impl SamplerKind {
    fn build(self) -> Sampler {
        match self {
            SamplerKind::AlwaysOn => Sampler::AlwaysOn,
            SamplerKind::AlwaysOff => Sampler::AlwaysOff,
            SamplerKind::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
            SamplerKind::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerKind::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            SamplerKind::ParentBasedTraceIdRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hexval = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hexval(bytes[i + 1]), hexval(bytes[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TraceConfig {
    /// Reads the process environment.
    ///
    /// # Errors
    /// When a variable holds an unusable value.
    pub fn from_env() -> Result<Self, InitError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Reads variables through `var` (tests and embedders pass their own).
    ///
    /// # Errors
    /// When a variable holds an unusable value.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, InitError> {
        let get = |k: &str| {
            var(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let disabled = get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));

        let mut resource = Vec::new();
        let mut service_name = None;
        if let Some(attrs) = get("OTEL_RESOURCE_ATTRIBUTES") {
            for pair in attrs.split(',').filter(|p| !p.trim().is_empty()) {
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(InitError::InvalidVar {
                        var: "OTEL_RESOURCE_ATTRIBUTES",
                        value: attrs.clone(),
                        reason: "expected key=value pairs separated by commas",
                    });
                };
                let (k, v) = (k.trim().to_owned(), percent_decode(v.trim()));
                if k == "service.name" {
                    service_name = Some(v);
                } else {
                    resource.push(KeyValue::new(k, v));
                }
            }
        }
        let service_name = get("OTEL_SERVICE_NAME")
            .or(service_name)
            .unwrap_or_else(|| "unknown_service".to_owned());

        let ratio = || -> Result<f64, InitError> {
            match get("OTEL_TRACES_SAMPLER_ARG") {
                None => Ok(1.0),
                Some(v) => match v.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(InitError::InvalidVar {
                        var: "OTEL_TRACES_SAMPLER_ARG",
                        value: v,
                        reason: "expected a ratio between 0 and 1",
                    }),
                },
            }
        };
        let sampler = match get("OTEL_TRACES_SAMPLER").as_deref() {
            None | Some("parentbased_always_on") => SamplerKind::ParentBasedAlwaysOn,
            Some("always_on") => SamplerKind::AlwaysOn,
            Some("always_off") => SamplerKind::AlwaysOff,
            Some("traceidratio") => SamplerKind::TraceIdRatio(ratio()?),
            Some("parentbased_always_off") => SamplerKind::ParentBasedAlwaysOff,
            Some("parentbased_traceidratio") => SamplerKind::ParentBasedTraceIdRatio(ratio()?),
            Some(other) => {
                return Err(InitError::InvalidVar {
                    var: "OTEL_TRACES_SAMPLER",
                    value: other.to_owned(),
                    reason: "unknown sampler",
                });
            }
        };

        let propagators = get("OTEL_PROPAGATORS")
            .unwrap_or_else(|| "tracecontext,baggage".to_owned())
            .split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>();
        for p in &propagators {
            if !matches!(p.as_str(), "tracecontext" | "baggage" | "none") {
                return Err(InitError::InvalidVar {
                    var: "OTEL_PROPAGATORS",
                    value: p.clone(),
                    reason: "supported: tracecontext, baggage, none",
                });
            }
        }

        let protocol = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|| "http/protobuf".to_owned());
        let grpc = match protocol.as_str() {
            "grpc" => true,
            "http/protobuf" => false,
            other => {
                return Err(InitError::InvalidVar {
                    var: "OTEL_EXPORTER_OTLP_PROTOCOL",
                    value: other.to_owned(),
                    reason: "supported: grpc, http/protobuf",
                });
            }
        };
        let endpoint = match get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(full) => full,
            None => {
                let base = get("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_else(|| {
                    if grpc {
                        "http://localhost:4317".to_owned()
                    } else {
                        "http://localhost:4318".to_owned()
                    }
                });
                if grpc {
                    base
                } else {
                    format!("{}/v1/traces", base.trim_end_matches('/'))
                }
            }
        };
        let exporter = match get("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") if grpc => Exporter::OtlpGrpc { endpoint },
            None | Some("otlp") => Exporter::OtlpHttp { endpoint },
            Some("none") => Exporter::None,
            Some("console") => Exporter::Console,
            Some(other) => {
                return Err(InitError::InvalidVar {
                    var: "OTEL_TRACES_EXPORTER",
                    value: other.to_owned(),
                    reason: "supported: otlp, console, none",
                });
            }
        };
        let timeout = match get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|| get("OTEL_EXPORTER_OTLP_TIMEOUT"))
        {
            None => Duration::from_secs(10),
            Some(v) => Duration::from_millis(v.parse().map_err(|_| InitError::InvalidVar {
                var: "OTEL_EXPORTER_OTLP_TIMEOUT",
                value: v.clone(),
                reason: "expected milliseconds",
            })?),
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            let Some(list) = get(var) else { continue };
            for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
                let parsed = pair
                    .split_once('=')
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), percent_decode(v.trim())))
                    .filter(|(k, v)| {
                        http::HeaderName::from_bytes(k.as_bytes()).is_ok()
                            && http::HeaderValue::from_str(v).is_ok()
                    });
                let Some((k, v)) = parsed else {
                    // The value may be a secret: name the variable only.
                    return Err(InitError::InvalidVar {
                        var,
                        value: String::new(),
                        reason: "expected name=value pairs of valid header names and values, separated by commas",
                    });
                };
                headers.retain(|(old, _)| *old != k);
                headers.push((k, v));
            }
        }
        Ok(TraceConfig {
            disabled,
            service_name,
            resource,
            sampler,
            propagators,
            exporter,
            timeout,
            headers,
        })
    }

    /// The propagator these settings name.
    pub fn propagator(&self) -> Arc<dyn TextMapPropagator + Send + Sync> {
        let mut list: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
        for p in &self.propagators {
            match p.as_str() {
                "tracecontext" => list.push(Box::new(TraceContextPropagator::new())),
                "baggage" => list.push(Box::new(BaggagePropagator::new())),
                _ => {}
            }
        }
        Arc::new(TextMapCompositePropagator::new(list))
    }

    /// `Some(baggage)` when the propagators are exactly W3C trace context,
    /// with or without W3C baggage: layers then decode them themselves.
    fn w3c(&self) -> Option<bool> {
        let mut trace_context = false;
        let mut baggage = false;
        for p in &self.propagators {
            match p.as_str() {
                "tracecontext" => trace_context = true,
                "baggage" => baggage = true,
                _ => return None,
            }
        }
        trace_context.then_some(baggage)
    }

    /// Builds the SDK for these settings, without touching any global.
    ///
    /// Export (batching and the OTLP client) runs on a small runtime of
    /// the guard's own — one thread — so it works from any thread, inside
    /// a tokio runtime or not, and flushing never waits on the
    /// application's runtime.
    ///
    /// # Errors
    /// When the exporter cannot be built.
    pub fn build(&self) -> Result<TraceGuard, InitError> {
        let propagator = self.propagator();
        if self.disabled {
            return Ok(TraceGuard {
                provider: None,
                export: None,
                propagator,
                w3c: self.w3c(),
                sampler: self.sampler,
            });
        }
        let resource = Resource::builder_empty()
            .with_service_name(self.service_name.clone())
            .with_attributes(self.resource.clone())
            .build();
        let mut builder = SdkTracerProvider::builder()
            .with_sampler(self.sampler.build())
            .with_resource(resource);
        let export = match &self.exporter {
            Exporter::OtlpGrpc { .. } | Exporter::OtlpHttp { .. } => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("cog-trace-export")
                    .enable_all()
                    .build()
                    .map_err(|e| InitError::Exporter(e.to_string()))?,
            ),
            _ => None,
        };
        // The exporter's client and the batch task bind to the export
        // runtime.
        let _entered = export.as_ref().map(tokio::runtime::Runtime::enter);
        let span_exporter = match &self.exporter {
            Exporter::None => None,
            Exporter::Console => {
                builder = builder.with_simple_exporter(crate::console::ConsoleExporter::stdout());
                None
            }
            Exporter::OtlpGrpc { endpoint } => {
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (k, v) in &self.headers {
                    if let (Ok(k), Ok(v)) = (
                        k.parse::<tonic::metadata::AsciiMetadataKey>(),
                        v.parse::<tonic::metadata::AsciiMetadataValue>(),
                    ) {
                        metadata.insert(k, v);
                    }
                }
                Some(
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(endpoint.clone())
                        .with_timeout(self.timeout)
                        .with_metadata(metadata)
                        .build(),
                )
            }
            Exporter::OtlpHttp { endpoint } => Some(
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(endpoint.clone())
                    .with_timeout(self.timeout)
                    .with_headers(self.headers.iter().cloned().collect())
                    .build(),
            ),
        };
        if let Some(exporter) = span_exporter {
            let exporter = exporter.map_err(|e| InitError::Exporter(e.to_string()))?;
            builder = builder.with_span_processor(
                BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build(),
            );
        }
        Ok(TraceGuard {
            provider: Some(builder.build()),
            export,
            propagator,
            w3c: self.w3c(),
            sampler: self.sampler,
        })
    }
}

/// Owns the tracing pipeline; dropping it (or calling
/// [`shutdown`](Self::shutdown)) flushes every ended span.
///
/// Flushing waits for the export (at most the export timeout) but never
/// for the application's runtime: export runs on the guard's own thread,
/// so `flush`, `shutdown` and drop are safe on a current-thread runtime
/// and at the end of `#[tokio::main]`. On a multi-thread runtime the
/// wait goes through `block_in_place`, so other tasks move on; from async
/// code, [`shutdown_async`](Self::shutdown_async) waits without blocking
/// at all.
pub struct TraceGuard {
    provider: Option<SdkTracerProvider>,
    /// The runtime export runs on (OTLP only).
    export: Option<tokio::runtime::Runtime>,
    propagator: Arc<dyn TextMapPropagator + Send + Sync>,
    /// See [`TraceConfig::w3c`].
    w3c: Option<bool>,
    sampler: SamplerKind,
}

impl fmt::Debug for TraceGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceGuard")
            .field("enabled", &self.provider.is_some())
            .finish_non_exhaustive()
    }
}

impl TraceGuard {
    /// A tracer from this pipeline (`None` when tracing is disabled).
    pub fn tracer(&self, name: &'static str) -> Option<SdkTracer> {
        self.provider.as_ref().map(|p| p.tracer(name))
    }

    /// The configured sampler.
    pub fn sampler(&self) -> SamplerKind {
        self.sampler
    }

    /// The configured propagator.
    pub fn propagator(&self) -> Arc<dyn TextMapPropagator + Send + Sync> {
        self.propagator.clone()
    }

    /// `Some(baggage)` when the propagators are W3C only.
    pub(crate) fn w3c(&self) -> Option<bool> {
        self.w3c
    }

    /// The SDK provider, when tracing is enabled.
    pub fn provider(&self) -> Option<&SdkTracerProvider> {
        self.provider.as_ref()
    }

    /// Exports every ended span now.
    pub fn flush(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = waiting(|| p.force_flush())
        {
            tracing::warn!(target: "cog_trace", error = %e, "flushing spans failed");
        }
    }

    /// Flushes and stops the pipeline.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Flushes and stops the pipeline without blocking the calling task:
    /// the wait happens on a blocking thread.
    pub async fn shutdown_async(self) {
        let _ = tokio::task::spawn_blocking(move || self.shutdown()).await;
    }

    fn stop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = waiting(|| p.shutdown())
        {
            tracing::warn!(target: "cog_trace", error = %e, "shutting tracing down failed");
        }
        if let Some(rt) = self.export.take() {
            // Dropping a runtime blocks, which panics inside another
            // runtime: its work is done, let its thread go.
            rt.shutdown_background();
        }
    }
}

/// Runs a blocking wait on the export: through `block_in_place` on a
/// multi-thread runtime's worker (its other tasks move to other workers),
/// directly elsewhere — the export runs on the guard's own runtime, so
/// waiting cannot stall it.
fn waiting<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sets tracing up from the `OTEL_*` variables and installs it globally:
/// the global tracer provider and propagator, so
/// [`TraceLayer::new`](crate::TraceLayer::new) and any OpenTelemetry
/// instrumentation use it.
/// Keep the guard alive; dropping it flushes.
///
/// Once per process: a second call returns
/// [`InitError::AlreadyInitialized`] (after a call that failed, `init` may
/// be called again).
///
/// # Errors
/// See [`TraceConfig::from_env`] and [`TraceConfig::build`];
/// [`InitError::AlreadyInitialized`].
pub fn init() -> Result<TraceGuard, InitError> {
    static CALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if CALLED.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(InitError::AlreadyInitialized);
    }
    let config = TraceConfig::from_env()?;
    let guard = config.build()?;
    // Set once it worked: a bad variable can be fixed and `init` retried.
    if CALLED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Err(InitError::AlreadyInitialized);
    }
    if let Some(p) = guard.provider() {
        opentelemetry::global::set_tracer_provider(p.clone());
        let _ = INIT_SAMPLER.set(config.sampler);
    }
    let _ = INIT_W3C.set(config.w3c());
    let propagator = config.propagator();
    opentelemetry::global::set_text_map_propagator(PropagatorRef(propagator));
    Ok(guard)
}

/// The sampler [`init`] installed, so layers built on the global provider
/// can skip the SDK for requests it will not sample.
pub(crate) static INIT_SAMPLER: std::sync::OnceLock<SamplerKind> = std::sync::OnceLock::new();

/// Whether the propagators [`init`] installed are W3C only (see
/// [`TraceConfig::w3c`]).
pub(crate) static INIT_W3C: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();

/// Lets a shared propagator be installed globally.
#[derive(Debug)]
struct PropagatorRef(Arc<dyn TextMapPropagator + Send + Sync>);

impl TextMapPropagator for PropagatorRef {
    fn inject_context(
        &self,
        cx: &opentelemetry::Context,
        injector: &mut dyn opentelemetry::propagation::Injector,
    ) {
        self.0.inject_context(cx, injector)
    }

    fn extract_with_context(
        &self,
        cx: &opentelemetry::Context,
        extractor: &dyn opentelemetry::propagation::Extractor,
    ) -> opentelemetry::Context {
        self.0.extract_with_context(cx, extractor)
    }

    fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
        self.0.fields()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = TraceConfig::from_vars(vars(&[])).unwrap();
        assert!(!c.disabled);
        assert_eq!(c.service_name, "unknown_service");
        assert_eq!(c.sampler, SamplerKind::ParentBasedAlwaysOn);
        assert_eq!(c.propagators, ["tracecontext", "baggage"]);
        assert_eq!(
            c.exporter,
            Exporter::OtlpHttp {
                endpoint: "http://localhost:4318/v1/traces".into()
            }
        );
    }

    #[test]
    fn reads_every_variable() {
        let c = TraceConfig::from_vars(vars(&[
            ("OTEL_SERVICE_NAME", "api"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,team=a%20b,service.name=ignored",
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_PROPAGATORS", "tracecontext"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ]))
        .unwrap();
        assert_eq!(c.service_name, "api");
        assert!(c.resource.contains(&KeyValue::new("team", "a b")));
        assert_eq!(c.sampler, SamplerKind::ParentBasedTraceIdRatio(0.25));
        assert_eq!(c.propagators, ["tracecontext"]);
        assert_eq!(
            c.exporter,
            Exporter::OtlpGrpc {
                endpoint: "http://collector:4317".into()
            }
        );
        assert_eq!(c.timeout, Duration::from_millis(2500));
        let full = TraceConfig::from_vars(vars(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://x:1/custom",
        )]))
        .unwrap();
        assert_eq!(
            full.exporter,
            Exporter::OtlpHttp {
                endpoint: "http://x:1/custom".into()
            }
        );
        let off = TraceConfig::from_vars(vars(&[("OTEL_SDK_DISABLED", "TRUE")])).unwrap();
        assert!(off.disabled);
    }

    #[test]
    fn otlp_headers_merge_and_never_show_in_debug() {
        let c = TraceConfig::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr%20et, X-Team=a"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-team=b"),
            ("OTEL_TRACES_EXPORTER", "console"),
        ]))
        .unwrap();
        assert_eq!(
            c.headers,
            [
                ("api-key".to_owned(), "s3cr et".to_owned()),
                ("x-team".to_owned(), "b".to_owned())
            ]
        );
        assert_eq!(c.exporter, Exporter::Console);
        let debug = format!("{c:?}");
        assert!(
            debug.contains("api-key") && !debug.contains("s3cr"),
            "{debug}"
        );
        // A line break would split the header: refused, secret not echoed.
        let err = TraceConfig::from_vars(vars(&[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "api-key=s3cret%0Ax",
        )]))
        .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let err =
            TraceConfig::from_vars(vars(&[("OTEL_EXPORTER_OTLP_HEADERS", "bad header=s3cret")]))
                .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn rejects_bad_values_with_the_variable_named() {
        for (k, v) in [
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
            ("OTEL_PROPAGATORS", "b3"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
        ] {
            let mut pairs = vec![(k, v)];
            if k == "OTEL_TRACES_SAMPLER_ARG" {
                pairs.push(("OTEL_TRACES_SAMPLER", "traceidratio"));
            }
            let err = TraceConfig::from_vars(vars(&pairs)).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
    }
}
