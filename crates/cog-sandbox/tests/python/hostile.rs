//! Hostile Python: every case ends in a typed error, and the host serves
//! the next request.

use std::time::{Duration, Instant};

use cog_sandbox::{Limits, PluginError};

use crate::support::{load, load_with, python, run, runtime_with, still_serving};

/// Loads `source`, runs its request hook, expects `want`.
fn expect(source: &str, limits: Limits, want: PluginError) {
    let p = load_with(source, limits);
    let (r, _) = run(&p);
    assert_eq!(r, Err(want), "{source}");
    still_serving();
}

/// Loads `source`, runs it, expects an exception whose message starts so.
fn expect_exception(source: &str, starts: &str) {
    let p = load(source);
    match run(&p).0 {
        Err(PluginError::Exception(m)) => assert!(m.starts_with(starts), "{m}\n{source}"),
        other => panic!("{other:?}\n{source}"),
    }
    still_serving();
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    expect(
        "def on_request(req):\n    while True: pass\n",
        Limits::python()
            .fuel(20_000_000)
            .deadline(Duration::from_secs(30)),
        PluginError::FuelExhausted,
    );
}

#[test]
fn an_endless_loop_with_endless_fuel_stops_at_the_deadline() {
    let deadline = Duration::from_millis(200);
    let p = load_with(
        "def on_request(req):\n    while True: pass\n",
        Limits::python().fuel(u64::MAX / 2).deadline(deadline),
    );
    let started = Instant::now();
    assert_eq!(run(&p).0, Err(PluginError::DeadlineExceeded));
    let took = started.elapsed();
    // The watchdog stops it at the deadline (a cold start comes first).
    assert!(took >= deadline, "{took:?}");
    assert!(took < deadline + Duration::from_secs(2), "{took:?}");
    still_serving();
}

#[test]
fn a_loop_through_a_host_call_stops_at_the_deadline() {
    expect(
        "def on_request(req):\n    while True: req.headers.get('x-missing')\n",
        Limits::python()
            .fuel(u64::MAX / 2)
            .deadline(Duration::from_millis(200)),
        PluginError::DeadlineExceeded,
    );
}

#[test]
fn sleeping_past_the_deadline_ends_the_call_at_once() {
    let p = load("def on_request(req):\n    import time\n    time.sleep(60)\n");
    let started = Instant::now();
    assert_eq!(run(&p).0, Err(PluginError::DeadlineExceeded));
    // No waiting for a sleep that would end after the deadline.
    assert!(started.elapsed() < Limits::python().deadline + Duration::from_secs(2));
    // A short sleep inside the deadline sleeps.
    let p = load(
        "def on_request(req):\n    import time\n    a = time.monotonic()\n    time.sleep(0.02)\n    req.headers['x-r'] = str(time.monotonic() - a >= 0.02)\n",
    );
    let (r, ex) = run(&p);
    r.unwrap();
    assert_eq!(ex.request_headers["x-r"], "True");
}

#[test]
fn allocation_bombs_stop_at_the_memory_cap() {
    // More than the address space: refused by Python itself.
    expect_exception(
        "def on_request(req):\n    'a' * 10**10\n",
        "OverflowError: cannot fit 'int'",
    );
    // A gigabyte: over the 64 MiB cap.
    expect(
        "def on_request(req):\n    'a' * 10**9\n",
        Limits::python(),
        PluginError::MemoryLimit,
    );
    // Filling 64 MiB takes most of the default 100 ms deadline on this
    // machine, and more when it is busy: the deadline is out of the way
    // (fuel is counted, not timed, and still outlasts the memory).
    expect(
        "def on_request(req):\n    x = []\n    while True: x.append('a' * 10**5)\n",
        Limits::python().deadline(Duration::from_secs(10)),
        PluginError::MemoryLimit,
    );
}

#[test]
fn deep_recursion_with_a_raised_limit_is_stopped() {
    // Python frames: until fuel (or memory) runs out.
    let p = load(
        "import sys\ndef on_request(req):\n    sys.setrecursionlimit(10**6)\n    def f(n): return f(n + 1)\n    f(0)\n",
    );
    let r = run(&p).0;
    assert!(
        matches!(
            r,
            Err(PluginError::FuelExhausted | PluginError::MemoryLimit)
        ),
        "{r:?}"
    );
    // Recursion through C (repr): a stack runs out — the engine's call
    // stack, or CPython's shadow stack, which sits below its data and so
    // overflows out of bounds, never into it — a trap.
    let p = load(
        "import sys\nclass A:\n    def __repr__(self): return repr(A())\ndef on_request(req):\n    sys.setrecursionlimit(10**6)\n    repr(A())\n",
    );
    match run(&p).0 {
        Err(PluginError::Trap(cause)) => {
            let text = cause.to_string();
            assert!(
                text.contains("call stack exhausted")
                    || text.contains("out of bounds memory access"),
                "{cause}"
            );
        }
        other => panic!("{other:?}"),
    }
    still_serving();
}

#[test]
fn no_network_no_native_code_no_processes() {
    expect_exception(
        "def on_request(req):\n    import socket\n    socket.create_connection(('127.0.0.1', 80))\n",
        "AttributeError: module '_socket' has no attribute",
    );
    expect_exception(
        "def on_request(req):\n    import socket\n    socket.socket()\n",
        "",
    );
    expect_exception(
        "def on_request(req):\n    import ctypes\n",
        "ModuleNotFoundError: No module named '_ctypes'",
    );
    expect_exception(
        "def on_request(req):\n    import subprocess\n    subprocess.run(['ls'])\n",
        "OSError: [Errno 58]",
    );
    expect_exception(
        "def on_request(req):\n    import os\n    os.system('ls')\n",
        "AttributeError: module 'os' has no attribute 'system'",
    );
    expect_exception(
        "import os\ndef on_request(req):\n    os._exit(3)\n",
        "SystemExit: the plugin exited the interpreter (status 3)",
    );
    expect_exception(
        "def on_request(req):\n    import threading\n    threading.Thread(target=print).start()\n",
        "RuntimeError: can't start new thread",
    );
}

#[test]
fn no_host_files_and_nothing_writable() {
    expect_exception(
        "def on_request(req):\n    open('/etc/passwd').read()\n",
        "FileNotFoundError: [Errno 44] No such file or directory: '/etc/passwd'",
    );
    expect_exception(
        "def on_request(req):\n    open('../../../../etc/passwd').read()\n",
        "FileNotFoundError",
    );
    expect_exception(
        "def on_request(req):\n    open('/lib/x', 'w')\n",
        "OSError: [Errno 69] Read-only file system",
    );
    expect_exception(
        "def on_request(req):\n    import os\n    os.remove('/lib/python3.11/os.pyc')\n",
        "OSError: [Errno 69] Read-only file system",
    );
    // What there is to see: the standard library, no environment.
    let p = load(
        "import os\ndef on_request(req):\n    req.headers['x-r'] = repr((dict(os.environ), os.listdir('/'), os.getcwd(), sorted(os.listdir('/lib'))))\n",
    );
    let (r, ex) = run(&p);
    r.unwrap();
    assert_eq!(
        ex.request_headers["x-r"],
        "({}, ['lib'], '/', ['python3.11'])"
    );
}

#[test]
fn endless_output_hits_the_log_limit() {
    expect(
        "def on_request(req):\n    while True: print('x' * 100)\n",
        Limits::python(),
        PluginError::LogLimit,
    );
}

#[test]
fn broken_plugins_are_refused_at_load() {
    let rt = crate::support::runtime();
    let refused = |source: &str| {
        rt.load_python("bad", source.as_bytes(), Limits::python())
            .expect_err(source)
    };
    match refused("def on_request(req:\n") {
        PluginError::InvalidScript(m) => {
            assert_eq!(m, "SyntaxError: '(' was never closed (plugin.py, line 1)")
        }
        e => panic!("{e:?}"),
    }
    match refused("raise RuntimeError('at import')\ndef on_request(req): pass\n") {
        PluginError::InvalidScript(m) => assert!(m.starts_with("RuntimeError: at import"), "{m}"),
        e => panic!("{e:?}"),
    }
    match refused("x = 1\n") {
        PluginError::InvalidScript(m) => assert!(m.contains("neither on_request nor on_response")),
        e => panic!("{e:?}"),
    }
    match refused("on_request = 42\n") {
        PluginError::InvalidScript(m) => assert!(m.contains("not a function"), "{m}"),
        e => panic!("{e:?}"),
    }
    match refused("\u{0}\u{ff}garbage") {
        PluginError::InvalidScript(m) => assert!(m.starts_with("SyntaxError"), "{m}"),
        e => panic!("{e:?}"),
    }
    still_serving();
}

#[test]
fn module_level_loops_are_bounded_by_the_startup_budget() {
    let budget = Duration::from_secs(5);
    let rt = runtime_with(python().startup(u64::MAX / 2, budget));
    // The interpreter starts within that budget…
    rt.load_python("fine", b"def on_request(req): pass\n", Limits::python())
        .unwrap();
    // …a plugin whose module-level code spins does not load.
    let started = Instant::now();
    let err = rt
        .load_python("spin", b"while True: pass\n", Limits::python())
        .expect_err("never loads");
    assert_eq!(err, PluginError::DeadlineExceeded);
    let took = started.elapsed();
    assert!(
        took >= budget && took < budget + Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn exceptions_and_wrong_returns_are_typed() {
    expect_exception(
        "def on_request(req):\n    raise ValueError('boom')\n",
        "ValueError: boom (plugin.py, line 2, in on_request)",
    );
    expect_exception(
        "def on_request(req):\n    return 42\n",
        "TypeError: on_request returned int; a hook returns None",
    );
    expect_exception(
        "import sys\ndef on_request(req):\n    sys.exit(2)\n",
        "SystemExit: 2",
    );
    expect_exception(
        "def on_request():\n    pass\n",
        "TypeError: on_request() takes 0 positional arguments but 1 was given",
    );
}

#[test]
fn a_flood_of_header_fields_hits_the_header_list_limit() {
    // Unchecked, the 32 768th field made `HeaderMap` panic in the host.
    expect(
        "def on_request(req):\n    for i in range(40_000):\n        req.headers[f'x-{i}'] = ''\n",
        Limits::python().deadline(Duration::from_secs(30)),
        PluginError::HeaderLimit,
    );
    // What a call leaves is counted, not what it wrote.
    let p = load_with(
        "def on_request(req):\n    for i in range(500):\n        req.headers['x-a'] = 'v' * 100\n        req.headers[f'x-{i}'] = 'v' * 100\n        del req.headers[f'x-{i}']\n",
        Limits::python()
            .max_header_list_bytes(4096)
            .fuel(2_000_000_000)
            .deadline(Duration::from_secs(30)),
    );
    let (r, ex) = run(&p);
    r.unwrap();
    assert_eq!(ex.request_headers["x-a"].len(), 100);
}

#[test]
fn host_calls_that_never_read_their_answers_end_the_call() {
    // `os.write` on the channel: 200 000 requests for `cog.py` (9 KiB
    // each) in one write, no answer read. Answered, they held 2 GB of the
    // host's memory for one call; now the second message ends it.
    expect_exception(
        "import os\ndef on_request(req):\n    os.write(4, ((1).to_bytes(4, 'little') + bytes([25])) * 200_000)\n",
        "cog: host call made before the last answer was read",
    );
    // One write per message, the same.
    expect_exception(
        "import os\ndef on_request(req):\n    while True:\n        os.write(4, (1).to_bytes(4, 'little') + bytes([25]))\n",
        "cog: host call made before the last answer was read",
    );
    // A failure the dispatcher reports with an answer left unread (a
    // `MemoryError` while reading one) is the failure reported.
    expect_exception(
        "import os\ndef on_request(req):\n    os.write(4, (1).to_bytes(4, 'little') + bytes([25]))\n    raise ValueError('mine')\n",
        "ValueError: mine",
    );
    // A message whose answer is read in full, then another: the protocol.
    let p = load(
        "import os\ndef on_request(req):\n    for _ in range(2):\n        os.write(4, (1).to_bytes(4, 'little') + bytes([6]))\n        a = os.read(4, 64)\n    req.headers['x-r'] = a[8:].decode()\n",
    );
    let (r, ex) = run(&p);
    r.unwrap();
    assert_eq!(ex.request_headers["x-r"], "POST");
}
