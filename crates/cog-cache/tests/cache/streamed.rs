//! Answers whose body length is not known in advance (an origin that
//! streams, `Transfer-Encoding: chunked`): passed on as they come, stored
//! once they have ended within `max_body` — and bodies known to be too
//! large never buffered.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cog_cache::TieredCache;
use cog_cache::http::{CacheBody, HttpCache, HttpCacheLayer};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt, service_fn};

type Chunk = Result<Bytes, std::io::Error>;

/// A body of unknown length: what is sent on its channel, in turn, and its
/// end once the sender is gone. With `tells_end`, it says it has ended as
/// soon as the last chunk is out (as hyper's bodies may), before a reader
/// asks again; without, only by that last poll.
struct Streamed {
    rx: mpsc::UnboundedReceiver<Chunk>,
    tells_end: bool,
}

impl Streamed {
    fn new(rx: mpsc::UnboundedReceiver<Chunk>) -> Self {
        Streamed {
            rx,
            tells_end: false,
        }
    }
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|c| c.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.tells_end && self.rx.is_closed() && self.rx.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The origin's body: streamed, or of a known length.
enum Sent {
    Streamed(Streamed),
    Full(Full<Bytes>),
}

impl Body for Sent {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Sent::Streamed(s) => Pin::new(s).poll_frame(cx),
            Sent::Full(f) => Pin::new(f).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Sent::Streamed(s) => s.is_end_stream(),
            Sent::Full(f) => f.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Sent::Streamed(s) => s.size_hint(),
            Sent::Full(f) => f.size_hint(),
        }
    }
}

type Origin = BoxCloneSyncService<Request<Full<Bytes>>, Response<Sent>, Infallible>;

/// A cache (at most `max_body` bytes a body) in front of an origin whose
/// answers, fresh for a minute, have the bodies `next` makes, one per
/// request.
struct Cache {
    svc: HttpCache<Origin>,
    calls: Arc<AtomicUsize>,
}

impl Cache {
    fn new(max_body: usize, next: impl Fn() -> Sent + Send + Sync + 'static) -> Self {
        Self::answering(max_body, "max-age=60", next)
    }

    fn answering(
        max_body: usize,
        cache_control: &'static str,
        next: impl Fn() -> Sent + Send + Sync + 'static,
    ) -> Self {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let next = Arc::new(next);
        let origin = BoxCloneSyncService::new(service_fn(move |_req: Request<Full<Bytes>>| {
            c.fetch_add(1, Ordering::SeqCst);
            let res = Response::builder()
                .header("cache-control", cache_control)
                .body(next())
                .unwrap();
            async move { Ok::<_, Infallible>(res) }
        }));
        let cache = TieredCache::builder().build().unwrap();
        Cache {
            svc: HttpCacheLayer::new(cache).max_body(max_body).layer(origin),
            calls,
        }
    }

    async fn send(&self) -> Response<CacheBody<Sent>> {
        let req = Request::get("/s")
            .header("host", "origin.test")
            .body(Full::default())
            .unwrap();
        self.svc.clone().oneshot(req).await.unwrap()
    }

    /// The status and body of a `GET` read to its end.
    async fn get(&self) -> (String, String) {
        let (parts, body) = self.send().await.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            status(&parts.headers),
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    /// Asks until an answer comes from the cache (a streamed body is
    /// stored once it has ended, in the background): its body, or `None`
    /// after two seconds of misses.
    async fn hit(&self) -> Option<String> {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let (status, body) = self.get().await;
            if status.starts_with("cog; hit") {
                return Some(body);
            }
        }
        None
    }

    /// Checks, after a moment for a store in the background to land, that
    /// the next request misses: the first answer (see [`once`]) was not
    /// stored, and "again" is.
    async fn first_not_stored(&self) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            self.get().await,
            ("cog; fwd=uri-miss; stored".into(), "again".into())
        );
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn status(headers: &http::HeaderMap) -> String {
    headers
        .get("cache-status")
        .map_or("", |v| v.to_str().unwrap())
        .to_owned()
}

/// A streamed body of these chunks (and its end).
fn chunks(parts: &[&'static str]) -> Sent {
    let (tx, rx) = mpsc::unbounded_channel();
    for p in parts {
        tx.send(Ok(Bytes::from_static(p.as_bytes()))).unwrap();
    }
    Sent::Streamed(Streamed::new(rx))
}

#[tokio::test]
async fn a_body_of_unknown_length_is_stored_once_it_has_ended() {
    let c = Cache::new(1 << 20, once(chunks(&["ab", "cd"])));
    let (status, body) = c.get().await;
    assert_eq!(body, "abcd");
    // Not known to be stored when the answer starts.
    assert_eq!(status, "cog; fwd=uri-miss");
    assert_eq!(c.hit().await.as_deref(), Some("abcd"));
}

/// Exactly `max_body` bytes are stored; one more and the body is only
/// passed on — all of it.
#[tokio::test]
async fn a_streamed_body_past_max_body_is_passed_on_whole_and_not_stored() {
    let c = Cache::new(4, once(chunks(&["ab", "cd"])));
    c.get().await;
    assert_eq!(c.hit().await.as_deref(), Some("abcd"), "4 bytes fit in 4");

    let c = Cache::new(5, once(chunks(&["a", "b", "c", "d", "e", "f"])));
    assert_eq!(c.get().await.1, "abcdef");
    c.first_not_stored().await;
}

/// The answer starts before the origin has finished its body: a stream is
/// not held back to be stored.
#[tokio::test]
async fn a_streamed_answer_reaches_the_client_while_the_origin_sends() {
    let (tx, rx) = mpsc::unbounded_channel::<Chunk>();
    let c = Cache::new(1 << 20, once(Sent::Streamed(Streamed::new(rx))));
    tx.send(Ok(Bytes::from_static(b"first"))).unwrap();
    let mut body = c.send().await.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the first chunk is passed on while the body goes on")
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), "first");
    tx.send(Ok(Bytes::from_static(b", last"))).unwrap();
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, ", last");
    assert_eq!(c.hit().await.as_deref(), Some("first, last"));
}

/// An origin whose first answer has `first` for a body, and every later
/// one "again" (its length known, so stored before it is answered): a hit
/// on `first` can only come from `first` itself having been stored.
fn once(first: Sent) -> impl Fn() -> Sent + Send + Sync {
    let first = Mutex::new(Some(first));
    move || {
        first
            .lock()
            .take()
            .unwrap_or_else(|| Sent::Full(Full::new(Bytes::from_static(b"again"))))
    }
}

/// A body that fails midway is not stored — not even when its reader
/// goes on to its end after the error.
#[tokio::test]
async fn a_streamed_body_that_fails_is_not_stored() {
    let (tx, rx) = mpsc::unbounded_channel::<Chunk>();
    tx.send(Ok(Bytes::from_static(b"ab"))).unwrap();
    tx.send(Err(std::io::Error::other("origin went away")))
        .unwrap();
    tx.send(Ok(Bytes::from_static(b"cd"))).unwrap();
    drop(tx);
    let c = Cache::new(1 << 20, once(Sent::Streamed(Streamed::new(rx))));
    let mut body = c.send().await.into_body();
    let mut errors = 0;
    while let Some(frame) = body.frame().await {
        errors += usize::from(frame.is_err());
    }
    assert_eq!(errors, 1);
    c.first_not_stored().await;
}

/// A body the client stops reading is not stored.
#[tokio::test]
async fn a_streamed_body_the_client_drops_is_not_stored() {
    let (tx, rx) = mpsc::unbounded_channel::<Chunk>();
    tx.send(Ok(Bytes::from_static(b"ab"))).unwrap();
    let c = Cache::new(1 << 20, once(Sent::Streamed(Streamed::new(rx))));
    let mut body = c.send().await.into_body();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "ab"
    );
    drop(body);
    drop(tx);
    c.first_not_stored().await;
}

/// A reader that stops once the body says it has ended (as hyper does)
/// never asks for the end itself: the body is stored all the same.
#[tokio::test]
async fn a_reader_that_stops_at_the_end_of_stream_still_stores() {
    let Sent::Streamed(streamed) = chunks(&["ab", "cd"]) else {
        unreachable!()
    };
    let c = Cache::new(
        1 << 20,
        once(Sent::Streamed(Streamed {
            tells_end: true,
            ..streamed
        })),
    );
    let mut body = c.send().await.into_body();
    let mut read = Vec::new();
    while !body.is_end_stream() {
        let frame = body.frame().await.unwrap().unwrap();
        read.extend_from_slice(&frame.into_data().unwrap());
    }
    assert_eq!(read, b"abcd");
    assert_eq!(c.hit().await.as_deref(), Some("abcd"));
}

/// A body read outside any Tokio runtime cannot be stored in the
/// background: it is passed on whole, and nothing panics.
#[tokio::test]
async fn a_body_read_outside_a_runtime_is_passed_on() {
    let c = Cache::new(1 << 20, once(chunks(&["ab", "cd"])));
    let body = c.send().await.into_body();
    let read = std::thread::spawn(move || {
        // Every chunk is there already: polled until done, no waking.
        let mut collect = std::pin::pin!(body.collect());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            if let Poll::Ready(all) = collect.as_mut().poll(&mut cx) {
                break all.unwrap().to_bytes();
            }
            std::thread::yield_now();
        }
    })
    .join()
    .expect("no panic");
    assert_eq!(read, "abcd");
    c.first_not_stored().await;
}

/// A body known to be larger than `max_body` is passed on, not read
/// into memory first, and not stored; one that fits is.
#[tokio::test]
async fn a_body_known_to_be_too_large_is_passed_on() {
    let c = Cache::new(3, || Sent::Full(Full::new(Bytes::from_static(b"abcd"))));
    let res = c.send().await;
    assert!(res.body().is_passed());
    assert_eq!(status(res.headers()), "cog; fwd=uri-miss");
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "abcd");
    assert_eq!(c.get().await.0, "cog; fwd=uri-miss");

    let c = Cache::new(4, || Sent::Full(Full::new(Bytes::from_static(b"abcd"))));
    assert_eq!(c.get().await.0, "cog; fwd=uri-miss; stored");
    let (status, body) = c.get().await;
    assert!(status.starts_with("cog; hit"), "{status}");
    assert_eq!(body, "abcd");
}

/// A stale answer revalidated in the background, which the origin answers
/// with a streamed body: read there (nobody else will) and stored — one of
/// exactly `max_body` bytes too, read to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_revalidation_with_a_streamed_body_stores_it() {
    let n = Arc::new(AtomicUsize::new(0));
    let c = Cache::answering(2, "max-age=1, stale-while-revalidate=60", move || {
        match n.fetch_add(1, Ordering::SeqCst) {
            0 => Sent::Full(Full::new(Bytes::from_static(b"#1"))),
            _ => chunks(&["#", "2"]),
        }
    });
    assert_eq!(c.get().await.1, "#1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Stale: served while one background request revalidates.
    assert_eq!(c.get().await.1, "#1");
    let mut body = String::new();
    for _ in 0..200 {
        body = c.get().await.1;
        if body == "#2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(body, "#2");
    assert_eq!(c.calls(), 2);
}

/// A background revalidation answered with a stream that goes on past
/// `max_body` stops reading it there: the body is dropped, not drained
/// for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_revalidation_drops_a_stream_past_max_body() {
    let (tx, rx) = mpsc::unbounded_channel::<Chunk>();
    for part in ["ab", "cd", "ef"] {
        tx.send(Ok(Bytes::from_static(part.as_bytes()))).unwrap();
    }
    let rx = Mutex::new(Some(rx));
    let n = AtomicUsize::new(0);
    let c = Cache::answering(4, "max-age=1, stale-while-revalidate=60", move || {
        match n.fetch_add(1, Ordering::SeqCst) {
            0 => Sent::Full(Full::new(Bytes::from_static(b"#1"))),
            _ => Sent::Streamed(Streamed::new(rx.lock().take().expect("one revalidation"))),
        }
    });
    assert_eq!(c.get().await.1, "#1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Stale: served while the stream (left open) answers the revalidation.
    assert_eq!(c.get().await.1, "#1");
    for _ in 0..500 {
        if tx.is_closed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(tx.is_closed(), "the stream is still being read");
}
