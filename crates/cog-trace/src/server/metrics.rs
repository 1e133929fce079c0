//! `http.server.request.duration` and `http.server.active_requests`.

use std::borrow::Cow;
use std::sync::Arc;

use http::Method;
use http::request::Parts;
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider;

use super::layer::Shared;
use crate::attributes::{METHODS, method_index};

/// `http.server.request.duration` (s) and `http.server.active_requests`.
#[derive(Clone)]
pub(super) struct Metrics {
    duration: opentelemetry::metrics::Histogram<f64>,
    active: opentelemetry::metrics::UpDownCounter<i64>,
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

impl ActiveGuard {
    /// Counts a request as active until finished or dropped.
    /// The layer must have metrics.
    pub(super) fn start(shared: Arc<Shared>, method: &Method, parts: &Parts) -> ActiveGuard {
        let https = parts.uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let method = method_index(method);
        let attrs = &ACTIVE_ATTRS[method * 2 + usize::from(https)];
        if let Some(m) = &shared.metrics {
            m.active.add(1, attrs);
        }
        ActiveGuard {
            shared,
            started: quanta::Instant::now(),
            attrs,
            method: METHODS[method],
            scheme: if https { "https" } else { "http" },
            done: false,
        }
    }
}

/// `http.request.method` and `url.scheme` for every known method (and
/// `_OTHER`) and both schemes, built once: the active-requests
/// attributes, and the first two of the duration's, without building and
/// dropping them per request.
static ACTIVE_ATTRS: std::sync::LazyLock<Vec<[KeyValue; 2]>> = std::sync::LazyLock::new(|| {
    METHODS
        .iter()
        .flat_map(|m| {
            ["http", "https"].map(|scheme| {
                [
                    KeyValue::new("http.request.method", *m),
                    KeyValue::new("url.scheme", scheme),
                ]
            })
        })
        .collect()
});

/// One request in flight; holds the layer's shared state for the response
/// half.
pub(super) struct ActiveGuard {
    shared: Arc<Shared>,
    started: quanta::Instant,
    attrs: &'static [KeyValue; 2],
    method: &'static str,
    scheme: &'static str,
    done: bool,
}

impl ActiveGuard {
    pub(super) fn finish(mut self, route: Option<Cow<'static, str>>, status: Option<u16>) {
        self.done = true;
        let Some(metrics) = &self.shared.metrics else {
            return;
        };
        metrics.active.add(-1, self.attrs);
        // Built, not cloned from the table: a clone costs more than a new
        // pair of `&'static str`s.
        let mut attrs: smallvec::SmallVec<[KeyValue; 5]> = smallvec::smallvec![
            KeyValue::new("http.request.method", self.method),
            KeyValue::new("url.scheme", self.scheme),
        ];
        if let Some(r) = route {
            attrs.push(KeyValue::new("http.route", r));
        }
        match status {
            Some(s) => {
                attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
                if s >= 500 {
                    attrs.push(KeyValue::new("error.type", s.to_string()));
                }
            }
            None => attrs.push(KeyValue::new("error.type", "_OTHER")),
        }
        metrics
            .duration
            .record(self.started.elapsed().as_secs_f64(), &attrs);
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if !self.done {
            // Abandoned (the client went away): no longer active.
            if let Some(m) = &self.shared.metrics {
                m.active.add(-1, self.attrs);
            }
        }
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
