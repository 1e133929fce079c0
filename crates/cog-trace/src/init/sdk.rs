//! Building the SDK pipeline a `TraceConfig` describes.

use std::sync::Arc;

use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

use super::{Exporter, InitError, SamplerKind, TraceConfig, TraceGuard};

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

impl TraceConfig {
    /// The export headers as gRPC metadata; a header that cannot be sent
    /// as text metadata (a `-bin` name) is an error naming it (never its
    /// value, which may be a secret).
    fn grpc_metadata(&self) -> Result<tonic::metadata::MetadataMap, InitError> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (k, v) in &self.headers {
            let (Ok(key), Ok(value)) = (
                k.parse::<tonic::metadata::AsciiMetadataKey>(),
                v.parse::<tonic::metadata::AsciiMetadataValue>(),
            ) else {
                return Err(InitError::Exporter {
                    source: format!(
                        "the export header {k:?} cannot be sent as gRPC text metadata \
                         (a name ending in -bin is binary metadata)"
                    )
                    .into(),
                });
            };
            metadata.insert(key, value);
        }
        Ok(metadata)
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
    pub(super) fn w3c(&self) -> Option<bool> {
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
        // Refused before anything starts: a header that cannot go out
        // would leave every export unauthenticated, silently.
        let metadata = match &self.exporter {
            Exporter::OtlpGrpc { .. } => Some(self.grpc_metadata()?),
            _ => None,
        };
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
                    .map_err(|e| InitError::Exporter { source: e.into() })?,
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
            Exporter::OtlpGrpc { endpoint } => Some(
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.clone())
                    .with_timeout(self.timeout)
                    .with_metadata(metadata.unwrap_or_default())
                    .build(),
            ),
            Exporter::OtlpHttp { endpoint } => Some(
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(endpoint.clone())
                    .with_timeout(self.timeout)
                    // The HTTP exporter percent-decodes header values once
                    // more: values are already decoded (`from_vars`), so a
                    // `%` in one is written as `%25` to arrive as it is.
                    .with_headers(
                        self.headers
                            .iter()
                            .map(|(k, v)| (k.clone(), v.replace('%', "%25")))
                            .collect(),
                    )
                    .build(),
            ),
        };
        if let Some(exporter) = span_exporter {
            let exporter = match exporter {
                Ok(exporter) => exporter,
                Err(e) => {
                    drop(_entered);
                    // Dropping a runtime blocks on its threads, which
                    // panics inside an async context (where `build` is
                    // usually called): let them go in the background.
                    if let Some(rt) = export {
                        rt.shutdown_background();
                    }
                    return Err(InitError::Exporter { source: e.into() });
                }
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A header gRPC metadata cannot carry refuses the pipeline, named
    /// without its value; over HTTP the same header goes out.
    #[test]
    fn a_header_grpc_cannot_carry_is_refused_by_name() {
        let mut config = TraceConfig::from_vars(|k| {
            (k == "OTEL_EXPORTER_OTLP_PROTOCOL").then(|| "grpc".to_owned())
        })
        .unwrap();
        config.headers = vec![("x-key-bin".into(), "s3cret".into())];
        let err = config.build().unwrap_err();
        let shown = format!("{err} {:?}", std::error::Error::source(&err));
        assert!(
            shown.contains("x-key-bin") && !shown.contains("s3cret"),
            "{shown}"
        );
        config.headers = vec![("x-key".into(), "s3cret".into())];
        config.build().unwrap().shutdown();
    }
}
