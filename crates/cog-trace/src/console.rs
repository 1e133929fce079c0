//! `OTEL_TRACES_EXPORTER=console`: one line per ended span.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;

use opentelemetry::trace::Status;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// Writes each span as one line:
/// `<trace id> <span id> <parent id|-> <kind> "<name>" <ms>ms <status> k=v …`.
pub(crate) struct ConsoleExporter {
    out: Mutex<Box<dyn std::io::Write + Send>>,
}

impl std::fmt::Debug for ConsoleExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleExporter").finish_non_exhaustive()
    }
}

impl ConsoleExporter {
    pub(crate) fn stdout() -> Self {
        Self::to(Box::new(std::io::stdout()))
    }

    pub(crate) fn to(out: Box<dyn std::io::Write + Send>) -> Self {
        ConsoleExporter {
            out: Mutex::new(out),
        }
    }
}

pub(crate) fn line(span: &SpanData) -> String {
    let sc = &span.span_context;
    let mut s = String::with_capacity(160);
    let parent = if span.parent_span_id == opentelemetry::trace::SpanId::INVALID {
        "-".to_owned()
    } else {
        span.parent_span_id.to_string()
    };
    let ms = span
        .end_time
        .duration_since(span.start_time)
        .unwrap_or_default()
        .as_secs_f64()
        * 1e3;
    let _ = write!(
        s,
        "{} {} {} {:?} {:?} {ms:.3}ms",
        sc.trace_id(),
        sc.span_id(),
        parent,
        span.span_kind,
        span.name
    );
    match &span.status {
        Status::Unset => s.push_str(" unset"),
        Status::Ok => s.push_str(" ok"),
        Status::Error { description } => {
            let _ = write!(s, " error({description:?})");
        }
    }
    for kv in &span.attributes {
        let _ = write!(s, " {}={}", kv.key, kv.value);
    }
    s
}

impl SpanExporter for ConsoleExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut text = String::new();
        for span in &batch {
            text.push_str(&line(span));
            text.push('\n');
        }
        let mut out = self
            .out
            .lock()
            .map_err(|_| OTelSdkError::InternalFailure("console exporter poisoned".into()))?;
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_line_per_span_with_ids_status_and_attributes() {
        let buf = Buf::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(ConsoleExporter::to(Box::new(buf.clone())))
            .build();
        let tracer = provider.tracer("t");
        let mut span = tracer.start("GET /items/{id}");
        span.set_attribute(KeyValue::new("http.response.status_code", 503));
        span.set_status(Status::error("boom"));
        let trace_id = span.span_context().trace_id();
        span.end();
        tracer.start("second").end();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with(&trace_id.to_string()), "{text}");
        assert!(lines[0].contains("\"GET /items/{id}\""), "{text}");
        assert!(lines[0].contains("error(\"boom\")"), "{text}");
        assert!(lines[0].contains("http.response.status_code=503"), "{text}");
        assert!(
            lines[1].contains("\"second\" ") && lines[1].contains(" unset"),
            "{text}"
        );
    }

    /// The third field is the parent's span id (`-` for a root), and the
    /// duration is in milliseconds.
    #[test]
    fn parent_and_duration() {
        use opentelemetry::trace::TraceContextExt as _;
        use std::time::{Duration, UNIX_EPOCH};
        let buf = Buf::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(ConsoleExporter::to(Box::new(buf.clone())))
            .build();
        let tracer = provider.tracer("t");
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut root = tracer
            .span_builder("root")
            .with_start_time(start)
            .start(&tracer);
        let root_id = root.span_context().span_id();
        let cx =
            opentelemetry::Context::new().with_remote_span_context(root.span_context().clone());
        let mut child = tracer
            .span_builder("child")
            .with_start_time(start)
            .start_with_context(&tracer, &cx);
        child.end_with_timestamp(start + Duration::from_micros(2_500));
        root.end_with_timestamp(start + Duration::from_millis(1_500));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let fields: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
        assert_eq!(fields.len(), 2, "{text}");
        assert_eq!(fields[0][2], root_id.to_string(), "{text}");
        assert_eq!(fields[0][5], "2.500ms", "{text}");
        assert_eq!(fields[1][2], "-", "{text}");
        assert_eq!(fields[1][5], "1500.000ms", "{text}");
    }
}
