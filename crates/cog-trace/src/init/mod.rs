//! Setting up the OpenTelemetry SDK from the standard `OTEL_*` variables:
//! the variables ([`env`]: `TraceConfig`), the pipeline they describe
//! ([`sdk`]), the guard that owns it ([`guard`]), and `init`, which
//! installs it process-wide.

use std::sync::Arc;

use opentelemetry::propagation::TextMapPropagator;

mod env;
mod guard;
mod sdk;

pub use env::{Exporter, SamplerKind, TraceConfig};
pub use guard::TraceGuard;

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
    #[error("building the OTLP exporter failed")]
    Exporter {
        /// Why (the exporter's own error).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Export needs a tokio runtime (batching runs on it). No longer
    /// returned: export runs on a runtime of its own.
    #[error("tracing export must be set up inside a tokio runtime")]
    NoRuntime,
    /// [`init`] already installed a pipeline in this process: a second one
    /// would leave layers built earlier on the first one's sampler. Keep
    /// the first guard, or build more pipelines with
    /// [`TraceConfig::build`] and [`TraceLayer::from_guard`](crate::server::TraceLayer::from_guard).
    #[error("cog_trace::init was already called in this process")]
    AlreadyInitialized,
}

/// Sets tracing up from the `OTEL_*` variables and installs it globally:
/// the global tracer provider and propagator, so
/// [`TraceLayer::new`](crate::server::TraceLayer::new) and any OpenTelemetry
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
