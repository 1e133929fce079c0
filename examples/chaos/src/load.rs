//! The load: `connections` HTTP/1.1 connections spread over the instances,
//! each sending on its own fixed schedule (open loop: a request is sent
//! when it is due, whether or not the service kept up, and its latency is
//! counted from then, so a stall is not hidden by the requests it
//! delayed). A connection that breaks is made again to the next instance
//! that accepts one, as a load balancer would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// 2xx or 3xx.
    Ok,
    /// 429: the limiter refused, as it should.
    Limited,
    /// Another 4xx.
    Refused,
    /// 503: a fail-closed policy (counted apart).
    Unavailable,
    /// Another 5xx.
    ServerError,
    /// No answer: refused connection, reset, or past the client's timeout.
    Transport,
}

impl Outcome {
    /// Available: answered, and not with a 5xx.
    pub(crate) fn available(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Limited | Outcome::Refused)
    }

    fn of(status: StatusCode) -> Outcome {
        match status.as_u16() {
            200..=399 => Outcome::Ok,
            429 => Outcome::Limited,
            503 => Outcome::Unavailable,
            400..=499 => Outcome::Refused,
            _ => Outcome::ServerError,
        }
    }
}

/// One request as the run saw it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Record {
    /// When it was due, milliseconds into the run.
    pub(crate) at_ms: u32,
    /// From due to answered (or given up).
    pub(crate) latency_us: u32,
    /// From due to sent: how far the generator itself fell behind.
    pub(crate) lag_us: u32,
    /// Index into the tenants.
    pub(crate) tenant: u8,
    /// Index into the instances: where it was sent.
    pub(crate) instance: u8,
    /// The first limit's `q` in the answer's `RateLimit-Policy` (0 when
    /// none): the quota the limiter applied, its instance's share of the
    /// tenant's while it decided without Redis.
    pub(crate) quota: u16,
    pub(crate) outcome: Outcome,
}

/// Who sends: a key each, and how often, relative to the others.
#[derive(Clone, Debug)]
pub(crate) struct Tenant {
    pub(crate) key: String,
    pub(crate) weight: f64,
}

/// The load's shape.
#[derive(Clone, Debug)]
pub(crate) struct Shape {
    pub(crate) connections: usize,
    /// Requests per second, all connections together.
    pub(crate) rate: f64,
    pub(crate) tenants: Arc<Vec<Tenant>>,
    pub(crate) instances: Arc<Vec<SocketAddr>>,
    /// Keys of `/v1/items/{id}`.
    pub(crate) items: u32,
    /// An answer later than this is a transport failure.
    pub(crate) timeout: Duration,
}

/// `q` of the first item of a `RateLimit-Policy` field.
fn first_q(value: &http::HeaderValue) -> Option<u16> {
    let first = value.to_str().ok()?.split(',').next()?;
    first
        .split(';')
        .find_map(|p| p.trim().strip_prefix("q="))?
        .parse()
        .ok()
}

async fn connect(addr: SocketAddr) -> Option<SendRequest<Empty<Bytes>>> {
    let stream = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(sender)
}

/// Runs the load from `start` until `end_ms` milliseconds after it (set
/// while it runs); every request's record.
pub(crate) async fn run(shape: Shape, start: Instant, end_ms: Arc<AtomicU32>) -> Vec<Record> {
    let until = move || start + Duration::from_millis(u64::from(end_ms.load(Ordering::Acquire)));
    let interval = Duration::from_secs_f64(shape.connections as f64 / shape.rate);
    let total: f64 = shape.tenants.iter().map(|t| t.weight).sum();
    let mut workers = Vec::with_capacity(shape.connections);
    for i in 0..shape.connections {
        let shape = shape.clone();
        let until = until.clone();
        // Spread the first requests over one interval.
        let offset = interval.mul_f64(i as f64 / shape.connections as f64);
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
            let mut records = Vec::new();
            let mut target = i % shape.instances.len();
            let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
            let mut due = start + offset;
            while due < until() {
                tokio::time::sleep_until(due.into()).await;
                // The end may have been set while this one slept.
                if due >= until() {
                    break;
                }
                let sent = Instant::now();
                let mut pick = rng.random::<f64>() * total;
                let tenant = shape
                    .tenants
                    .iter()
                    .position(|t| {
                        pick -= t.weight;
                        pick < 0.0
                    })
                    .unwrap_or(0);
                let item = rng.random_range(0..shape.items);
                let mut quota = 0;
                let outcome = tokio::time::timeout(shape.timeout, async {
                    if sender.as_ref().is_none_or(|s| s.is_closed()) {
                        sender = None;
                        for _ in 0..shape.instances.len() {
                            if let Some(s) = connect(shape.instances[target]).await {
                                sender = Some(s);
                                break;
                            }
                            target = (target + 1) % shape.instances.len();
                        }
                    }
                    let Some(s) = sender.as_mut() else {
                        return Outcome::Transport;
                    };
                    if s.ready().await.is_err() {
                        sender = None;
                        return Outcome::Transport;
                    }
                    let req = Request::get(format!("/v1/items/{item}"))
                        .header("host", "chaos")
                        .header(
                            "authorization",
                            format!("Bearer {}", shape.tenants[tenant].key),
                        )
                        .body(Empty::new())
                        .expect("a request");
                    match s.send_request(req).await {
                        Ok(res) => {
                            let status = res.status();
                            quota = res
                                .headers()
                                .get("ratelimit-policy")
                                .and_then(first_q)
                                .unwrap_or(0);
                            match res.into_body().collect().await {
                                Ok(_) => Outcome::of(status),
                                Err(_) => {
                                    sender = None;
                                    Outcome::Transport
                                }
                            }
                        }
                        Err(_) => {
                            sender = None;
                            Outcome::Transport
                        }
                    }
                })
                .await
                .unwrap_or_else(|_| {
                    // Given up: the connection may still deliver a late
                    // answer, so it is not reused.
                    sender = None;
                    Outcome::Transport
                });
                let done = Instant::now();
                records.push(Record {
                    at_ms: (due - start).as_millis() as u32,
                    latency_us: (done - due).as_micros().min(u32::MAX as u128) as u32,
                    lag_us: (sent - due).as_micros().min(u32::MAX as u128) as u32,
                    tenant: tenant as u8,
                    instance: target as u8,
                    quota,
                    outcome,
                });
                due += interval;
                // A request that took several intervals leaves the ones it
                // covered unsent but counted from when they were due.
                while due + interval < Instant::now() && due < until() {
                    records.push(Record {
                        at_ms: (due - start).as_millis() as u32,
                        latency_us: (Instant::now() - due).as_micros().min(u32::MAX as u128) as u32,
                        lag_us: 0,
                        tenant: tenant as u8,
                        instance: target as u8,
                        quota,
                        // Due while its connection still waited on an
                        // earlier one: it shares that one's fate.
                        outcome,
                    });
                    due += interval;
                }
            }
            records
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        if let Ok(r) = w.await {
            all.extend(r);
        }
    }
    all.sort_by_key(|r| r.at_ms);
    all
}
