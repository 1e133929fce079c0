//! The guard that owns a tracing pipeline and flushes it.

use std::fmt;
use std::sync::Arc;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use super::SamplerKind;

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
    pub(super) provider: Option<SdkTracerProvider>,
    /// The runtime export runs on (OTLP only).
    pub(super) export: Option<tokio::runtime::Runtime>,
    pub(super) propagator: Arc<dyn TextMapPropagator + Send + Sync>,
    /// See [`TraceConfig::w3c`].
    pub(super) w3c: Option<bool>,
    pub(super) sampler: SamplerKind,
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
