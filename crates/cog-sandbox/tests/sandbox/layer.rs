//! The tower layer end to end: hooks around a real service.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use cog_sandbox::layer::{PluginLayer, Resolved};
use cog_sandbox::{Limits, OnError, Plugin, Runtime};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};

use crate::support::{good, module, on_request};

type Body = Full<Bytes>;

/// Echoes `x-plugin` and the request body back; sets `content-type`.
fn app() -> impl tower::Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    service_fn(|req: Request<Body>| async move {
        let seen = req
            .headers()
            .get("x-plugin")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut res = Response::new(Body::from(body));
        res.headers_mut().insert(
            "x-seen",
            seen.parse().unwrap_or(http::HeaderValue::from_static("")),
        );
        res.headers_mut()
            .insert("content-type", "text/plain".parse().unwrap());
        Ok::<_, Infallible>(res)
    })
}

/// Replaces the request body with "changed".
fn rewrite_to_changed(rt: &Runtime) -> Plugin {
    rt.load(
        "rewrite",
        &module(
            r#"(data (i32.const 0) "changed")
               (func (export "cog_on_request") (result i32)
                 (drop (call $body_write (i32.const 0) (i32.const 7)))
                 i32.const 0)"#,
        ),
        Limits::default(),
    )
    .unwrap()
    .bodies(true, false)
}

fn layer(plugins: Vec<Plugin>) -> PluginLayer {
    let plugins: Arc<[Plugin]> = plugins.into();
    PluginLayer::new(move |parts: &http::request::Parts| Resolved {
        tenant: parts
            .headers
            .get("x-tenant")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("anonymous")
            .into(),
        plugins: plugins.clone(),
    })
}

async fn send(layer: &PluginLayer, body: &'static str) -> (StatusCode, http::HeaderMap, Bytes) {
    let req = Request::post("/items")
        .header("x-tenant", "acme")
        .body(Body::from(body))
        .unwrap();
    let res = layer.layer(app()).oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_hooks_run_around_the_service() {
    let rt = Runtime::new();
    let add = rt.load("add", &good(), Limits::default()).unwrap();
    let tag_response = rt
        .load(
            "tag",
            &module(
                r#"(data (i32.const 0) "x-tagged") (data (i32.const 16) "1")
                   (func (export "cog_on_response") (result i32)
                     (drop (call $header_set (i32.const 1) (i32.const 0) (i32.const 8) (i32.const 16) (i32.const 1)))
                     i32.const 0)"#,
            ),
            Limits::default(),
        )
        .unwrap();
    let rewrite = rewrite_to_changed(&rt);
    let l = layer(vec![add, tag_response, rewrite]);
    let (status, headers, body) = send(&l, "original").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["x-seen"], "ok",
        "the service saw the plugin's header"
    );
    assert_eq!(headers["x-tagged"], "1");
    assert_eq!(body, "changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_answer_without_the_service() {
    let rt = Runtime::new();
    let reject = rt
        .load(
            "deny",
            &module(
                r#"(data (i32.const 0) "denied")
                   (func (export "cog_on_request") (result i32)
                     (drop (call $reject (i32.const 451) (i32.const 0) (i32.const 6)))
                     i32.const 0)"#,
            ),
            Limits::default(),
        )
        .unwrap();
    let (status, headers, body) = send(&layer(vec![reject]), "x").await;
    assert_eq!(status, 451);
    assert_eq!(body, "denied");
    assert!(headers.get("x-seen").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_plugins_are_skipped_or_fail_the_request() {
    let rt = Runtime::new();
    let trap = on_request("unreachable");
    let add = rt.load("add", &good(), Limits::default()).unwrap();
    let skip = rt.load("trap", &trap, Limits::default()).unwrap();
    let (status, headers, _) = send(&layer(vec![skip.clone(), add.clone()]), "x").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-seen"], "ok", "the next plugin still ran");
    let fail = skip.on_error(OnError::Fail);
    let (status, _, _) = send(&layer(vec![fail, add]), "x").await;
    assert_eq!(status, 500);
    // A spinning plugin with a short deadline: same, and the host serves on.
    let spin = rt
        .load(
            "spin",
            &on_request("(loop $l (br $l))"),
            Limits::default()
                .fuel(u64::MAX / 2)
                .deadline(std::time::Duration::from_millis(20)),
        )
        .unwrap()
        .on_error(OnError::Fail);
    let (status, _, _) = send(&layer(vec![spin]), "x").await;
    assert_eq!(status, 500);
    let (status, _, _) = send(
        &layer(vec![rt.load("add", &good(), Limits::default()).unwrap()]),
        "x",
    )
    .await;
    assert_eq!(status, 200);
}

/// A KV store whose every call takes `STUCK`: a host call that does not
/// come back within any deadline.
struct Stuck;

const STUCK: std::time::Duration = std::time::Duration::from_secs(4);

impl cog_sandbox::KvStore for Stuck {
    fn get(
        &self,
        _: &cog_sandbox::KvScope,
        _: &[u8],
    ) -> Result<Option<Vec<u8>>, cog_sandbox::KvError> {
        std::thread::sleep(STUCK);
        Ok(None)
    }
    fn set(
        &self,
        _: &cog_sandbox::KvScope,
        _: &[u8],
        _: &[u8],
        _: cog_sandbox::KvQuota,
    ) -> Result<(), cog_sandbox::KvError> {
        std::thread::sleep(STUCK);
        Ok(())
    }
    fn delete(&self, _: &cog_sandbox::KvScope, _: &[u8]) -> Result<bool, cog_sandbox::KvError> {
        std::thread::sleep(STUCK);
        Ok(false)
    }
    fn clear(&self, _: &cog_sandbox::KvScope) -> Result<bool, cog_sandbox::KvError> {
        std::thread::sleep(STUCK);
        Ok(false)
    }
}

/// A plugin whose thread does not come back: the request is answered once
/// the plugins' deadlines and the grace have passed, by their policies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_thread_that_does_not_return_is_a_failed_plugin() {
    use cog_sandbox::layer::STRANDED_GRACE;
    let rt = Runtime::new().kv(Arc::new(Stuck));
    let deadline = std::time::Duration::from_millis(100);
    let stuck = rt
        .load(
            "stuck",
            &on_request(
                "(drop (call $kv_get (i32.const 0) (i32.const 1) (i32.const 16) (i32.const 16)))",
            ),
            Limits::default().deadline(deadline),
        )
        .unwrap();
    let add = rt.load("add", &good(), Limits::default()).unwrap();
    // The chain's deadlines: 100 ms and the default's.
    let bound = deadline + add.limits().deadline + STRANDED_GRACE;
    for (policy, want) in [(OnError::Skip, 200), (OnError::Fail, 500)] {
        let l = layer(vec![stuck.clone().on_error(policy), add.clone()]);
        let started = std::time::Instant::now();
        let (status, headers, _) = send(&l, "x").await;
        let took = started.elapsed();
        assert_eq!(status, want, "{policy:?}");
        assert!(
            took >= bound && took < bound + std::time::Duration::from_millis(900),
            "{policy:?}: answered after {took:?}, bound {bound:?}"
        );
        if want == 200 {
            // The lost phase's changes are dropped: not even the good
            // plugin's header, which ran on the lost thread.
            assert_eq!(headers["x-seen"], "");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_input_limit_are_413() {
    let rt = Runtime::new();
    let reader = rt
        .load("reader", &good(), Limits::default().max_input_bytes(4))
        .unwrap()
        .bodies(true, false);
    let (status, _, _) = send(&layer(vec![reader]), "more than four bytes").await;
    assert_eq!(status, 413);
}

/// A request body a plugin rewrote reaches the service with its new
/// length: a stale `Content-Length` would make a proxy behind it cut the
/// body or wait for bytes that never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_request_body_carries_its_new_length() {
    let rt = Runtime::new();
    let rewrite = rewrite_to_changed(&rt);
    let echo_length = service_fn(|req: Request<Body>| async move {
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let chunked = req.headers().contains_key(http::header::TRANSFER_ENCODING);
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Ok::<_, Infallible>(Response::new(Body::from(format!(
            "{declared} {} {chunked}",
            body.len()
        ))))
    });
    let req = Request::post("/items")
        .header(http::header::CONTENT_LENGTH, "24")
        .header(http::header::TRANSFER_ENCODING, "chunked")
        .body(Body::from("a much longer original!!"))
        .unwrap();
    let res = layer(vec![rewrite])
        .layer(echo_length)
        .oneshot(req)
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "7 7 false");
}

/// A response too large for the plugins to read is the server's failure:
/// 502, never 413 (the client's request was fine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_the_plugin_input_limit_is_502_not_413() {
    let rt = Runtime::new();
    let reader = rt
        .load(
            "reader",
            &module(r#"(func (export "cog_on_response") (result i32) i32.const 0)"#),
            Limits::default().max_input_bytes(8),
        )
        .unwrap()
        .bodies(false, true);
    // The app echoes the request body: 20 bytes back.
    let (status, _, _) = send(&layer(vec![reader]), "twenty bytes of body").await;
    assert_eq!(status, 502);
}

/// A plugin that reads response bodies leaves a `HEAD` answer's length
/// (its `GET`'s) as the service gave it, and adds none to a 204 or a 304;
/// a `GET` answer's is its body's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_bodiless_answer_keeps_its_framing() {
    let rt = Runtime::new();
    let reader = rt
        .load(
            "reader",
            &module(r#"(func (export "cog_on_response") (result i32) i32.const 0)"#),
            Limits::default(),
        )
        .unwrap()
        .bodies(false, true);
    // Answers `status`, with the length of a 7-byte body and no body.
    let service = service_fn(|req: Request<Body>| async move {
        let status: u16 = req.uri().path()[1..].parse().unwrap();
        let mut res = Response::new(Body::default());
        *res.status_mut() = StatusCode::from_u16(status).unwrap();
        if status == 200 {
            res.headers_mut()
                .insert("content-length", http::HeaderValue::from_static("7"));
        }
        Ok::<_, Infallible>(res)
    });
    let length = |method: http::Method, status: u16| {
        let l = layer(vec![reader.clone()]);
        async move {
            let req = Request::builder()
                .method(method)
                .uri(format!("/{status}"))
                .body(Body::default())
                .unwrap();
            let res = l.layer(service).oneshot(req).await.unwrap();
            res.headers()
                .get("content-length")
                .map(|v| v.to_str().unwrap().to_owned())
        }
    };
    assert_eq!(length(http::Method::HEAD, 200).await.as_deref(), Some("7"));
    assert_eq!(length(http::Method::GET, 204).await, None);
    assert_eq!(length(http::Method::GET, 304).await, None);
    // A body read and sent whole: its own length.
    assert_eq!(length(http::Method::GET, 200).await.as_deref(), Some("0"));
}

/// A plugin that could not be loaded is never silently left out: its
/// failure policy applies to each request it is attached to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_plugin_meets_its_failure_policy() {
    let rt = Runtime::new();
    let add = rt.load("add", &good(), Limits::default()).unwrap();
    let broken = Plugin::unavailable("broken", "bytes missing from the store");
    let (status, headers, _) = send(&layer(vec![broken.clone(), add.clone()]), "x").await;
    assert_eq!(status, 200, "skip: the request goes on");
    assert_eq!(headers["x-seen"], "ok");
    let mut ex = crate::support::exchange("acme");
    let err = broken
        .call(cog_sandbox::Phase::Request, &mut ex)
        .unwrap_err();
    assert_eq!(err.kind(), "unavailable");
    let (status, _, _) = send(&layer(vec![broken.on_error(OnError::Fail), add]), "x").await;
    assert_eq!(status, 500, "fail: the request is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_is_built_directly_or_through_its_layer() {
    use cog_sandbox::layer::Plugins;
    let rt = Runtime::new();
    let plugins: Arc<[Plugin]> = vec![rewrite_to_changed(&rt)].into();
    let resolver = move |_: &http::request::Parts| Resolved {
        tenant: "acme".into(),
        plugins: plugins.clone(),
    };
    let req = || {
        Request::post("/items")
            .body(Body::from("original"))
            .unwrap()
    };
    let direct = Plugins::new(app(), resolver.clone());
    let layered = Plugins::<()>::layer(resolver).layer(app());
    for res in [
        direct.oneshot(req()).await.unwrap(),
        layered.oneshot(req()).await.unwrap(),
    ] {
        assert_eq!(
            res.into_body().collect().await.unwrap().to_bytes(),
            "changed"
        );
    }
}

/// The layer is ready exactly when its inner service is (its backpressure
/// kept).
#[tokio::test]
async fn readiness_is_the_inner_services() {
    use cog_testkit::service::{Gate, assert_ready_with_inner};
    let gate = Gate::<Full<Bytes>>::new();
    let mut svc = layer(Vec::new()).layer(gate.clone());
    assert_ready_with_inner::<_, Request<Full<Bytes>>, _>(&mut svc, &gate);
}

/// Copies what the plugin reads of `authorization` into `x-plugin`
/// (`absent` when it reads nothing), and lists the request's header names
/// into `x-names`.
fn reads_authorization(rt: &Runtime, name: &str) -> Plugin {
    rt.load(
        name,
        &module(
            r#"(data (i32.const 0) "authorization") (data (i32.const 16) "x-plugin")
               (data (i32.const 32) "absent") (data (i32.const 48) "x-names")
               (func (export "cog_on_request") (result i32)
                 (local $n i32)
                 (local.set $n (call $header_get (i32.const 0) (i32.const 0) (i32.const 13) (i32.const 64) (i32.const 256)))
                 (if (i32.gt_s (local.get $n) (i32.const 0))
                   (then (drop (call $header_set (i32.const 0) (i32.const 16) (i32.const 8) (i32.const 64) (local.get $n))))
                   (else (drop (call $header_set (i32.const 0) (i32.const 16) (i32.const 8) (i32.const 32) (i32.const 6)))))
                 ;; The names, newline-separated; newlines made commas.
                 (local.set $n (call $header_names (i32.const 0) (i32.const 512) (i32.const 512)))
                 (block $done (loop $next
                   (br_if $done (i32.le_s (local.get $n) (i32.const 0)))
                   (local.set $n (i32.sub (local.get $n) (i32.const 1)))
                   (if (i32.eq (i32.load8_u (i32.add (i32.const 512) (local.get $n))) (i32.const 10))
                     (then (i32.store8 (i32.add (i32.const 512) (local.get $n)) (i32.const 44))))
                   (br $next)))
                 (drop (call $header_set (i32.const 0) (i32.const 48) (i32.const 7) (i32.const 512)
                   (call $header_names (i32.const 0) (i32.const 0) (i32.const 0))))
                 i32.const 0)"#,
        ),
        Limits::default(),
    )
    .unwrap()
}

/// The tenant's API key travels in `Authorization`: plugins do not read it
/// (nor `Proxy-Authorization`), so none can log or keep it, and the service
/// still gets it. A plugin's own value replaces it; `show_credentials`
/// shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_do_not_see_credentials() {
    let rt = Runtime::new();
    // Echoes what the service got: the plugin's copy and the credential.
    let service = service_fn(|req: Request<Body>| async move {
        let mut res = Response::new(Body::default());
        for (from, to) in [
            ("x-plugin", "x-seen"),
            ("x-names", "x-names"),
            ("authorization", "x-auth"),
            ("proxy-authorization", "x-proxy-auth"),
        ] {
            // Every value, as one.
            let all: Vec<&str> = req
                .headers()
                .get_all(from)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            if !all.is_empty() {
                res.headers_mut()
                    .insert(to, all.join(" | ").parse().unwrap());
            }
        }
        Ok::<_, Infallible>(res)
    });
    let send = |layer: PluginLayer| async move {
        let req = Request::get("/items")
            .header("authorization", "Bearer cog_secret")
            .header("proxy-authorization", "Basic c2VjcmV0")
            .header("x-tenant", "acme");
        let res = layer
            .layer(service)
            .oneshot(req.body(Body::default()).unwrap())
            .await
            .unwrap();
        res.headers().clone()
    };
    let seen = send(layer(vec![reads_authorization(&rt, "reader")])).await;
    assert_eq!(seen["x-seen"], "absent");
    let names = seen["x-names"].to_str().unwrap();
    assert!(!names.contains("authorization"), "{names}");
    assert!(names.contains("x-tenant"), "{names}");
    assert_eq!(seen["x-auth"], "Bearer cog_secret");
    assert_eq!(seen["x-proxy-auth"], "Basic c2VjcmV0");

    // A plugin that sets its own credential for the service replaces it.
    let sets = rt
        .load(
            "upstream-credential",
            &module(
                r#"(data (i32.const 0) "authorization") (data (i32.const 16) "Token upstream")
                   (func (export "cog_on_request") (result i32)
                     (drop (call $header_set (i32.const 0) (i32.const 0) (i32.const 13) (i32.const 16) (i32.const 14)))
                     i32.const 0)"#,
            ),
            Limits::default(),
        )
        .unwrap();
    let seen = send(layer(vec![sets])).await;
    assert_eq!(seen["x-auth"], "Token upstream");
    assert_eq!(seen["x-proxy-auth"], "Basic c2VjcmV0");

    // Shown on request.
    let seen = send(layer(vec![reads_authorization(&rt, "checker")]).show_credentials(true)).await;
    assert_eq!(seen["x-seen"], "Bearer cog_secret");
    assert_eq!(seen["x-auth"], "Bearer cog_secret");
}
