//! The active-request guard: counts a request in
//! `http.server.active_requests` until its response ends (or is dropped),
//! then records its duration.

use std::borrow::Cow;
use std::sync::Arc;

use http::request::Parts;
use opentelemetry::KeyValue;

use super::shared::Shared;
use crate::attributes::{METHODS, method_index};

impl ActiveGuard {
    /// Counts a request as active until finished or dropped; `route`
    /// goes on its duration. The layer must have metrics.
    pub(super) fn start(
        shared: Arc<Shared>,
        parts: &Parts,
        route: Option<Cow<'static, str>>,
    ) -> ActiveGuard {
        let https = parts.uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let at = method_index(&parts.method) * 2 + usize::from(https);
        if let Some(m) = &shared.metrics {
            m.active.add(1, &ACTIVE_ATTRS[at]);
        }
        ActiveGuard {
            shared,
            started: quanta::Instant::now(),
            route,
            at: at as u8,
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
/// half. Small on purpose: it rides in every response future.
pub(super) struct ActiveGuard {
    shared: Arc<Shared>,
    started: quanta::Instant,
    route: Option<Cow<'static, str>>,
    /// Method and scheme: an index into [`ACTIVE_ATTRS`] (method × 2 +
    /// HTTPS).
    at: u8,
    done: bool,
}

impl ActiveGuard {
    pub(super) fn finish(mut self, status: Option<u16>) {
        self.done = true;
        let Some(metrics) = &self.shared.metrics else {
            return;
        };
        let at = usize::from(self.at);
        metrics.active.add(-1, &ACTIVE_ATTRS[at]);
        // Built, not cloned from the table: a clone costs more than a new
        // pair of `&'static str`s.
        let mut attrs: smallvec::SmallVec<[KeyValue; 5]> = smallvec::smallvec![
            KeyValue::new("http.request.method", METHODS[at / 2]),
            KeyValue::new("url.scheme", if at % 2 == 1 { "https" } else { "http" }),
        ];
        if let Some(r) = self.route.take() {
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
                m.active.add(-1, &ACTIVE_ATTRS[usize::from(self.at)]);
            }
        }
    }
}
