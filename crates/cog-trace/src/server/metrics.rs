//! `http.server.request.duration` and `http.server.active_requests`.

use opentelemetry::metrics::MeterProvider;

/// `http.server.request.duration` (s) and `http.server.active_requests`.
#[derive(Clone)]
pub(super) struct Metrics {
    pub(super) duration: opentelemetry::metrics::Histogram<f64>,
    pub(super) active: opentelemetry::metrics::UpDownCounter<i64>,
}

impl Metrics {
    /// The instruments of the global meter provider, or `None` while it is
    /// the API's no-op provider (no SDK installed): the layer then skips
    /// metrics entirely instead of timing requests and building attributes
    /// for instruments that drop them. Install the meter provider before
    /// building the layer (instruments taken from the no-op provider stay
    /// no-ops anyway).
    pub(super) fn from_global() -> Option<Self> {
        Metrics::from_provider(&*opentelemetry::global::meter_provider())
    }

    pub(super) fn from_provider(provider: &(dyn MeterProvider + Send + Sync)) -> Option<Self> {
        // The no-op provider is the one without state: any provider that
        // records has somewhere to put the records. (`dyn MeterProvider`
        // cannot be downcast; its size can be read.)
        if std::mem::size_of_val(provider) == 0 {
            return None;
        }
        let meter = provider.meter("cog-trace");
        Some(Metrics {
            duration: meter
                .f64_histogram("http.server.request.duration")
                .with_description("Duration of HTTP server requests")
                .with_unit("s")
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                ])
                .build(),
            active: meter
                .i64_up_down_counter("http.server.active_requests")
                .with_description("Number of active HTTP server requests")
                .with_unit("{request}")
                .build(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_skipped_only_for_the_no_op_provider() {
        let noop = opentelemetry::metrics::noop::NoopMeterProvider::new();
        assert!(Metrics::from_provider(&noop).is_none());
        let sdk = opentelemetry_sdk::metrics::SdkMeterProvider::builder().build();
        assert!(Metrics::from_provider(&sdk).is_some());
    }
}
