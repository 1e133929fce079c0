//! The `cog` module, call by call: the same answers as the wasm ABI.

use std::sync::Arc;

use bytes::Bytes;
use cog_sandbox::{KvScope, Limits, MemoryKv, Phase, PluginError, Runtime};

use crate::support::{exchange, load, python, reported, root, run, run_for};

#[test]
fn headers_can_be_read_set_and_removed() {
    let p = load(
        "def on_request(req):
    h = req.headers
    assert h.get('user-agent') == 'test/1' and h['User-Agent'] == 'test/1'
    assert h.get('x-missing') is None and h.get('x-missing', 'd') == 'd'
    assert 'user-agent' in h and 'x-missing' not in h
    try:
        h['x-missing']
        raise AssertionError('KeyError expected')
    except KeyError:
        pass
    h['x-new'] = 'v1'
    h['x-new'] = b'v2'
    h['x-gone'] = '1'
    assert h.remove('x-gone') is True and h.remove('x-gone') is False
    del h['x-existing']
    try:
        del h['x-existing']
        raise AssertionError('KeyError expected')
    except KeyError:
        pass
    h['x-names'] = ','.join(sorted(h.keys()))
",
    );
    let mut ex = exchange("acme");
    ex.request_headers
        .insert("x-existing", "1".parse().unwrap());
    p.call(Phase::Request, &mut ex).unwrap();
    assert_eq!(ex.request_headers["x-new"], "v2");
    assert!(ex.request_headers.get("x-gone").is_none());
    assert!(ex.request_headers.get("x-existing").is_none());
    assert_eq!(ex.request_headers["x-names"], "user-agent,x-new");
}

#[test]
fn cr_lf_and_protected_headers_are_refused() {
    let r = reported(
        "import cog
def on_request(req):
    out = []
    for name, value in [('x-a', 'a\\r\\nx-injected: 1'), ('x-a', 'nul\\x00'), ('bad name', 'v'),
                        ('content-length', '0'), ('host', 'evil'), ('transfer-encoding', 'chunked')]:
        try:
            req.headers[name] = value
            out.append('set')
        except cog.Invalid:
            out.append('invalid')
        except cog.NotAllowed:
            out.append('not-allowed')
    try:
        req.headers.remove('host')
    except cog.NotAllowed:
        out.append('not-allowed')
    req.headers['x-r'] = ' '.join(out)
",
    );
    assert_eq!(
        r,
        "invalid invalid invalid not-allowed not-allowed not-allowed not-allowed"
    );
    // Uncaught, the refusal is the call's error, and nothing was set.
    let p = load("def on_request(req):\n    req.headers['x-bad'] = 'a\\r\\nb'\n");
    let (r, ex) = run(&p);
    match r {
        Err(PluginError::Exception(m)) => assert!(m.starts_with("Invalid: "), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(ex.request_headers.get("x-bad").is_none());
}

#[test]
fn request_facts_and_config() {
    let p = load(
        "import cog
def on_request(req):
    req.headers['x-r'] = '|'.join([req.method, req.uri, req.tenant, cog.tenant(), cog.config().decode()])
",
    )
    .with_config("mode=strict");
    let (r, ex) = run_for(&p, "globex");
    r.unwrap();
    assert_eq!(
        ex.request_headers["x-r"],
        "POST|/v1/items?q=1|globex|globex|mode=strict"
    );
}

#[test]
fn bodies_are_read_and_replaced_and_requests_rejected() {
    let source = "import cog
def on_request(req):
    body = req.body
    req.headers['x-r'] = 'none' if body is None else body.decode()
    if body is not None:
        req.body = body.upper()
    if req.headers.get('x-reject'):
        req.reject(451, 'unavailable for legal reasons')
def on_response(resp):
    resp.body = b'[' + resp.body + b']'
";
    let p = load(source).bodies(true, true);
    let (r, ex) = run(&p);
    r.unwrap();
    assert_eq!(ex.request_headers["x-r"], r#"{"a":1}"#);
    assert_eq!(ex.request_body.as_deref(), Some(&br#"{"A":1}"#[..]));
    assert!(ex.rejected.is_none());

    let mut ex = exchange("acme");
    ex.request_headers.insert("x-reject", "1".parse().unwrap());
    p.call(Phase::Request, &mut ex).unwrap();
    let rejected = ex.rejected.expect("rejected");
    assert_eq!(rejected.status, 451);
    assert_eq!(rejected.body, "unavailable for legal reasons");

    let mut ex = exchange("acme");
    ex.status = Some(http::StatusCode::OK);
    ex.response_body = Some(Bytes::from_static(b"ok"));
    p.call(Phase::Response, &mut ex).unwrap();
    assert_eq!(ex.response_body.as_deref(), Some(&b"[ok]"[..]));

    // A body the host did not read is None and cannot be replaced.
    let p = load(
        "import cog
def on_request(req):
    try:
        req.body = b'x'
        replaced = 'replaced'
    except cog.NotAllowed:
        replaced = 'not-allowed'
    req.headers['x-r'] = f'{req.body} {replaced}'
",
    );
    let mut ex = exchange("acme");
    ex.request_body = None;
    p.call(Phase::Request, &mut ex).unwrap();
    assert_eq!(ex.request_headers["x-r"], "None not-allowed");

    // Statuses outside 400-599 are refused.
    let r = reported(
        "import cog
def on_request(req):
    try:
        req.reject(200, 'no')
        req.headers['x-r'] = 'rejected'
    except cog.Invalid:
        req.headers['x-r'] = 'invalid'
",
    );
    assert_eq!(r, "invalid");
}

#[test]
fn output_over_the_limit_ends_the_call() {
    let p = load("def on_request(req):\n    req.body = b'x' * 2_000_000\n").bodies(true, false);
    let (r, ex) = run(&p);
    assert_eq!(r, Err(PluginError::OutputLimit));
    assert_eq!(
        ex.request_body.as_deref(),
        Some(&br#"{"a":1}"#[..]),
        "untouched"
    );
    let p = load("def on_request(req):\n    req.reject(400, b'x' * 2_000_000)\n");
    assert_eq!(run(&p).0, Err(PluginError::OutputLimit));
}

#[test]
fn response_hook_sees_the_status_and_sets_response_headers() {
    let p = load(
        "import cog
def on_response(resp):
    resp.headers['x-status'] = str(resp.status)
    resp.headers['x-ua'] = resp.request_headers['user-agent']
    try:
        resp.request_headers['x-late'] = '1'
    except cog.NotAllowed:
        resp.headers['x-late'] = 'not-allowed'
",
    );
    assert!(!p.hooks(Phase::Request) && p.hooks(Phase::Response));
    let mut ex = exchange("acme");
    ex.status = Some(http::StatusCode::CREATED);
    p.call(Phase::Response, &mut ex).unwrap();
    assert_eq!(ex.response_headers["x-status"], "201");
    assert_eq!(ex.response_headers["x-ua"], "test/1");
    assert_eq!(ex.response_headers["x-late"], "not-allowed");
    assert!(ex.request_headers.get("x-late").is_none());

    // In the request hook, the response is not there: neither its status
    // nor its headers.
    let r = reported(
        "import cog
def on_request(req):
    out = []
    for probe in (lambda: cog.Response().status, lambda: cog.Response().headers.get('x'),
                  lambda: cog.Response().headers.keys()):
        try:
            probe()
            out.append('answered')
        except cog.NotAllowed:
            out.append('not-allowed')
    req.headers['x-r'] = ' '.join(out)
",
    );
    assert_eq!(r, "not-allowed not-allowed not-allowed");
}

#[test]
fn kv_is_scoped_to_tenant_and_plugin_with_quotas() {
    let kv = Arc::new(MemoryKv::new());
    let rt = Runtime::new()
        .artifact_dir(root().join("target/cog-artifacts"))
        .artifact_key(b"cog-sandbox tests")
        .kv(kv.clone())
        .python(python());
    let source = "import cog
def on_request(req):
    op = req.headers.get('x-op')
    if op == 'set':
        cog.kv.set('k', req.headers['x-value'])
    elif op == 'delete':
        req.headers['x-r'] = str(cog.kv.delete(b'k'))
        return
    elif op == 'big':
        cog.kv.set('big', b'x' * 70_000)
    elif op == 'many':
        for i in range(10):
            cog.kv.set(f'k{i}', 'v')
    elif op == 'long-key':
        cog.kv.get('k' * 300)
    value = cog.kv.get('k')
    req.headers['x-r'] = 'absent' if value is None else value.decode()
";
    let limits = Limits::python().max_kv_entries(5);
    let p = rt
        .load_python("counter", source.as_bytes(), limits)
        .unwrap();
    let other = rt
        .load_python("other", source.as_bytes(), limits.max_kv_bytes(10))
        .unwrap();
    let call = |plugin: &cog_sandbox::Plugin, tenant: &str, op: &str, value: &str| {
        let mut ex = exchange(tenant);
        ex.request_headers.insert("x-op", op.parse().unwrap());
        ex.request_headers.insert("x-value", value.parse().unwrap());
        plugin
            .call(Phase::Request, &mut ex)
            .map(|()| ex.request_headers["x-r"].to_str().unwrap().to_owned())
    };
    assert_eq!(call(&p, "acme", "set", "one").unwrap(), "one");
    assert_eq!(call(&p, "acme", "get", "").unwrap(), "one");
    assert_eq!(
        call(&p, "globex", "get", "").unwrap(),
        "absent",
        "another tenant"
    );
    assert_eq!(
        call(&other, "acme", "get", "").unwrap(),
        "absent",
        "another plugin"
    );
    let scope = KvScope {
        tenant: "acme".into(),
        plugin: "counter".into(),
    };
    assert_eq!(kv.len(&scope), 1);
    assert_eq!(
        call(&p, "acme", "big", ""),
        Err(PluginError::KvLimit("value too large"))
    );
    assert_eq!(
        call(&p, "acme", "long-key", ""),
        Err(PluginError::KvLimit("key too long"))
    );
    assert_eq!(
        call(&p, "acme", "many", ""),
        Err(PluginError::KvLimit("scope full"))
    );
    assert_eq!(kv.len(&scope), 5);
    assert_eq!(call(&p, "acme", "delete", "").unwrap(), "True");
    assert_eq!(call(&p, "acme", "delete", "").unwrap(), "False");
    // Entries of 2 + 1 bytes under a 10-byte scope: three fit.
    assert_eq!(
        call(&other, "acme", "many", ""),
        Err(PluginError::KvLimit("scope at its byte limit"))
    );
    let scope = KvScope {
        tenant: "acme".into(),
        plugin: "other".into(),
    };
    assert_eq!((kv.len(&scope), kv.bytes(&scope)), (3, 9));
}

#[test]
fn module_level_code_sees_no_request_and_no_tenant() {
    let p = load(
        "import cog
try:
    cog.tenant()
    AT_IMPORT = 'tenant'
except cog.NotAllowed:
    AT_IMPORT = 'not-allowed'
def on_request(req):
    req.headers['x-r'] = AT_IMPORT
",
    );
    let (r, ex) = run(&p);
    r.unwrap();
    assert_eq!(ex.request_headers["x-r"], "not-allowed");
}

#[test]
fn print_and_log_count_against_the_log_limit() {
    let p = load(
        "import cog
def on_request(req):
    print('hello from print')
    cog.log('a warning', 'warn')
    req.headers['x-r'] = 'ok'
",
    );
    assert_eq!(run(&p).0, Ok(()));
    let p = load(
        "import cog
def on_request(req):
    cog.log('x' * 20_000)
",
    );
    assert_eq!(run(&p).0, Err(PluginError::LogLimit));
    // Many small lines add up to the limit too (16 KiB).
    let p = load(
        "import cog
def on_request(req):
    for _ in range(200):
        cog.log('x' * 100, 'debug')
",
    );
    assert_eq!(run(&p).0, Err(PluginError::LogLimit));
    let p = load(
        "import cog
def on_request(req):
    for _ in range(100):
        cog.log('x' * 100, 'error')
",
    );
    assert_eq!(run(&p).0, Ok(()), "10 KB fits");
}

#[test]
fn python_limits_give_an_interpreter_room() {
    // 40 MiB of data, and 65 ms of sleep: each over the wasm defaults
    // (16 MiB, 50 ms), inside `Limits::python()` (64 MiB, 100 ms). Apart,
    // so that zeroing 40 MiB on a busy machine does not eat into the
    // sleep's margin.
    let r = reported(
        "def on_request(req):
    data = bytearray(40 << 20)
    req.headers['x-r'] = str(len(data))
",
    );
    assert_eq!(r, (40 << 20).to_string());
    let r = reported(
        "import time
def on_request(req):
    time.sleep(0.065)
    req.headers['x-r'] = 'slept'
",
    );
    assert_eq!(r, "slept");
}

#[test]
fn the_file_system_answers_reads_seeks_and_stats() {
    let r = reported(
        "import os, stat
def on_request(req):
    path = '/lib/python3.11/os.pyc'
    with open(path, 'rb') as f:
        data = f.read()
        f.seek(10)
        part = f.read(5)
        at = f.tell()
        f.seek(-4, 2)
        end = f.read()
    st = os.stat(path)
    lib = os.stat('/lib')
    checks = [
        part == data[10:15], at == 15, end == data[-4:], st.st_size == len(data) > 0,
        stat.S_ISREG(st.st_mode), stat.S_ISDIR(lib.st_mode),
        st.st_ino != lib.st_ino != os.stat('/').st_ino,
        'os.pyc' in os.listdir('/lib/python3.11'),
    ]
    req.headers['x-r'] = ' '.join(str(c) for c in checks)
",
    );
    assert_eq!(r, "True True True True True True True True");
}

#[test]
fn open_files_are_bounded() {
    let r = reported(
        "def on_request(req):
    held = []
    try:
        while len(held) < 1000:
            held.append(open('/lib/python3.11/os.pyc', 'rb'))
    except OSError as e:
        req.headers['x-r'] = f'{len(held)} {e.errno}'
",
    );
    // 128 descriptors, 5 of them standard streams, the root and the channel.
    assert_eq!(r, "123 33");
}

#[test]
fn a_hundred_printed_lines_fit_the_log() {
    // 100 × 101 bytes (newlines counted) is under 16 KiB.
    let r = reported(
        "def on_request(req):
    for _ in range(100):
        print('x' * 100)
    req.headers['x-r'] = 'ok'
",
    );
    assert_eq!(r, "ok");
}

#[test]
fn a_distribution_without_its_standard_library_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("lib/python3.11")).unwrap();
    let wasm = std::env::var_os("COG_PYTHON_WASI")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("target/python-wasi"))
        .join("python3.11.wasm");
    std::fs::copy(wasm, dir.path().join("python3.11.wasm")).unwrap();
    let python = cog_sandbox::Python::open(dir.path()).unwrap();
    assert!(
        format!("{python:?}").starts_with("Python { wasm_bytes: "),
        "{python:?}"
    );
    let rt = crate::support::runtime_with(python);
    match rt.load_python("p", b"def on_request(req): pass\n", Limits::python()) {
        Err(PluginError::Instantiate(m)) => {
            assert!(m.starts_with("CPython did not start: "), "{m}");
            assert!(m.contains("encoding"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // A missing directory: a typed error naming it.
    let e = cog_sandbox::Python::open(dir.path().join("nowhere")).unwrap_err();
    assert!(
        matches!(e, PluginError::InvalidModule(ref m) if m.contains("nowhere")),
        "{e:?}"
    );
}

#[test]
fn printed_newlines_count_against_the_log_limit() {
    // `print('abc')` writes four bytes: two fill a limit of 8, and then
    // even a bare newline is one byte too many.
    let limits = Limits::python().max_log_bytes(8);
    let two = "def on_request(req):\n    print('abc')\n    print('abc')\n";
    let p = crate::support::load_with(two, limits);
    assert_eq!(run(&p).0, Ok(()));
    let p = crate::support::load_with(&format!("{two}    print()\n"), limits);
    assert_eq!(run(&p).0, Err(PluginError::LogLimit));
}

#[test]
fn library_files_seek_from_start_here_and_end() {
    let r = reported(
        "import os
def on_request(req):
    data = open('/lib/python3.11/os.pyc', 'rb').read()
    f = open('/lib/python3.11/os.pyc', 'rb', buffering=0)
    first = f.read(10)
    here = f.seek(5, os.SEEK_CUR)
    a = f.read(3) == data[15:18]
    end = f.seek(-4, os.SEEK_END) == len(data) - 4 and f.read() == data[-4:]
    start = f.seek(2) == 2 and f.tell() == 2 and f.read(2) == data[2:4]
    try:
        f.seek(-1)
        before = 'allowed'
    except OSError as e:
        before = e.errno
    req.headers['x-r'] = f'{first == data[:10]} {here} {a} {end} {start} {before}'
",
    );
    assert_eq!(r, "True 15 True True True 28");
}

#[test]
fn the_library_tree_lists_opens_and_refuses_as_a_file_system_does() {
    let r = reported(
        "import os
def on_request(req):
    names = os.listdir('/lib/python3.11')
    listed = f'{len(names)} {len(set(names))} {\"os.pyc\" in names}'
    try:
        open('/lib/python3.11/os.pyc', 'x')
        excl = 'created'
    except OSError as e:
        excl = e.errno
    errs = []
    for n in (4096, 4097):
        try:
            os.stat('a' * n)
        except OSError as e:
            errs.append(e.errno)
    try:
        os.listdir('/lib/python3.11/os.pyc')
        notdir = 'listed'
    except OSError as e:
        notdir = e.errno
    import select
    import time
    started = time.monotonic()
    polled = [select.select([], [], [], 0.02), time.monotonic() - started >= 0.02]
    for fds in ([0, 1, 2], list(range(63)), list(range(64))):
        try:
            r, w, x = select.select(fds, [], [], 0.001)
            polled.append(len(r))
        except OSError as e:
            polled.append(f'e{e.errno}')
    req.headers['x-r'] = f'{listed} {excl} {errs} {notdir} {polled}'
",
    );
    // Every name once, across the several reads a long directory takes
    // (each picks up where the last one's cookie says); `x` on a file
    // there: it exists; a path of 4 096 bytes is looked up, one longer is
    // too long.
    let (listed, rest) = r.split_once(' ').unwrap();
    assert!(listed.parse::<usize>().unwrap() > 150, "{r}");
    // A directory is what a file is not; `select` waits as long as its
    // (relative) timeout at least, and polls up to 64 things at once
    // (descriptors are never ready here: each answers at once with an
    // error, which `select` counts as readable), not 65.
    assert_eq!(
        rest,
        format!("{listed} True 20 [44, 37] 54 [([], [], []), True, 3, 63, 'e28']")
    );
}
