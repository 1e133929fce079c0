//! The active-request guard: counts a request in
//! `http.server.active_requests` until its response ends (or is dropped),
//! then records its duration.

use std::borrow::Cow;
use std::sync::Arc;

use http::Method;
use http::request::Parts;
use opentelemetry::KeyValue;

use super::shared::Shared;
use crate::attributes::{METHODS, method_index};

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
