//! Interpreters kept per (plugin, tenant). Each lives on a thread of its
//! own (a wasmer store stays on the thread that made it) and takes one job
//! at a time; after a clean call its handle goes back to the idle list,
//! after a failed one its thread drops the interpreter and ends. The idle
//! list is bounded; the least recently used interpreter is let go first,
//! and so are those idle longer than [`IDLE_FOR`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use super::Prepared;
use super::interp::{Interp, Plugin};
use crate::exchange::{Exchange, Phase};
use crate::kv::KvStore;
use crate::{Cause, Limits, PluginError};

/// An idle interpreter older than this is let go.
const IDLE_FOR: Duration = Duration::from_secs(300);

/// One call for an interpreter.
pub(crate) struct Job {
    pub(crate) phase: Phase,
    pub(crate) exchange: Exchange,
    pub(crate) limits: Limits,
    pub(crate) config: Bytes,
    pub(crate) kv: Arc<dyn KvStore>,
    /// The caller's trace context (the `plugin.call` span), when sampled.
    pub(crate) context: Option<opentelemetry::Context>,
}

type Reply = Result<Exchange, PluginError>;
type Sender = mpsc::Sender<(Job, mpsc::SyncSender<Reply>)>;

struct Idle {
    plugin: u64,
    tenant: Arc<str>,
    jobs: Sender,
    since: Instant,
}

pub(crate) struct Pool {
    idle: Mutex<Vec<Idle>>,
    max: usize,
    /// Interpreters alive (idle or busy).
    live: Arc<AtomicUsize>,
}

impl Pool {
    pub(crate) fn new(max: usize) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            max,
            live: Arc::default(),
        }
    }

    /// Idle interpreters now.
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().len()
    }

    /// Interpreters alive now (idle or serving a call).
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    fn take(&self, plugin: u64, tenant: &str) -> Option<Sender> {
        let mut idle = self.idle.lock();
        let now = Instant::now();
        idle.retain(|i| now.duration_since(i.since) < IDLE_FOR);
        let at = idle
            .iter()
            .rposition(|i| i.plugin == plugin && *i.tenant == *tenant)?;
        Some(idle.swap_remove(at).jobs)
    }

    fn give(&self, plugin: u64, tenant: Arc<str>, jobs: Sender) {
        let mut idle = self.idle.lock();
        if self.max == 0 {
            return;
        }
        if idle.len() >= self.max
            && let Some(oldest) = (0..idle.len()).min_by_key(|&i| idle[i].since)
        {
            idle.swap_remove(oldest);
        }
        idle.push(Idle {
            plugin,
            tenant,
            jobs,
            since: Instant::now(),
        });
    }

    /// Lets every idle interpreter of `plugin` go (the plugin is gone).
    pub(crate) fn forget(&self, plugin: u64) {
        self.idle.lock().retain(|i| i.plugin != plugin);
    }

    /// Runs `job` on an idle interpreter of (plugin, tenant), or a new one.
    pub(crate) fn call(
        &self,
        prepared: &Arc<Prepared>,
        plugin: u64,
        source: Plugin,
        job: Job,
    ) -> Reply {
        let tenant = job.exchange.tenant.clone();
        let (reply, answer) = mpsc::sync_channel(1);
        let mut job = (job, reply);
        let jobs = loop {
            match self.take(plugin, &tenant) {
                Some(jobs) => match jobs.send(job) {
                    Ok(()) => break jobs,
                    // Its thread is gone: try another.
                    Err(mpsc::SendError(back)) => job = back,
                },
                None => break self.spawn(prepared.clone(), source, tenant.clone(), job)?,
            }
        };
        match answer.recv() {
            Ok(Ok(exchange)) => {
                self.give(plugin, tenant, jobs);
                Ok(exchange)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PluginError::Trap(Cause::message(
                "the interpreter's thread ended during the call",
            ))),
        }
    }

    /// A new interpreter on its own thread, starting with `first`.
    fn spawn(
        &self,
        prepared: Arc<Prepared>,
        source: Plugin,
        tenant: Arc<str>,
        first: (Job, mpsc::SyncSender<Reply>),
    ) -> Result<Sender, PluginError> {
        let (jobs, inbox) = mpsc::channel();
        let live = Live::count(&self.live);
        std::thread::Builder::new()
            .name("cog-python".into())
            .spawn(move || {
                let _live = live;
                serve(&prepared, source, tenant, first, &inbox);
            })
            .map_err(|e| {
                PluginError::Instantiate(format!("could not start an interpreter thread: {e}"))
            })?;
        Ok(jobs)
    }
}

/// One interpreter in [`Pool::live`], until dropped (also when its thread
/// unwinds, or never starts).
struct Live(Arc<AtomicUsize>);

impl Live {
    fn count(live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::Relaxed);
        Live(live.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An interpreter's life: start, serve jobs until one fails or the pool
/// lets it go.
fn serve(
    prepared: &Prepared,
    source: Plugin,
    tenant: Arc<str>,
    first: (Job, mpsc::SyncSender<Reply>),
    inbox: &mpsc::Receiver<(Job, mpsc::SyncSender<Reply>)>,
) {
    let (job, reply) = first;
    let mut interp = match Interp::start(prepared, source, &job.limits, tenant) {
        Ok((interp, _)) => interp,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    let mut next = (job, reply);
    loop {
        let (job, reply) = next;
        let _attached = job.context.map(opentelemetry::Context::attach);
        let result = interp.call(job.phase, job.exchange, &job.limits, job.config, job.kv);
        let failed = result.is_err();
        if reply.send(result).is_err() || failed {
            return;
        }
        match inbox.recv() {
            Ok(job) => next = job,
            Err(_) => return,
        }
    }
}
