//! Capturing OpenTelemetry spans in tests.

use opentelemetry::trace::{TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

/// A real SDK tracer provider, installed as the global one, that keeps
/// every ended span in memory. Install it in a test binary of its own:
/// the global provider is process-wide.
#[derive(Debug)]
pub struct SpanCapture {
    provider: SdkTracerProvider,
    exporter: InMemorySpanExporter,
}

impl SpanCapture {
    /// Installs a capturing provider as the global tracer provider.
    pub fn install() -> Self {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        SpanCapture { provider, exporter }
    }

    /// A context whose span (named `name`) is sampled: attach it, or run
    /// work under it, to stand for a traced request.
    pub fn root(&self, name: &'static str) -> Context {
        let span = self.provider.tracer("cog-testkit").start(name);
        Context::new().with_span(span)
    }

    /// Every span ended so far.
    pub fn spans(&self) -> Vec<SpanData> {
        self.exporter.get_finished_spans().unwrap_or_default()
    }

    /// Forgets the spans ended so far.
    pub fn clear(&self) {
        self.exporter.reset();
    }
}

/// The attribute `key` of `span`, if set.
pub fn attr(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

/// The first span named `name`; panics, listing every span, when none is.
pub fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span named {name}: {spans:?}"))
}

/// The spans whose parent is `parent`.
pub fn children<'a>(spans: &'a [SpanData], parent: &SpanData) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_context.span_id())
        .collect()
}
