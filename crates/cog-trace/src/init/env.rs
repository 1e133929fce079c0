//! `TraceConfig` from the standard `OTEL_*` variables.

use std::fmt;
use std::time::Duration;

use opentelemetry::KeyValue;

use super::InitError;

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
#[non_exhaustive]
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
        let vars = Vars(&var);
        let (service_name, resource) = vars.resource()?;
        Ok(TraceConfig {
            disabled: vars
                .get("OTEL_SDK_DISABLED")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            service_name,
            resource,
            sampler: vars.sampler()?,
            propagators: vars.propagators()?,
            exporter: vars.exporter()?,
            timeout: vars.timeout()?,
            headers: vars.headers()?,
        })
    }
}

fn invalid(var: &'static str, value: impl Into<String>, reason: &'static str) -> InitError {
    InitError::InvalidVar {
        var,
        value: value.into(),
        reason,
    }
}

/// The `OTEL_*` variables, one reader per setting.
struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    /// A variable, trimmed; unset and empty are the same.
    fn get(&self, k: &str) -> Option<String> {
        (self.0)(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// The signal's own variable if set, else the general one, with the
    /// name of the one read (errors name the variable that holds the bad
    /// value).
    fn either(
        &self,
        traces: &'static str,
        general: &'static str,
    ) -> Option<(&'static str, String)> {
        self.get(traces)
            .map(|v| (traces, v))
            .or_else(|| self.get(general).map(|v| (general, v)))
    }

    /// `service.name` (`OTEL_SERVICE_NAME` first) and the other resource
    /// attributes.
    fn resource(&self) -> Result<(String, Vec<KeyValue>), InitError> {
        let mut resource = Vec::new();
        let mut service_name = None;
        if let Some(attrs) = self.get("OTEL_RESOURCE_ATTRIBUTES") {
            for pair in attrs.split(',').filter(|p| !p.trim().is_empty()) {
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(invalid(
                        "OTEL_RESOURCE_ATTRIBUTES",
                        attrs.clone(),
                        "expected key=value pairs separated by commas",
                    ));
                };
                let (k, v) = (k.trim().to_owned(), percent_decode(v.trim()));
                if k == "service.name" {
                    service_name = Some(v);
                } else {
                    resource.push(KeyValue::new(k, v));
                }
            }
        }
        let service_name = self
            .get("OTEL_SERVICE_NAME")
            .or(service_name)
            .unwrap_or_else(|| "unknown_service".to_owned());
        Ok((service_name, resource))
    }

    fn sampler(&self) -> Result<SamplerKind, InitError> {
        let ratio = || match self.get("OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(1.0),
            Some(v) => match v.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(invalid(
                    "OTEL_TRACES_SAMPLER_ARG",
                    v,
                    "expected a ratio between 0 and 1",
                )),
            },
        };
        Ok(match self.get("OTEL_TRACES_SAMPLER").as_deref() {
            None | Some("parentbased_always_on") => SamplerKind::ParentBasedAlwaysOn,
            Some("always_on") => SamplerKind::AlwaysOn,
            Some("always_off") => SamplerKind::AlwaysOff,
            Some("traceidratio") => SamplerKind::TraceIdRatio(ratio()?),
            Some("parentbased_always_off") => SamplerKind::ParentBasedAlwaysOff,
            Some("parentbased_traceidratio") => SamplerKind::ParentBasedTraceIdRatio(ratio()?),
            Some(other) => return Err(invalid("OTEL_TRACES_SAMPLER", other, "unknown sampler")),
        })
    }

    fn propagators(&self) -> Result<Vec<String>, InitError> {
        let propagators = self
            .get("OTEL_PROPAGATORS")
            .unwrap_or_else(|| "tracecontext,baggage".to_owned())
            .split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>();
        for p in &propagators {
            if !matches!(p.as_str(), "tracecontext" | "baggage" | "none") {
                return Err(invalid(
                    "OTEL_PROPAGATORS",
                    p.clone(),
                    "supported: tracecontext, baggage, none",
                ));
            }
        }
        Ok(propagators)
    }

    /// The exporter, its protocol and endpoint (signal-specific variables
    /// first).
    fn exporter(&self) -> Result<Exporter, InitError> {
        let grpc = match self.either(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ) {
            None => false,
            Some((_, p)) if p == "grpc" => true,
            Some((_, p)) if p == "http/protobuf" => false,
            Some((var, other)) => {
                return Err(invalid(var, other, "supported: grpc, http/protobuf"));
            }
        };
        let endpoint = match self.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(full) => full,
            None => {
                let base = self.get("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_else(|| {
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
        Ok(match self.get("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") if grpc => Exporter::OtlpGrpc { endpoint },
            None | Some("otlp") => Exporter::OtlpHttp { endpoint },
            Some("none") => Exporter::None,
            Some("console") => Exporter::Console,
            Some(other) => {
                return Err(invalid(
                    "OTEL_TRACES_EXPORTER",
                    other,
                    "supported: otlp, console, none",
                ));
            }
        })
    }

    fn timeout(&self) -> Result<Duration, InitError> {
        match self.either(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ) {
            None => Ok(Duration::from_secs(10)),
            Some((var, v)) => match v.parse() {
                Ok(ms) => Ok(Duration::from_millis(ms)),
                Err(_) => Err(invalid(var, v, "expected milliseconds")),
            },
        }
    }

    /// Export headers: the general list, then the traces one (which wins
    /// for a name in both).
    fn headers(&self) -> Result<Vec<(String, String)>, InitError> {
        let mut headers: Vec<(String, String)> = Vec::new();
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            let Some(list) = self.get(var) else { continue };
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
                    return Err(invalid(
                        var,
                        String::new(),
                        "expected name=value pairs of valid header names and values, separated by commas",
                    ));
                };
                headers.retain(|(old, _)| *old != k);
                headers.push((k, v));
            }
        }
        Ok(headers)
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
        // The default protocol, named; the traces variable wins over the
        // general one.
        let http = TraceConfig::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]))
        .unwrap();
        assert_eq!(
            http.exporter,
            Exporter::OtlpHttp {
                endpoint: "http://localhost:4318/v1/traces".into()
            }
        );
        let off = TraceConfig::from_vars(vars(&[("OTEL_SDK_DISABLED", "TRUE")])).unwrap();
        assert!(off.disabled);
    }

    /// Only `%` and two hex digits is an escape; a `%` near the end, or
    /// before something else, stays as it is.
    #[test]
    fn percent_decoding_leaves_what_is_not_an_escape() {
        let c = TraceConfig::from_vars(vars(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "a=50%,b=%4,c=%41%42,d=%zz,e=100%25",
        )]))
        .unwrap();
        for (k, v) in [
            ("a", "50%"),
            ("b", "%4"),
            ("c", "AB"),
            ("d", "%zz"),
            ("e", "100%"),
        ] {
            assert!(
                c.resource.contains(&KeyValue::new(k, v)),
                "{k}: {:?}",
                c.resource
            );
        }
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
            // The traces variable is the one named when it holds the bad
            // value.
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "carrier-pigeon"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "soon"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "novalue"),
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
