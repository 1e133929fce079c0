//! A capability-free WASI preview 1 for the Python interpreter: the 42
//! functions CPython imports, answered from the host's own state only.
//!
//! - Files: the read-only in-memory tree of [`Vfs`] (the standard
//!   library), pre-opened as `/`. Every change — create, write, rename,
//!   delete, links, times — is refused with `EROFS`; nothing reaches the
//!   host's files.
//! - Standard output and error go to the plugin's log (counted against
//!   `max_log_bytes`); standard input is empty.
//! - fd 4 is the channel to the host API (`channel.rs`).
//! - No environment variables, one argument (`python`), no sockets
//!   (`ENOTSUP`), no processes (`proc_exit` ends the call with an error).
//! - Clocks and randomness are what the host grants ([`Clock`],
//!   [`Entropy`]); a sleep that would end past the call's deadline ends
//!   the call at once with `DeadlineExceeded`, a shorter one sleeps.
//! - Every call checks the call's deadline.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use wasmer::{Function, FunctionEnv, FunctionEnvMut, Imports, MemoryView, Store};

use super::channel::Channel;
use super::vfs::{self, Entry, Node, Vfs};
use super::{Clock, Entropy};
use crate::PluginError;
use crate::ops::{self, HostState};

// errno values of WASI preview 1.
const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EEXIST: i32 = 20;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const EISDIR: i32 = 31;
const EMFILE: i32 = 33;
const ENOTSUP: i32 = 58;
const EROFS: i32 = 69;
const ESPIPE: i32 = 70;

// File types.
const CHARACTER_DEVICE: u8 = 2;
const DIRECTORY: u8 = 3;
const REGULAR_FILE: u8 = 4;

// Rights.
const FD_READ: u64 = 1 << 1;
const FD_SEEK: u64 = 1 << 2;
const FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
const FD_TELL: u64 = 1 << 5;
const FD_WRITE: u64 = 1 << 6;
const FD_ADVISE: u64 = 1 << 7;
const PATH_OPEN: u64 = 1 << 13;
const FD_READDIR: u64 = 1 << 14;
const PATH_READLINK: u64 = 1 << 15;
const PATH_FILESTAT_GET: u64 = 1 << 18;
const FD_FILESTAT_GET: u64 = 1 << 21;
const POLL_FD_READWRITE: u64 = 1 << 27;
const FILE_RIGHTS: u64 = FD_READ
    | FD_SEEK
    | FD_TELL
    | FD_ADVISE
    | FD_FILESTAT_GET
    | FD_FDSTAT_SET_FLAGS
    | POLL_FD_READWRITE;
const DIR_RIGHTS: u64 =
    PATH_OPEN | FD_READDIR | PATH_READLINK | PATH_FILESTAT_GET | FD_FILESTAT_GET;

// path_open flags.
const O_CREAT: i32 = 1;
const O_DIRECTORY: i32 = 2;
const O_EXCL: i32 = 4;
const O_TRUNC: i32 = 8;

/// Open descriptors one interpreter may hold.
const MAX_FDS: usize = 128;

enum Fd {
    Stdin,
    /// Standard output (log level info) or error (warn).
    Out {
        level: i32,
    },
    Dir(Node),
    File {
        node: Node,
        pos: u64,
    },
    Channel,
}

/// One interpreter's WASI state.
pub(crate) struct Wasi {
    vfs: Arc<Vfs>,
    fds: Vec<Option<Fd>>,
    clock: Clock,
    entropy: Entropy,
    /// The stream of [`Entropy::Seeded`].
    seeded: u64,
}

impl Wasi {
    pub(crate) fn new(vfs: Arc<Vfs>, clock: Clock, entropy: Entropy) -> Self {
        let seeded = match entropy {
            Entropy::Seeded(seed) => seed,
            Entropy::Host => 0,
        };
        Wasi {
            vfs,
            fds: vec![
                Some(Fd::Stdin),
                Some(Fd::Out { level: 2 }),
                Some(Fd::Out { level: 1 }),
                Some(Fd::Dir(0)),
                Some(Fd::Channel),
            ],
            clock,
            entropy,
            seeded,
        }
    }

    fn fd(&self, fd: i32) -> Option<&Fd> {
        self.fds.get(usize::try_from(fd).ok()?)?.as_ref()
    }

    fn fd_mut(&mut self, fd: i32) -> Option<&mut Fd> {
        self.fds.get_mut(usize::try_from(fd).ok()?)?.as_mut()
    }

    fn dir(&self, fd: i32) -> Result<Node, i32> {
        match self.fd(fd) {
            Some(Fd::Dir(n)) => Ok(*n),
            Some(_) => Err(vfs::ENOTDIR),
            None => Err(EBADF),
        }
    }

    fn open(&mut self, fd: Fd) -> Result<i32, i32> {
        let slot = match self.fds.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.fds.len() < MAX_FDS => {
                self.fds.push(None);
                self.fds.len() - 1
            }
            None => return Err(EMFILE),
        };
        self.fds[slot] = Some(fd);
        Ok(slot as i32)
    }

    fn now(&self, id: i32) -> Result<u64, i32> {
        static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        match (self.clock, id) {
            (Clock::Host, 0) => Ok(ns(SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default())),
            (Clock::Host, 1..=3) => Ok(ns(EPOCH.elapsed())),
            (Clock::Fixed(at), 0) => Ok(ns(at.duration_since(UNIX_EPOCH).unwrap_or_default())),
            (Clock::Fixed(_), 1..=3) => Ok(0),
            _ => Err(EINVAL),
        }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        match self.entropy {
            Entropy::Host => rand::rng().fill_bytes(buf),
            Entropy::Seeded(_) => {
                for chunk in buf.chunks_mut(8) {
                    // splitmix64
                    self.seeded = self.seeded.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let mut z = self.seeded;
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    z ^= z >> 31;
                    chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
                }
            }
        }
    }
}

/// What the interpreter's imports see: the host API's state, WASI's, and
/// the channel.
pub(crate) struct PyState {
    pub(crate) host: HostState,
    pub(crate) wasi: Wasi,
    pub(crate) channel: Channel,
}

type Ctx<'a> = FunctionEnvMut<'a, PyState>;
type Res = Result<i32, PluginError>;

/// Runs `f` on the memory view and the state, together.
fn with<R>(ctx: &mut Ctx<'_>, f: impl FnOnce(&MemoryView<'_>, &mut PyState) -> R) -> R {
    let (state, store) = ctx.data_and_store_mut();
    let memory = state
        .host
        .memory
        .clone()
        .expect("memory is set before the first call");
    let view = memory.view(&store);
    f(&view, state)
}

fn enter(ctx: &Ctx<'_>) -> Result<(), PluginError> {
    ops::enter(&ctx.data().host)
}

fn get_u32(view: &MemoryView<'_>, ptr: u64) -> Result<u32, i32> {
    let mut b = [0; 4];
    view.read(ptr, &mut b).map_err(|_| EFAULT)?;
    Ok(u32::from_le_bytes(b))
}

fn put(view: &MemoryView<'_>, ptr: i32, bytes: &[u8]) -> Result<(), i32> {
    put_at(view, ptr, 0, bytes)
}

/// [`put`] at `offset` past `ptr`: an address past the 32-bit space is
/// `EFAULT`, as any outside memory (it does not wrap around, nor overflow).
fn put_at(view: &MemoryView<'_>, ptr: i32, offset: u64, bytes: &[u8]) -> Result<(), i32> {
    view.write(u64::from(ptr as u32) + offset, bytes)
        .map_err(|_| EFAULT)
}

/// `(buf, len)` pairs of an iovec array.
fn iovecs(view: &MemoryView<'_>, iovs: i32, n: i32) -> Result<Vec<(u64, u64)>, i32> {
    let n = u32::try_from(n).map_err(|_| EINVAL)?;
    if n > 1024 {
        return Err(EINVAL);
    }
    (0..u64::from(n))
        .map(|i| {
            let at = u64::from(iovs as u32) + i * 8;
            Ok((
                u64::from(get_u32(view, at)?),
                u64::from(get_u32(view, at + 4)?),
            ))
        })
        .collect()
}

/// Gathers what an iovec array points at, refusing more than `max` bytes
/// (`Ok(None)`).
fn gather(view: &MemoryView<'_>, iovs: i32, n: i32, max: usize) -> Result<Option<Vec<u8>>, i32> {
    let list = iovecs(view, iovs, n)?;
    let total: u64 = list.iter().map(|(_, len)| len).sum();
    if total > max as u64 {
        return Ok(None);
    }
    let mut out = vec![0; total as usize];
    let mut at = 0;
    for (ptr, len) in list {
        let len = len as usize;
        view.read(ptr, &mut out[at..at + len]).map_err(|_| EFAULT)?;
        at += len;
    }
    Ok(Some(out))
}

/// Scatters `data` into an iovec array; the bytes written.
fn scatter(view: &MemoryView<'_>, iovs: i32, n: i32, data: &[u8]) -> Result<usize, i32> {
    let mut done = 0;
    for (ptr, len) in iovecs(view, iovs, n)? {
        if done == data.len() {
            break;
        }
        let take = (len as usize).min(data.len() - done);
        view.write(ptr, &data[done..done + take])
            .map_err(|_| EFAULT)?;
        done += take;
    }
    Ok(done)
}

fn errno(r: Result<(), i32>) -> Res {
    Ok(r.err().unwrap_or(SUCCESS))
}

fn filestat(vfs: &Vfs, node: Node) -> [u8; 64] {
    let mut out = [0; 64];
    out[8..16].copy_from_slice(&Vfs::ino(node).to_le_bytes());
    let (ty, size) = match vfs.entry(node) {
        Entry::Dir(_) => (DIRECTORY, 0),
        Entry::File(data) => (REGULAR_FILE, data.len() as u64),
    };
    out[16] = ty;
    out[24..32].copy_from_slice(&1u64.to_le_bytes());
    out[32..40].copy_from_slice(&size.to_le_bytes());
    out
}

fn args_sizes_get(mut ctx: Ctx<'_>, argc: i32, size: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, _state| {
        errno(
            put(view, argc, &1u32.to_le_bytes())
                .and_then(|()| put(view, size, &7u32.to_le_bytes())),
        )
    })
}

fn args_get(mut ctx: Ctx<'_>, argv: i32, buf: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, _state| {
        errno(
            put(view, argv, &(buf as u32).to_le_bytes()).and_then(|()| put(view, buf, b"python\0")),
        )
    })
}

fn environ_sizes_get(mut ctx: Ctx<'_>, count: i32, size: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, _state| {
        errno(
            put(view, count, &0u32.to_le_bytes())
                .and_then(|()| put(view, size, &0u32.to_le_bytes())),
        )
    })
}

fn environ_get(ctx: Ctx<'_>, _environ: i32, _buf: i32) -> Res {
    enter(&ctx)?;
    Ok(SUCCESS)
}

fn clock_res_get(mut ctx: Ctx<'_>, id: i32, out: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, state| {
        errno(
            state
                .wasi
                .now(id)
                .and_then(|_| put(view, out, &1000u64.to_le_bytes())),
        )
    })
}

fn clock_time_get(mut ctx: Ctx<'_>, id: i32, _precision: i64, out: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, state| {
        errno(
            state
                .wasi
                .now(id)
                .and_then(|t| put(view, out, &t.to_le_bytes())),
        )
    })
}

fn fd_close(mut ctx: Ctx<'_>, fd: i32) -> Res {
    enter(&ctx)?;
    let state = ctx.data_mut();
    match usize::try_from(fd)
        .ok()
        .and_then(|i| state.wasi.fds.get_mut(i))
    {
        Some(slot @ Some(_)) => {
            *slot = None;
            Ok(SUCCESS)
        }
        _ => Ok(EBADF),
    }
}

/// Succeeds on any open descriptor, does nothing (advice, sync, flags:
/// there is nothing to sync or tune in a read-only tree).
fn fd_noop(ctx: &Ctx<'_>, fd: i32) -> Res {
    enter(ctx)?;
    Ok(if ctx.data().wasi.fd(fd).is_some() {
        SUCCESS
    } else {
        EBADF
    })
}

fn fd_fdstat_get(mut ctx: Ctx<'_>, fd: i32, out: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, state| {
        let (ty, base, inheriting) = match state.wasi.fd(fd) {
            None => return Ok(EBADF),
            Some(Fd::Stdin) => (CHARACTER_DEVICE, FD_READ | POLL_FD_READWRITE, 0),
            Some(Fd::Out { .. }) => (CHARACTER_DEVICE, FD_WRITE | POLL_FD_READWRITE, 0),
            Some(Fd::Channel) => (CHARACTER_DEVICE, FD_READ | FD_WRITE, 0),
            Some(Fd::Dir(_)) => (DIRECTORY, DIR_RIGHTS, DIR_RIGHTS | FILE_RIGHTS),
            Some(Fd::File { .. }) => (REGULAR_FILE, FILE_RIGHTS, 0),
        };
        let mut stat = [0u8; 24];
        stat[0] = ty;
        stat[8..16].copy_from_slice(&base.to_le_bytes());
        stat[16..24].copy_from_slice(&inheriting.to_le_bytes());
        errno(put(view, out, &stat))
    })
}

fn fd_filestat_get(mut ctx: Ctx<'_>, fd: i32, out: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, state| {
        let stat = match state.wasi.fd(fd) {
            None => return Ok(EBADF),
            Some(Fd::Dir(node) | Fd::File { node, .. }) => filestat(&state.wasi.vfs, *node),
            Some(_) => {
                let mut s = [0; 64];
                s[16] = CHARACTER_DEVICE;
                s
            }
        };
        errno(put(view, out, &stat))
    })
}

fn fd_prestat_get(mut ctx: Ctx<'_>, fd: i32, out: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, _state| {
        if fd != 3 {
            return Ok(EBADF);
        }
        // A directory (tag 0) named "/" (length 1).
        errno(put(view, out, &[0, 0, 0, 0, 1, 0, 0, 0]))
    })
}

fn fd_prestat_dir_name(mut ctx: Ctx<'_>, fd: i32, out: i32, len: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, _state| {
        if fd != 3 {
            return Ok(EBADF);
        }
        if len < 1 {
            return Ok(EINVAL);
        }
        errno(put(view, out, b"/"))
    })
}

fn fd_read(mut ctx: Ctx<'_>, fd: i32, iovs: i32, n: i32, out: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, state| {
        let vfs = state.wasi.vfs.clone();
        let read = match state.wasi.fd_mut(fd) {
            None | Some(Fd::Out { .. }) => return Ok(EBADF),
            Some(Fd::Dir(_)) => return Ok(EISDIR),
            Some(Fd::Stdin) => Ok(0),
            Some(Fd::Channel) => {
                let reply = state.channel.reply();
                scatter(view, iovs, n, reply).inspect(|&done| state.channel.consumed(done))
            }
            Some(Fd::File { node, pos }) => {
                let Entry::File(data) = vfs.entry(*node) else {
                    return Ok(EISDIR);
                };
                let from = (*pos).min(data.len() as u64) as usize;
                let r = scatter(view, iovs, n, &data[from..]);
                if let Ok(done) = r {
                    *pos += done as u64;
                }
                r
            }
        };
        errno(read.and_then(|done| put(view, out, &(done as u32).to_le_bytes())))
    })
}

fn fd_pread(mut ctx: Ctx<'_>, fd: i32, iovs: i32, n: i32, offset: i64, out: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, state| {
        let Some(Fd::File { node, .. }) = state.wasi.fd(fd) else {
            return Ok(EBADF);
        };
        let Entry::File(data) = state.wasi.vfs.entry(*node) else {
            return Ok(EISDIR);
        };
        let from = (offset.max(0) as u64).min(data.len() as u64) as usize;
        errno(
            scatter(view, iovs, n, &data[from..])
                .and_then(|done| put(view, out, &(done as u32).to_le_bytes())),
        )
    })
}

fn fd_write(mut ctx: Ctx<'_>, fd: i32, iovs: i32, n: i32, out: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, state| {
        let max = match state.wasi.fd(fd) {
            Some(Fd::Out { .. }) => state.host.log_room(),
            Some(Fd::Channel) => state.channel.room(&state.host.limits),
            Some(_) => return Ok(EBADF),
            None => return Ok(EBADF),
        };
        let bytes = match gather(view, iovs, n, max) {
            Ok(b) => b,
            Err(e) => return Ok(e),
        };
        let len = bytes.as_ref().map_or(0, Vec::len);
        match state.wasi.fd(fd) {
            Some(Fd::Out { level }) => {
                let level = *level;
                if let Some(text) = &bytes {
                    let trimmed = text.strip_suffix(b"\n").unwrap_or(text);
                    if !trimmed.is_empty() {
                        ops::log(&mut state.host, level, Some(trimmed))?;
                    }
                    state.host.log_used += text.len() - trimmed.len();
                } else {
                    ops::log(&mut state.host, level, None)?;
                }
            }
            _ => {
                let Some(bytes) = bytes else {
                    return Err(PluginError::OutputLimit);
                };
                super::channel::receive(state, &bytes)?;
            }
        }
        errno(put(view, out, &(len as u32).to_le_bytes()))
    })
}

fn fd_seek(mut ctx: Ctx<'_>, fd: i32, offset: i64, whence: i32, out: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, state| {
        let vfs = state.wasi.vfs.clone();
        let Some(Fd::File { node, pos }) = state.wasi.fd_mut(fd) else {
            return Ok(match state.wasi.fd(fd) {
                None => EBADF,
                Some(Fd::Dir(_)) => EBADF,
                Some(_) => ESPIPE,
            });
        };
        let Entry::File(data) = vfs.entry(*node) else {
            return Ok(EBADF);
        };
        let base = match whence {
            0 => 0,
            1 => *pos as i64,
            2 => data.len() as i64,
            _ => return Ok(EINVAL),
        };
        let Some(new) = base.checked_add(offset).filter(|n| *n >= 0) else {
            return Ok(EINVAL);
        };
        *pos = new as u64;
        errno(put(view, out, &(new as u64).to_le_bytes()))
    })
}

fn fd_tell(mut ctx: Ctx<'_>, fd: i32, out: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, state| match state.wasi.fd(fd) {
        Some(Fd::File { pos, .. }) => errno(put(view, out, &pos.to_le_bytes())),
        Some(_) => Ok(ESPIPE),
        None => Ok(EBADF),
    })
}

fn fd_readdir(mut ctx: Ctx<'_>, fd: i32, buf: i32, len: i32, cookie: i64, out: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, state| {
        let node = match state.wasi.dir(fd) {
            Ok(n) => n,
            Err(e) => return Ok(e),
        };
        let vfs = &state.wasi.vfs;
        let Entry::Dir(children) = vfs.entry(node) else {
            return Ok(EBADF);
        };
        let cap = len as u32 as usize;
        let mut bytes = Vec::new();
        let entries = [(".", node), ("..", vfs.parent(node))]
            .into_iter()
            .chain(children.iter().map(|(k, v)| (&**k, *v)));
        for (i, (name, child)) in entries.enumerate().skip(cookie.max(0) as usize) {
            if bytes.len() >= cap {
                break;
            }
            let mut dirent = [0u8; 24];
            dirent[0..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            dirent[8..16].copy_from_slice(&Vfs::ino(child).to_le_bytes());
            dirent[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
            dirent[20] = match vfs.entry(child) {
                Entry::Dir(_) => DIRECTORY,
                Entry::File(_) => REGULAR_FILE,
            };
            bytes.extend_from_slice(&dirent);
            bytes.extend_from_slice(name.as_bytes());
        }
        // A full buffer (bufused == len) tells the caller to come back for more.
        bytes.truncate(cap);
        errno(
            put(view, buf, &bytes)
                .and_then(|()| put(view, out, &(bytes.len() as u32).to_le_bytes())),
        )
    })
}

fn path_of(view: &MemoryView<'_>, ptr: i32, len: i32) -> Result<Vec<u8>, i32> {
    let len = u32::try_from(len).map_err(|_| EINVAL)? as usize;
    if len > 4096 {
        return Err(vfs::ENAMETOOLONG);
    }
    let mut path = vec![0; len];
    view.read(u64::from(ptr as u32), &mut path)
        .map_err(|_| EFAULT)?;
    Ok(path)
}

fn lookup(
    view: &MemoryView<'_>,
    state: &PyState,
    fd: i32,
    ptr: i32,
    len: i32,
) -> Result<Node, i32> {
    let dir = state.wasi.dir(fd)?;
    let path = path_of(view, ptr, len)?;
    state.wasi.vfs.lookup(dir, &path)
}

fn path_filestat_get(mut ctx: Ctx<'_>, fd: i32, _flags: i32, ptr: i32, len: i32, out: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, state| {
        errno(
            lookup(view, state, fd, ptr, len)
                .and_then(|node| put(view, out, &filestat(&state.wasi.vfs, node))),
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn path_open(
    mut ctx: Ctx<'_>,
    fd: i32,
    _dirflags: i32,
    ptr: i32,
    len: i32,
    oflags: i32,
    _base: i64,
    _inheriting: i64,
    _fdflags: i32,
    out: i32,
) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, state| {
        let node = match lookup(view, state, fd, ptr, len) {
            Ok(node) => node,
            Err(vfs::ENOENT) if oflags & O_CREAT != 0 => return Ok(EROFS),
            Err(e) => return Ok(e),
        };
        if oflags & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL {
            return Ok(EEXIST);
        }
        if oflags & O_TRUNC != 0 {
            return Ok(EROFS);
        }
        let opened = match state.wasi.vfs.entry(node) {
            Entry::Dir(_) => Fd::Dir(node),
            Entry::File(_) if oflags & O_DIRECTORY != 0 => return Ok(vfs::ENOTDIR),
            Entry::File(_) => Fd::File { node, pos: 0 },
        };
        match state.wasi.open(opened) {
            Ok(new) => errno(put(view, out, &(new as u32).to_le_bytes())),
            Err(e) => Ok(e),
        }
    })
}

fn path_readlink(
    mut ctx: Ctx<'_>,
    fd: i32,
    ptr: i32,
    len: i32,
    _buf: i32,
    _cap: i32,
    _out: i32,
) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, state| {
        // Nothing in the tree is a link.
        Ok(lookup(view, state, fd, ptr, len).map_or_else(|e| e, |_| EINVAL))
    })
}

fn poll_oneoff(mut ctx: Ctx<'_>, subs: i32, events: i32, n: i32, out: i32) -> Res {
    enter(&ctx)?;
    let deadline = ctx.data().host.deadline;
    with(&mut ctx, |view, state| {
        let Ok(n) = u32::try_from(n) else {
            return Ok(EINVAL);
        };
        if n == 0 || n > 64 {
            return Ok(EINVAL);
        }
        let mut sleep: Option<(u64, Duration)> = None;
        let mut ready = Vec::new();
        for i in 0..u64::from(n) {
            let mut sub = [0u8; 48];
            if view
                .read(u64::from(subs as u32) + i * 48, &mut sub)
                .is_err()
            {
                return Ok(EFAULT);
            }
            let userdata = u64::from_le_bytes(sub[0..8].try_into().expect("8 bytes"));
            match sub[8] {
                0 => {
                    let id = u32::from_le_bytes(sub[16..20].try_into().expect("4 bytes"));
                    let timeout = u64::from_le_bytes(sub[24..32].try_into().expect("8 bytes"));
                    let absolute = sub[40] & 1 != 0;
                    let wait = if absolute {
                        match state.wasi.now(id as i32) {
                            Ok(now) => timeout.saturating_sub(now),
                            Err(e) => return Ok(e),
                        }
                    } else {
                        timeout
                    };
                    let wait = Duration::from_nanos(wait);
                    if sleep.is_none_or(|(_, w)| wait < w) {
                        sleep = Some((userdata, wait));
                    }
                }
                // Descriptors are never "ready" for polling: answer each
                // with ENOTSUP at once.
                ty => ready.push((userdata, ty, ENOTSUP)),
            }
        }
        if ready.is_empty()
            && let Some((userdata, wait)) = sleep
        {
            if Instant::now() + wait >= deadline {
                // It would wake after the call's end: end it now.
                return Err(PluginError::DeadlineExceeded);
            }
            std::thread::sleep(wait);
            ready.push((userdata, 0, SUCCESS));
        }
        for (i, (userdata, ty, err)) in ready.iter().enumerate() {
            let mut event = [0u8; 32];
            event[0..8].copy_from_slice(&userdata.to_le_bytes());
            event[8..10].copy_from_slice(&(*err as u16).to_le_bytes());
            event[10] = *ty;
            if put_at(view, events, i as u64 * 32, &event).is_err() {
                return Ok(EFAULT);
            }
        }
        errno(put(view, out, &(ready.len() as u32).to_le_bytes()))
    })
}

fn proc_exit(_ctx: Ctx<'_>, code: i32) -> Result<(), PluginError> {
    Err(PluginError::Exception(format!(
        "SystemExit: the plugin exited the interpreter (status {code})"
    )))
}

fn random_get(mut ctx: Ctx<'_>, buf: i32, len: i32) -> Res {
    enter(&ctx)?;
    with(&mut ctx, |view, state| {
        let len = len as u32 as usize;
        let mut chunk = vec![0u8; len.min(64 << 10)];
        let mut done = 0;
        while done < len {
            let take = chunk.len().min(len - done);
            state.wasi.fill(&mut chunk[..take]);
            if put_at(view, buf, done as u64, &chunk[..take]).is_err() {
                return Ok(EFAULT);
            }
            done += take;
        }
        Ok(SUCCESS)
    })
}

/// The `wasi_snapshot_preview1` imports for one interpreter.
pub(crate) fn imports(store: &mut Store, env: &FunctionEnv<PyState>) -> Imports {
    let mut imports = Imports::new();
    let mut add = |name: &str, f: Function| imports.define("wasi_snapshot_preview1", name, f);
    macro_rules! typed {
        ($name:literal, $f:expr) => {
            add($name, Function::new_typed_with_env(store, env, $f))
        };
    }
    // Functions that answer the same whatever their arguments (of these
    // types) are, after the deadline check.
    macro_rules! constant {
        ($name:literal, $answer:ident $(, $t:ty)*) => {
            add(
                $name,
                Function::new_typed_with_env(store, env, |c: Ctx<'_> $(, _: $t)*| $answer(&c)),
            )
        };
    }
    typed!("args_get", args_get);
    typed!("args_sizes_get", args_sizes_get);
    typed!("environ_get", environ_get);
    typed!("environ_sizes_get", environ_sizes_get);
    typed!("clock_res_get", clock_res_get);
    typed!("clock_time_get", clock_time_get);
    typed!("fd_advise", |c: Ctx<'_>,
                         fd: i32,
                         _: i64,
                         _: i64,
                         _: i32| {
        fd_noop(&c, fd)
    });
    typed!("fd_close", fd_close);
    typed!("fd_datasync", |c: Ctx<'_>, fd: i32| fd_noop(&c, fd));
    typed!("fd_fdstat_get", fd_fdstat_get);
    typed!("fd_fdstat_set_flags", |c: Ctx<'_>, fd: i32, _: i32| {
        fd_noop(&c, fd)
    });
    typed!("fd_filestat_get", fd_filestat_get);
    constant!("fd_filestat_set_size", refuse, i32, i64);
    constant!("fd_filestat_set_times", refuse, i32, i64, i64, i32);
    typed!("fd_pread", fd_pread);
    typed!("fd_prestat_get", fd_prestat_get);
    typed!("fd_prestat_dir_name", fd_prestat_dir_name);
    constant!("fd_pwrite", refuse, i32, i32, i32, i64, i32);
    typed!("fd_read", fd_read);
    typed!("fd_readdir", fd_readdir);
    typed!("fd_seek", fd_seek);
    typed!("fd_sync", |c: Ctx<'_>, fd: i32| fd_noop(&c, fd));
    typed!("fd_tell", fd_tell);
    typed!("fd_write", fd_write);
    constant!("path_create_directory", refuse, i32, i32, i32);
    typed!("path_filestat_get", path_filestat_get);
    constant!(
        "path_filestat_set_times",
        refuse,
        i32,
        i32,
        i32,
        i32,
        i64,
        i64,
        i32
    );
    constant!("path_link", refuse, i32, i32, i32, i32, i32, i32, i32);
    typed!("path_open", path_open);
    typed!("path_readlink", path_readlink);
    constant!("path_remove_directory", refuse, i32, i32, i32);
    constant!("path_rename", refuse, i32, i32, i32, i32, i32, i32);
    constant!("path_symlink", refuse, i32, i32, i32, i32, i32);
    constant!("path_unlink_file", refuse, i32, i32, i32);
    typed!("poll_oneoff", poll_oneoff);
    typed!("proc_exit", proc_exit);
    constant!("sched_yield", yield_now);
    typed!("random_get", random_get);
    constant!("sock_accept", no_sockets, i32, i32, i32);
    constant!("sock_recv", no_sockets, i32, i32, i32, i32, i32, i32);
    constant!("sock_send", no_sockets, i32, i32, i32, i32, i32);
    constant!("sock_shutdown", no_sockets, i32, i32);
    imports
}

/// Any change to the file system.
fn refuse(ctx: &Ctx<'_>) -> Res {
    enter(ctx)?;
    Ok(EROFS)
}

fn yield_now(ctx: &Ctx<'_>) -> Res {
    enter(ctx)?;
    Ok(SUCCESS)
}

fn no_sockets(ctx: &Ctx<'_>) -> Res {
    enter(ctx)?;
    Ok(ENOTSUP)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memory of one page, and its store.
    fn one_page() -> (Store, wasmer::Memory) {
        let mut store = Store::default();
        let memory =
            wasmer::Memory::new(&mut store, wasmer::MemoryType::new(1, None, false)).unwrap();
        (store, memory)
    }

    /// Vectored I/O (CPython's own calls use one piece; wasi-libc's stdio
    /// uses two): up to 1 024 pieces, read and written in order.
    #[test]
    fn iovec_arrays_are_read_in_order_up_to_1024() {
        let (store, memory) = one_page();
        let view = memory.view(&store);
        // At 4096: 1 025 pieces; the first three `ab` at 100, `` and `cdef`
        // at 200, the rest empty.
        let at = 4096;
        let pieces = [(100u32, 2u32), (150, 0), (200, 4)];
        for i in 0..1025u32 {
            let (ptr, len) = pieces.get(i as usize).copied().unwrap_or((300, 0));
            put_at(&view, at, u64::from(i) * 8, &ptr.to_le_bytes()).unwrap();
            put_at(&view, at, u64::from(i) * 8 + 4, &len.to_le_bytes()).unwrap();
        }
        put(&view, 100, b"ab").unwrap();
        put(&view, 200, b"cdef").unwrap();
        let list = iovecs(&view, at, 1024).unwrap();
        assert_eq!(list.len(), 1024);
        assert_eq!(list[..3], [(100, 2), (150, 0), (200, 4)]);
        assert_eq!(iovecs(&view, at, 1025), Err(EINVAL));
        assert_eq!(iovecs(&view, at, -1), Err(EINVAL));
        assert_eq!(gather(&view, at, 3, 6), Ok(Some(b"abcdef".to_vec())));
        assert_eq!(gather(&view, at, 3, 5), Ok(None), "over the limit");
        // Written across the pieces, as far as there is data: the last
        // piece only in part.
        assert_eq!(scatter(&view, at, 3, b"wxy!"), Ok(4));
        let mut back = [0u8; 6];
        view.read(100, &mut back[..2]).unwrap();
        view.read(200, &mut back[2..]).unwrap();
        assert_eq!(&back, b"wxy!ef");
        // More data than room: as much as the pieces hold.
        assert_eq!(scatter(&view, at, 3, b"0123456789"), Ok(6));
    }

    /// `Entropy::Seeded` is splitmix64: the reference stream of seed 0,
    /// little-endian, and a tail shorter than eight bytes cut from the
    /// next number.
    #[test]
    fn seeded_entropy_is_splitmix64() {
        let mut wasi = Wasi::new(Arc::new(Vfs::empty()), Clock::Host, Entropy::Seeded(0));
        let mut buf = [0u8; 20];
        wasi.fill(&mut buf);
        let mut want = Vec::new();
        for n in [
            0xe220_a839_7b1d_cdaf_u64,
            0x6e78_9e6a_a1b9_65f4,
            0x06c4_5d18_8009_454f,
        ] {
            want.extend_from_slice(&n.to_le_bytes());
        }
        assert_eq!(buf[..], want[..20]);
    }

    /// An address past the end of the 32-bit space is outside memory: not
    /// an overflow (a panic in debug builds), not a wrap to its start.
    #[test]
    fn writes_past_the_address_space_are_faults() {
        let (store, memory) = one_page();
        let view = memory.view(&store);
        assert_eq!(put_at(&view, 16, 8, b"ok"), Ok(()));
        let mut at = [0u8; 2];
        view.read(24, &mut at).unwrap();
        assert_eq!(&at, b"ok", "written at 16 + 8");
        // `poll_oneoff`'s events and `random_get`'s buffer, near the top.
        assert_eq!(put_at(&view, i32::MAX, 32, b"x"), Err(EFAULT));
        // -1 is 0xffff_ffff: 64 past it is not address 63.
        assert_eq!(put_at(&view, -1, 64, b"x"), Err(EFAULT));
        let mut b = [0u8; 1];
        view.read(63, &mut b).unwrap();
        assert_eq!(b, [0]);
    }
}
