//! Hostile propagation headers: never a panic, never an error, always a
//! fresh trace.

use cog_testkit::OtlpReceiver;

use crate::support::{app, config, request, send, spans};

const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const P: &str = "00f067aa0ba902b7";

fn cases() -> Vec<Vec<(&'static str, String)>> {
    let tp = |s: String| vec![("traceparent", s)];
    let long = "a".repeat(10_000);
    vec![
        tp(String::new()),
        tp(" ".into()),
        tp("garbage".into()),
        tp(format!("00-{T}-{P}")),
        tp(format!("00-{T}-{P}-01-extra-fields-on-version-00")),
        tp(format!("ff-{T}-{P}-01")),
        tp(format!("0-{T}-{P}-01")),
        tp(format!("00-{}-{P}-01", "0".repeat(32))),
        tp(format!("00-{T}-{}-01", "0".repeat(16))),
        tp(format!("00-{}-{P}-01", T.to_uppercase())),
        tp(format!("00-{}-{P}-01", &T[..31])),
        tp(format!("00-{T}0-{P}-01")),
        tp(format!("00-{T}-{}-01", &P[..15])),
        tp(format!("00-{T}-{P}-1")),
        tp(format!("00-{T}-{P}-zz")),
        tp(format!("00_{T}_{P}_01")),
        tp(format!("00-{}-{P}-01", "g".repeat(32))),
        tp(format!("00--{P}-01")),
        tp(format!("00-{T}--01")),
        tp(format!("{long}-{T}-{P}-01")),
        tp(format!("00-{T}-{P}-01{long}")),
        tp("\u{7f}\u{1}".into()),
        tp(format!("00-{T}-{P}-01,00-{T}-{P}-01")),
        vec![
            ("traceparent", format!("00-{T}-{P}-01")),
            ("traceparent", format!("00-{T}-{P}-01")),
        ],
        vec![("tracestate", "a=b".into())],
        vec![("tracestate", long.clone())],
        vec![("tracestate", "=,=,=".into())],
        vec![("baggage", long.repeat(2))],
        vec![("baggage", "%%%,==,;;".into())],
        vec![("baggage", "k=v;".repeat(1000))],
        vec![("traceparent", "00-----".into()), ("baggage", "k".into())],
        vec![("traceparent", "🙂".into())],
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_context_starts_a_fresh_trace() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let guard = config(&receiver, true, &[]).build().unwrap();
    let svc = app(&guard);
    let cases = cases();
    assert!(cases.len() >= 30);
    for (i, headers) in cases.iter().enumerate() {
        let mut req = request(&format!("/items/{i}"), &[]);
        for (k, v) in headers {
            // Some values are not even valid header bytes: those cannot
            // reach a server, so skip just that header.
            if let Ok(v) = http::HeaderValue::from_str(v) {
                req.headers_mut().append(*k, v);
            }
        }
        let res = send(&svc, req).await;
        assert_eq!(res.status(), 200, "case {i}");
        assert!(res.headers().contains_key("traceparent"), "case {i}");
    }
    let got = spans(&guard, &receiver, cases.len()).await;
    assert_eq!(got.len(), cases.len());
    for s in &got {
        let path = s.attr("url.path").unwrap();
        // Case 0-8 style inputs, and everything else: parentless, new ids.
        assert_eq!(s.parent_span_id(), "", "{path} joined a malformed parent");
        assert_ne!(s.trace_id(), "0".repeat(32), "{path}");
    }
    // A well-formed traceparent, for contrast, is joined.
    send(
        &svc,
        request("/ok", &[("traceparent", &format!("00-{T}-{P}-01"))]),
    )
    .await;
    let got = spans(&guard, &receiver, cases.len() + 1).await;
    let ok = got
        .iter()
        .find(|s| s.attr("url.path").as_deref() == Some("/ok"))
        .unwrap();
    assert_eq!(ok.parent_span_id(), P);
}

#[tokio::test]
async fn an_exporter_that_cannot_be_built_keeps_its_cause() {
    use std::error::Error as _;
    let vars = |k: &str| match k {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://bad host:4318".to_owned()),
        _ => None,
    };
    let err = cog_trace::TraceConfig::from_vars(vars)
        .unwrap()
        .build()
        .expect_err("an endpoint with a space is not a URI");
    assert!(
        matches!(err, cog_trace::InitError::Exporter { .. }),
        "{err:?}"
    );
    assert!(err.source().is_some(), "the exporter's error is the source");
}
