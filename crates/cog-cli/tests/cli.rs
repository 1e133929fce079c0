//! The real `cog` binary: output, exit codes, JSON, the apply/diff cycle,
//! crash-safe writes, and changes reaching a running service.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

const HEADERS_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/plugins/dist/headers.wasm"
);

const HEADERS_PY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/plugins/python/headers.py"
);

/// The CPython for WASI `scripts/setup` fetched.
fn python_wasi() -> PathBuf {
    std::env::var_os("COG_PYTHON_WASI")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/python-wasi"))
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

fn cog_in(store: &str, dir: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    cog_via(store, None, dir, args, stdin)
}

/// `cog` over `store`, or through the admin API at `server` (URL, token).
fn cog_via(
    store: &str,
    server: Option<&Served>,
    dir: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cog"));
    if let Some(s) = server {
        cmd.arg("--server").arg(&s.url).env("COG_TOKEN", &s.token);
    }
    let mut child = cmd
        .args(args)
        .current_dir(dir)
        .env("COG_STORE", store)
        .env("COG_PYTHON_WASI", python_wasi())
        .env(
            "COG_CACHE_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/cog-cli-cache"),
        )
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cog runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A `cog serve` over an environment's store (killed on drop), or only
/// its address and a token to reach it with.
struct Served {
    child: Option<std::process::Child>,
    url: String,
    token: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `cog serve` over `store` (in `dir`) on a free port; the address
/// from its first line on stderr.
fn serve(store: &str, dir: &Path, extra: &[&str]) -> (std::process::Child, String) {
    let (server, line) = serve_line(store, dir, extra);
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (server, addr)
}

/// Starts `cog serve` over `store` (in `dir`) on a free port; its first
/// line on stderr.
fn serve_line(store: &str, dir: &Path, extra: &[&str]) -> (std::process::Child, String) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_cog"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .current_dir(dir)
        .env("COG_STORE", store)
        .env("COG_PYTHON_WASI", python_wasi())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stderr.take().unwrap()),
        &mut line,
    )
    .unwrap();
    (server, line)
}

struct Env {
    dir: tempfile::TempDir,
    store: String,
    /// When set, every command goes through this admin API.
    served: Option<Served>,
}

impl Env {
    fn file() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("file:{}", dir.path().join("state.json").display());
        Env {
            dir,
            store,
            served: None,
        }
    }

    fn redis(server: &cog_testkit::RedisServer) -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            store: server.url(),
            served: None,
        }
    }

    /// The same store, but every command through `cog serve --server`
    /// with a write token.
    fn served(mut self) -> Env {
        let token = self
            .ok(&[
                "token", "create", "--name", "cli", "--scope", "write", "-o", "json",
            ])
            .json()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let (child, addr) = serve(&self.store, self.dir.path(), &[]);
        self.served = Some(Served {
            child: Some(child),
            url: format!("http://{addr}"),
            token,
        });
        self
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None)
    }

    fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Run {
        cog_via(
            &self.store,
            self.served.as_ref(),
            self.dir.path(),
            args,
            stdin,
        )
    }

    /// Runs and expects exit 0.
    fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "cog {args:?}: {}{}", r.stdout, r.stderr);
        r
    }
}

fn seed(env: &Env) {
    env.ok(&[
        "plan",
        "create",
        "free",
        "--limit",
        "rps=10/1s,burst=20",
        "--quota",
        "daily=10000/1d",
    ]);
    env.ok(&["plan", "create", "pro", "--limit", "rps=200/1s,burst=400"]);
    env.ok(&[
        "tenant",
        "create",
        "acme",
        "--plan",
        "free",
        "--name",
        "Acme Inc",
        "--meta",
        "region=eu",
    ]);
}

#[test]
fn tables_are_aligned_and_json_is_parseable() {
    let env = Env::file();
    seed(&env);
    assert_eq!(
        env.ok(&["plan", "list"]).stdout,
        "NAME  LIMITS                QUOTAS          CACHE BUDGET\n\
         free  rps=10/1s,burst=20    daily=10000/1d\n\
         pro   rps=200/1s,burst=400\n"
    );
    assert_eq!(
        env.ok(&["tenant", "list"]).stdout,
        "ID    PLAN  STATUS  NAME      KEYS\nacme  free  active  Acme Inc  0\n"
    );
    let plans = env.ok(&["-o", "json", "plan", "list"]).json();
    assert_eq!(plans[0]["name"], "free");
    assert_eq!(plans[0]["limits"][0]["burst"], 20);
    assert_eq!(plans[0]["quotas"][0]["window"], "1d");
    let tenant = env.ok(&["-o", "json", "tenant", "show", "acme"]).json();
    assert_eq!(tenant["plan"], "free");
    assert_eq!(tenant["metadata"]["region"], "eu");

    // A key is shown once; the store holds only its hash.
    let key = env
        .ok(&["-o", "json", "key", "create", "--tenant", "acme"])
        .json();
    let secret = key["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("cog_"));
    let keys = env.ok(&["-o", "json", "key", "list"]).json();
    assert_eq!(keys[0]["id"], key["id"]);
    let shown = env
        .ok(&["-o", "json", "key", "show", key["id"].as_str().unwrap()])
        .json();
    assert_eq!(
        (shown["tenant"].as_str(), shown["revoked"].as_bool()),
        (Some("acme"), Some(false))
    );
    assert!(
        !env.ok(&["-o", "json", "key", "list"])
            .stdout
            .contains(&secret)
    );
    let stored = std::fs::read_to_string(env.path("state.json")).unwrap();
    assert!(!stored.contains(&secret), "the key itself is never stored");
    // Table output of a created key: the key alone on stdout, the words
    // on stderr.
    let r = env.ok(&["key", "create", "--tenant", "acme"]);
    assert!(
        r.stdout.starts_with("cog_") && r.stdout.lines().count() == 1,
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("shown once"));

    let script = env.ok(&["completions", "bash"]).stdout;
    assert!(script.contains("_cog()"));
}

#[test]
fn exit_codes_say_what_went_wrong() {
    let env = Env::file();
    seed(&env);
    // 2: usage and invalid input.
    let r = env.run(&["plan", "create", "bad", "--limit", "rps=0/1s"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("plans.bad.limits[0].rate"),
        "{}",
        r.stderr
    );
    assert_eq!(
        env.run(&["plan", "create", "x", "--limit", "rps=ten/1s"])
            .code,
        2
    );
    assert_eq!(env.run(&["plan", "frobnicate"]).code, 2);
    assert_eq!(env.run(&["--store", "ftp://x", "plan", "list"]).code, 2);
    // 3: not found, exists, in use.
    assert_eq!(env.run(&["tenant", "show", "nobody"]).code, 3);
    assert_eq!(
        env.run(&["tenant", "create", "acme", "--plan", "free"])
            .code,
        3
    );
    let r = env.run(&["plan", "delete", "free", "--yes"]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("in use by tenants acme"), "{}", r.stderr);
    // 5: destructive, no --yes, no terminal to ask on — and nothing done.
    let r = env.run(&["tenant", "delete", "acme"]);
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(r.stderr.contains("--yes"));
    env.ok(&["tenant", "show", "acme"]);
    // 6: a plugin the sandbox refuses is never stored.
    std::fs::write(env.path("bad.wasm"), b"MZ not wasm").unwrap();
    std::fs::write(env.path("empty.wasm"), b"\0asm\x01\0\0\0").unwrap();
    assert_eq!(
        env.run(&["plugin", "install", "bad.wasm", "--plan", "free"])
            .code,
        6
    );
    let r = env.run(&["plugin", "install", "empty.wasm", "--plan", "free"]);
    assert_eq!(r.code, 6);
    assert!(r.stderr.contains("memory"), "{}", r.stderr);
    assert_eq!(
        env.ok(&["-o", "json", "plugin", "list"]).json(),
        Value::Array(vec![])
    );
    // 4: the store is unreadable.
    std::fs::write(env.path("state.json"), "{ torn").unwrap();
    let r = env.run(&["plan", "list"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("unreadable"), "{}", r.stderr);
    // 2: the caller's own document does not parse.
    std::fs::write(env.path("mine.yaml"), "plans: [unclosed").unwrap();
    let r = Env::file().run(&["apply", "-f", &env.path("mine.yaml").display().to_string()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("cannot parse"), "{}", r.stderr);
    let r = env.run(&["--store", "redis://127.0.0.1:1", "plan", "list"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
}

#[test]
fn plugins_install_validated_and_run_locally() {
    let env = Env::file();
    seed(&env);
    let r = env.ok(&[
        "-o",
        "json",
        "plugin",
        "install",
        HEADERS_WASM,
        "--plan",
        "free",
        "--version",
        "1.2",
        "--config",
        "response add x-a: b",
        "--on-error",
        "fail",
    ]);
    let p = r.json();
    assert_eq!(p["name"], "headers");
    assert!(p["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(p["on_error"], "fail");
    let r = env.run(&["plugin", "update", "headers", "--on-error", "sometimes"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    env.ok(&["plugin", "update", "headers", "--on-error", "skip"]);
    let p = env.ok(&["-o", "json", "plugin", "show", "headers"]).json();
    assert!(p.get("on_error").is_none(), "skip is the default: {p}");
    env.ok(&[
        "plugin",
        "update",
        "headers",
        "--tenant",
        "acme",
        "--detach",
        "plan:free",
        "--config",
        "x",
    ]);
    let p = env.ok(&["-o", "json", "plugin", "show", "headers"]).json();
    assert_eq!(p["attach"]["tenants"][0], "acme");
    assert!(p["attach"].get("plans").is_none(), "{p}");
    assert_eq!(p["config"], "x");
    assert_eq!(
        env.run(&["plugin", "update", "headers", "--tenant", "ghost"])
            .code,
        2
    );
    // Attached to a plan whose plugins get less memory than the module
    // asks for: checked like an install, refused (6), unchanged.
    env.ok(&["plan", "create", "tiny", "--plugin-memory", "65536"]);
    let r = env.run(&["plugin", "update", "headers", "--plan", "tiny"]);
    assert_eq!(r.code, 6, "{}", r.stderr);
    assert!(r.stderr.contains("memory"), "{}", r.stderr);
    let p = env.ok(&["-o", "json", "plugin", "show", "headers"]).json();
    assert!(p["attach"].get("plans").is_none(), "{p}");
    // So is a plan's new plugin limits, and a tenant moved to `tiny`,
    // while the plugin runs for it.
    env.ok(&["plan", "create", "small", "--plugin-fuel", "5000000"]);
    env.ok(&["plugin", "update", "headers", "--plan", "small"]);
    let r = env.run(&["plan", "update", "small", "--plugin-memory", "65536"]);
    assert_eq!(r.code, 6, "{}", r.stderr);
    let p = env.ok(&["-o", "json", "plan", "show", "small"]).json();
    assert!(p.to_string().contains("5000000"), "{p}");
    assert!(!p.to_string().contains("65536"), "{p}");
    // An update changes the plugin limits it names, and keeps the others.
    env.ok(&["plan", "update", "small", "--plugin-kv-bytes", "4096"]);
    let p = env.ok(&["-o", "json", "plan", "show", "small"]).json();
    assert!(p.to_string().contains("5000000"), "{p}");
    assert!(p.to_string().contains("4096"), "{p}");
    let r = env.run(&["tenant", "set-plan", "acme", "tiny"]);
    assert_eq!(r.code, 6, "{}", r.stderr);
    let t = env.ok(&["-o", "json", "tenant", "show", "acme"]).json();
    assert_eq!(t["plan"], "free", "{t}");
    std::fs::write(
        env.path("cut.yaml"),
        "plans:\n  small:\n    plugin_limits: {memory_bytes: 65536}\n",
    )
    .unwrap();
    let r = env.run(&["apply", "-f", "cut.yaml"]);
    assert_eq!(r.code, 6, "{}", r.stderr);
    assert!(r.stderr.contains("memory"), "{}", r.stderr);
    env.ok(&["plugin", "update", "headers", "--detach", "plan:small"]);
    // … and under what it runs under only: a module that needs more
    // memory than the defaults give, attached to a plan that gives it, is
    // taken.
    let roomy = wat::parse_str(
        r#"(module
             (memory (export "memory") 300)
             (func (export "cog_abi_version") (result i32) i32.const 1)
             (func (export "cog_on_request") (result i32) i32.const 0))"#,
    )
    .unwrap();
    std::fs::write(env.path("roomy.wasm"), roomy).unwrap();
    std::fs::write(
        env.path("roomy.yaml"),
        "plans:\n  roomy:\n    plugin_limits: {memory_bytes: 33554432}\n\
         plugins:\n  roomy:\n    file: roomy.wasm\n    attach: {plans: [roomy]}\n",
    )
    .unwrap();
    env.ok(&["apply", "-f", "roomy.yaml"]);
    let r = env.run(&["plugin", "install", "roomy.wasm", "--name", "cramped"]);
    assert_eq!(r.code, 6, "{}", r.stderr);
    // `cog apply` checks a plugin under its own limits too.
    std::fs::copy(HEADERS_WASM, env.path("small.wasm")).unwrap();
    std::fs::write(
        env.path("small.yaml"),
        "plugins:\n  small:\n    file: small.wasm\n    limits: {memory_bytes: 65536}\n",
    )
    .unwrap();
    let r = env.run(&["apply", "-f", "small.yaml"]);
    assert_eq!(r.code, 6, "{}", r.stderr);
    assert!(r.stderr.contains("memory"), "{}", r.stderr);
    env.ok(&["plugin", "update", "headers", "--detach", "tenant:acme"]);
    let p = env.ok(&["-o", "json", "plugin", "show", "headers"]).json();
    assert!(p["attach"].get("tenants").is_none(), "{p}");
    env.ok(&["plugin", "disable", "headers"]);
    assert_eq!(
        env.ok(&["-o", "json", "plugin", "show", "headers"]).json()["enabled"],
        false
    );

    std::fs::write(
        env.path("req.json"),
        r#"{"method": "GET", "uri": "/x", "headers": {"x-internal-a": "1", "accept": "*/*"}}"#,
    )
    .unwrap();
    let r = env.ok(&[
        "-o",
        "json",
        "plugin",
        "run",
        HEADERS_WASM,
        "--request",
        "req.json",
        "--config",
        "request add x-b: c\nrequest strip x-internal-",
    ]);
    let out = r.json();
    assert_eq!(out["ok"], true);
    assert_eq!(out["request"]["headers"]["x-b"], "c");
    assert!(out["request"]["headers"].get("x-internal-a").is_none());
    assert_eq!(out["request"]["headers"]["accept"], "*/*");

    std::fs::write(env.path("bad.json"), r#"{"method": "GET", "colour": 1}"#).unwrap();
    let r = env.run(&["plugin", "run", HEADERS_WASM, "--request", "bad.json"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("colour"), "{}", r.stderr);
}

#[test]
fn python_plugins_install_validated_and_run_locally() {
    let env = Env::file();
    seed(&env);
    // By extension: a `.py` file is Python.
    let p = env
        .ok(&[
            "-o", "json", "plugin", "install", HEADERS_PY, "--plan", "free",
        ])
        .json();
    assert_eq!(p["name"], "headers");
    assert_eq!(p["lang"], "python");
    assert!(p["digest"].as_str().unwrap().starts_with("sha256:"));
    let p = env.ok(&["-o", "json", "plugin", "show", "headers"]).json();
    assert_eq!(p["lang"], "python", "{p}");

    // Refused in the sandbox, exit 6, nothing stored: a syntax error, a
    // module-level exception, no hook, bytes that are not text; and
    // `--lang python` on a file of another name.
    for (file, source) in [
        ("broken.py", "def on_request(req:\n"),
        (
            "raises.py",
            "raise ValueError('no')\ndef on_request(req): pass\n",
        ),
        ("nohook.py", "x = 1\n"),
        ("binary.py", "\u{0}\u{1}"),
    ] {
        std::fs::write(env.path(file), source).unwrap();
        let r = env.run(&["plugin", "install", file, "--plan", "free"]);
        assert_eq!(r.code, 6, "{file}: {}", r.stderr);
    }
    std::fs::write(env.path("hook.txt"), "def on_request(req:\n").unwrap();
    let r = env.run(&["plugin", "install", "hook.txt", "--lang", "python"]);
    assert_eq!(r.code, 6, "{}", r.stderr);
    assert!(r.stderr.contains("SyntaxError"), "{}", r.stderr);
    let names: Vec<Value> = env
        .ok(&["-o", "json", "plugin", "list"])
        .json()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(names.len(), 1, "{names:?}");

    // Run locally: what it changed; a hostile hook ends in exit 6.
    std::fs::write(
        env.path("req.json"),
        r#"{"method": "GET", "uri": "/x", "headers": {"x-internal-a": "1", "accept": "*/*"}}"#,
    )
    .unwrap();
    let out = env
        .ok(&[
            "-o",
            "json",
            "plugin",
            "run",
            HEADERS_PY,
            "--request",
            "req.json",
            "--config",
            "request add x-b: c\nrequest strip x-internal-",
        ])
        .json();
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["request"]["headers"]["x-b"], "c");
    assert!(out["request"]["headers"].get("x-internal-a").is_none());
    for (file, source, error) in [
        (
            "spin.py",
            "def on_request(req):\n    while True: pass\n",
            "fuel exhausted",
        ),
        (
            "bomb.py",
            "def on_request(req):\n    x = 'a' * 10**9\n",
            "memory limit",
        ),
        (
            "peek.py",
            "def on_request(req):\n    open('/etc/passwd')\n",
            "FileNotFoundError",
        ),
        (
            "crlf.py",
            "def on_request(req):\n    req.headers['x'] = 'a\\r\\nb'\n",
            "Invalid",
        ),
        (
            "sleep.py",
            "import time\ndef on_request(req):\n    time.sleep(60)\n",
            "deadline exceeded",
        ),
        (
            "chatty.py",
            "def on_request(req):\n    while True: print('x' * 100)\n",
            "log limit",
        ),
        (
            "native.py",
            "def on_request(req):\n    import ctypes\n",
            "ModuleNotFoundError",
        ),
        (
            "thread.py",
            "import threading\ndef on_request(req):\n    threading.Thread(target=print).start()\n",
            "can't start new thread",
        ),
        (
            "shell.py",
            "import subprocess\ndef on_request(req):\n    subprocess.run(['sh'])\n",
            "OSError",
        ),
        (
            "wrong.py",
            "def on_request(req):\n    return 'yes'\n",
            "returned str",
        ),
    ] {
        std::fs::write(env.path(file), source).unwrap();
        let r = env.run(&["-o", "json", "plugin", "run", file, "--request", "req.json"]);
        assert_eq!(r.code, 6, "{file}: {}", r.stderr);
        let out = r.json();
        assert_eq!(out["ok"], false);
        assert!(
            out["error"].as_str().unwrap().contains(error),
            "{file}: {out}"
        );
    }

    // `cog apply` reads a `file: *.py` plugin as Python.
    std::fs::copy(HEADERS_PY, env.path("twin.py")).unwrap();
    std::fs::write(
        env.path("plugins.yaml"),
        "plugins:\n  twin:\n    file: twin.py\n",
    )
    .unwrap();
    env.ok(&["apply", "-f", "plugins.yaml"]);
    let p = env.ok(&["-o", "json", "plugin", "show", "twin"]).json();
    assert_eq!(p["lang"], "python", "{p}");

    // No interpreter: a usage error that says where to get one.
    let r = Command::new(env!("CARGO_BIN_EXE_cog"))
        .args(["plugin", "run", HEADERS_PY, "--request", "req.json"])
        .current_dir(env.dir.path())
        .env("COG_STORE", &env.store)
        .env("COG_PYTHON_WASI", env.path("nowhere"))
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("COG_PYTHON_WASI"));
}

fn apply_diff_cycle(env: &Env) {
    std::fs::copy(HEADERS_WASM, env.path("headers.wasm")).unwrap();
    let spec = "\
plans:
  free:
    limits: [{name: rps, rate: 10, window: 1s, burst: 20}]
  pro:
    limits: [{name: rps, rate: 200, window: 1s, burst: 400}]
tenants:
  demo: {plan: free, display_name: Demo}
  bigco: {plan: pro}
plugins:
  headers:
    file: headers.wasm
    attach: {plans: [pro]}
    config: 'response add x-plan: pro'
";
    std::fs::write(env.path("cog.yaml"), spec).unwrap();
    let r = env.ok(&["apply", "-f", "cog.yaml", "--dry-run"]);
    assert_eq!(
        r.stdout,
        "+ plan free\n+ plan pro\n+ tenant bigco\n+ tenant demo\n+ plugin headers\n"
    );
    assert_eq!(
        env.ok(&["-o", "json", "plan", "list"]).json(),
        Value::Array(vec![]),
        "dry run wrote"
    );
    let applied = env.ok(&["-o", "json", "apply", "-f", "cog.yaml"]).json();
    assert_eq!(applied["applied"], true);
    assert_eq!(applied["changes"].as_array().unwrap().len(), 5);
    let r = env.run(&["diff", "-f", "cog.yaml"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    // Edit: diff says so (exit 1) until applied.
    std::fs::write(env.path("cog.yaml"), spec.replace("rate: 200", "rate: 300")).unwrap();
    let r = env.run(&["diff", "-f", "cog.yaml"]);
    assert_eq!((r.code, r.stdout.as_str()), (1, "~ plan pro\n"));
    let r = env.run(&["-o", "json", "diff", "-f", "cog.yaml"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.json()["changes"][0]["action"], "update");
    env.ok(&["apply", "-f", "cog.yaml"]);
    assert_eq!(env.run(&["diff", "-f", "cog.yaml"]).code, 0);

    // Export round-trips through apply, from standard input too.
    let exported = env.ok(&["export"]).stdout;
    let r = env.run_with(&["diff", "-f", "-"], Some(&exported));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let toml = env.ok(&["export", "--format", "toml"]).stdout;
    std::fs::write(env.path("cog.toml"), toml).unwrap();
    assert_eq!(env.run(&["diff", "-f", "cog.toml"]).code, 0);

    // Prune: what the file does not list goes, after confirmation.
    std::fs::write(env.path("small.yaml"), "plans:\n  free: {limits: [{name: rps, rate: 10, window: 1s, burst: 20}]}\ntenants:\n  demo: {plan: free, display_name: Demo}\n").unwrap();
    assert_eq!(env.run(&["diff", "-f", "small.yaml"]).code, 0);
    let r = env.run(&["diff", "-f", "small.yaml", "--prune"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (1, "- plan pro\n- tenant bigco\n- plugin headers\n")
    );
    assert_eq!(env.run(&["apply", "-f", "small.yaml", "--prune"]).code, 5);
    env.ok(&["apply", "-f", "small.yaml", "--prune", "--yes"]);
    assert_eq!(env.run(&["diff", "-f", "small.yaml", "--prune"]).code, 0);

    // Broken documents: the field's path, exit 2, nothing written.
    std::fs::write(
        env.path("bad.yaml"),
        "plans:\n  free: {limits: [{name: rps, rate: 10, window: 1s, bursty: 2}]}\n",
    )
    .unwrap();
    let r = env.run(&["apply", "-f", "bad.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("plans.free.limits[0]") && r.stderr.contains("bursty"),
        "{}",
        r.stderr
    );
    let r = env.run(&["diff", "-f", "missing.yaml"]);
    assert_eq!(r.code, 2);
}

#[test]
fn apply_diff_edit_diff_apply_on_the_file_store() {
    apply_diff_cycle(&Env::file());
}

#[test]
fn apply_diff_edit_diff_apply_on_redis() {
    let server = cog_testkit::RedisServer::start().unwrap();
    apply_diff_cycle(&Env::redis(&server));
}

/// `cog serve` names its store on its first line (what a supervisor
/// logs): never with the store's password.
#[test]
fn serve_does_not_print_the_stores_password() {
    let server = cog_testkit::RedisServer::start().unwrap();
    server
        .command(&["CONFIG", "SET", "requirepass", "s3cret"])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("redis://:s3cret@127.0.0.1:{}", server.port());
    let (mut child, line) = serve_line(&store, dir.path(), &[]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("listening on http://"), "{line}");
    assert!(
        line.contains(&format!("127.0.0.1:{}", server.port())),
        "{line}"
    );
    assert!(!line.contains("s3cret"), "{line}");
}

/// A Redis URL whose password holds a character URLs need encoded (`/`,
/// `#`, `?`) parses as no URL; the error that says so names the URL with
/// its password hidden all the same. Before, the password was shown.
#[test]
fn a_url_that_does_not_parse_does_not_show_its_password() {
    let env = Env::file();
    for limiter in [
        "redis://:pa/s3cret@127.0.0.1:1",
        "redis://app:pa#s3cret@127.0.0.1:1",
    ] {
        let run = env.run(&["serve", "--limiter", limiter]);
        assert_eq!(run.code, 4, "{}", run.stderr);
        assert!(run.stderr.contains("127.0.0.1:1"), "{}", run.stderr);
        assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);
    }
}

#[test]
fn apply_diff_edit_diff_apply_through_the_admin_api() {
    apply_diff_cycle(&Env::file().served());
}

/// `--server` is `--store` through the admin API: the same script of
/// verbs gives the same output and exit codes either way.
#[test]
fn the_server_backend_answers_as_the_store_does() {
    let direct = Env::file();
    let remote = Env::file().served();
    std::fs::copy(HEADERS_WASM, direct.path("headers.wasm")).unwrap();
    std::fs::copy(HEADERS_WASM, remote.path("headers.wasm")).unwrap();
    let script: &[&[&str]] = &[
        &[
            "plan",
            "create",
            "free",
            "--limit",
            "rps=10/1s,burst=20",
            "--quota",
            "daily=10000/1d",
        ],
        &[
            "plan",
            "create",
            "pro",
            "--limit",
            "rps=200/1s,burst=400",
            "--plugin-fuel",
            "5000000",
        ],
        &[
            "tenant",
            "create",
            "acme",
            "--plan",
            "free",
            "--name",
            "Acme Inc",
            "--meta",
            "region=eu",
        ],
        &["tenant", "create", "globex", "--plan", "pro"],
        &[
            "plan",
            "update",
            "free",
            "--limit",
            "rps=20/1s",
            "--cache-budget",
            "4096",
        ],
        &[
            "tenant",
            "update",
            "acme",
            "--override",
            "rps=5/1s",
            "--meta",
            "tier=gold",
        ],
        &["tenant", "set-plan", "globex", "free"],
        &["tenant", "suspend", "acme"],
        &["tenant", "resume", "acme"],
        &[
            "plugin",
            "install",
            "headers.wasm",
            "--plan",
            "pro",
            "--config",
            "x=1",
            "--version",
            "1",
        ],
        &[
            "plugin",
            "update",
            "headers",
            "--tenant",
            "acme",
            "--version",
            "2",
            "--on-error",
            "fail",
        ],
        &["plugin", "update", "headers", "--detach", "plan:pro"],
        &["plugin", "disable", "headers"],
        &["plugin", "enable", "headers"],
        &["-o", "json", "plan", "list"],
        &["plan", "show", "free"],
        &["-o", "json", "tenant", "list"],
        &["tenant", "show", "acme"],
        &["-o", "json", "plugin", "list"],
        &["plugin", "show", "headers"],
        &["export"],
        // Placement: no table yet, then two deployments and two moves.
        &["placement", "show"],
        &["placement", "move", "3", "main"],
        &["placement", "add", "main"],
        &["placement", "add", "big"],
        &["placement", "add", "big"],
        &["placement", "add", "not a name"],
        &["placement", "move", "130", "big"],
        &["placement", "move", "131", "big"],
        &["placement", "move", "1", "nowhere"],
        &["placement", "move", "256", "big"],
        &["placement", "show"],
        &["-o", "json", "placement", "show"],
        &["placement", "show", "--tenant", "acme"],
        // Failures: the same exit codes.
        &["plan", "show", "gold"],
        &["tenant", "create", "acme", "--plan", "free"],
        &["tenant", "create", "x", "--plan", "gold"],
        &["--yes", "plan", "delete", "free"],
        &["plan", "create", "bad", "--limit", "rps=0/1s"],
        &["tenant", "update", "nobody", "--name", "N"],
        &["key", "create", "--tenant", "nobody"],
        &["--yes", "key", "revoke", "nokey"],
        &["plugin", "enable", "nothing"],
        &["plan", "delete", "pro"],
        &["--yes", "plugin", "delete", "headers"],
        &["--yes", "tenant", "delete", "globex"],
        &["--yes", "plan", "delete", "pro"],
        &["-o", "json", "plan", "list"],
    ];
    for args in script {
        let (a, b) = (direct.run(args), remote.run(args));
        assert_eq!(
            (a.code, unrevisioned(&a.stdout)),
            (b.code, unrevisioned(&b.stdout)),
            "cog {args:?}\n--store: {}\n--server: {}",
            a.stderr,
            b.stderr
        );
        if a.code == 0 {
            // Progress lines say how long a step took, and placement
            // revisions are times: those may differ.
            assert_eq!(
                untimed(&unrevisioned(&a.stderr)),
                untimed(&unrevisioned(&b.stderr)),
                "cog {args:?}"
            );
        }
    }

    let shown = direct.ok(&["placement", "show"]).stdout;
    // Four changes: a revision of at least 4 (the time in ms, in fact).
    let revision: u64 = shown
        .strip_prefix("placement revision ")
        .and_then(|r| r.lines().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(revision >= 4, "{shown}");
    assert!(
        shown.contains("main        254    0-129, 132-255"),
        "{shown}"
    );
    assert!(shown.contains("big         2      130-131"), "{shown}");
    let acme = direct
        .ok(&["-o", "json", "placement", "show", "--tenant", "acme"])
        .json();
    assert_eq!(acme["partition"], 0x82); // 130: moved above
    assert_eq!(acme["deployment"], "big");
    for (args, code) in [
        (&["placement", "show"][..], 0),
        (&["placement", "add", "big"], 3),
        (&["placement", "move", "1", "nowhere"], 3),
        (&["placement", "add", "not a name"], 2),
        (&["placement", "move", "256", "big"], 2),
    ] {
        assert_eq!(direct.run(args).code, code, "cog {args:?}");
    }

    // Keys: shown once, listed the same way.
    for env in [&direct, &remote] {
        let k = env
            .ok(&[
                "-o",
                "json",
                "key",
                "create",
                "--tenant",
                "acme",
                "--expires",
                "30d",
            ])
            .json();
        assert!(k["key"].as_str().unwrap().starts_with("cog_"));
        let listed = env
            .ok(&["-o", "json", "key", "list", "--tenant", "acme"])
            .json();
        assert_eq!(listed[0]["id"], k["id"]);
        assert_eq!(listed[0]["status"], "active");
        assert!(listed[0]["expires"].as_u64().is_some());
        env.ok(&["--yes", "key", "revoke", k["id"].as_str().unwrap()]);
        let shown = env
            .ok(&["-o", "json", "key", "show", k["id"].as_str().unwrap()])
            .json();
        assert_eq!(shown["status"], "revoked");
    }

    // Writes through the API are audited as its token, not as `cli`.
    let audit = remote.ok(&["-o", "json", "audit"]).json();
    let actors: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors[0], "cli", "the token itself");
    assert!(
        actors[1..].iter().all(|a| a.starts_with("token:")),
        "{actors:?}"
    );

    // What only the store can do, and what the server refuses.
    let r = remote.run(&["token", "list"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--store"), "{}", r.stderr);
    let served = remote.served.as_ref().unwrap();
    let run_as = |token: &str, args: &[&str]| {
        let s = Served {
            child: None,
            url: served.url.clone(),
            token: token.to_owned(),
        };
        cog_via(&remote.store, Some(&s), remote.dir.path(), args, None)
    };
    let r = run_as("cogadm_not_a_token", &["plan", "list"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("COG_TOKEN"), "{}", r.stderr);
    let read = cog_in(
        &remote.store,
        remote.dir.path(),
        &["-o", "json", "token", "create", "--name", "ro"],
        None,
    )
    .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(run_as(&read, &["plan", "list"]).code, 0);
    let r = run_as(&read, &["plan", "create", "x"]);
    assert_eq!(r.code, 2, "a read token cannot write: {}", r.stderr);
    let r = cog_via(
        &remote.store,
        None,
        remote.dir.path(),
        &["--server", "https://127.0.0.1:1", "plan", "list"],
        None,
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = cog_via(
        &remote.store,
        None,
        remote.dir.path(),
        &["--server", &served.url, "plan", "list"],
        None,
    );
    assert_eq!(r.code, 2, "no COG_TOKEN: {}", r.stderr);

    // A server that is gone: the store failed, exit 4.
    let gone = Served {
        child: None,
        url: served.url.clone(),
        token: "cogadm_x".into(),
    };
    drop(remote);
    let dir = tempfile::tempdir().unwrap();
    let r = cog_via(
        "file:unused.json",
        Some(&gone),
        dir.path(),
        &["plan", "list"],
        None,
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("cannot be reached"), "{}", r.stderr);
}

#[test]
fn directories_of_documents_are_merged() {
    let env = Env::file();
    std::fs::create_dir(env.path("conf")).unwrap();
    std::fs::write(
        env.path("conf/plans.yaml"),
        "plans:\n  free: {limits: [{name: rps, rate: 1, window: 1s}]}\n",
    )
    .unwrap();
    std::fs::write(
        env.path("conf/tenants.toml"),
        "[tenants.acme]\nplan = \"free\"\n",
    )
    .unwrap();
    env.ok(&["apply", "-f", "conf"]);
    assert_eq!(
        env.ok(&["-o", "json", "tenant", "show", "acme"]).json()["plan"],
        "free"
    );
    std::fs::write(
        env.path("conf/again.json"),
        r#"{"tenants": {"acme": {"plan": "free"}}}"#,
    )
    .unwrap();
    let r = env.run(&["apply", "-f", "conf"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("defined twice"), "{}", r.stderr);
}

/// Writers killed at random moments (SIGKILL) never leave a torn file:
/// every read after every kill parses, and holds a whole number of
/// updates.
#[test]
fn a_killed_writer_never_leaves_a_corrupt_file() {
    let env = Env::file();
    // A large document, so each write takes a while.
    let mut spec =
        String::from("plans:\n  free: {limits: [{name: rps, rate: 1, window: 1s}]}\ntenants:\n");
    for i in 0..3000 {
        spec.push_str(&format!(
            "  t{i}: {{plan: free, display_name: 'tenant number {i}'}}\n"
        ));
    }
    std::fs::write(env.path("big.yaml"), spec).unwrap();
    env.ok(&["apply", "-f", "big.yaml"]);
    // How long one writer runs on this machine: kills land inside that.
    let timed = std::time::Instant::now();
    env.ok(&["tenant", "update", "t1", "--name", "timing"]);
    let run_us = (timed.elapsed().as_micros() as u64).max(1_000);
    let mut seed = 0x9e37_79b9_u64;
    let mut killed = 0;
    for round in 0..40 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cog"))
            .args([
                "tenant",
                "update",
                "t1",
                "--name",
                &format!("round {round}"),
            ])
            .current_dir(env.dir.path())
            .env("COG_STORE", &env.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Kill anywhere in the run, the write included.
        std::thread::sleep(Duration::from_micros(seed % (run_us * 9 / 10)));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        let t = env.ok(&["-o", "json", "tenant", "show", "t1"]).json();
        let name = t["display_name"].as_str().unwrap().to_owned();
        assert!(name == "timing" || name.starts_with("round "), "{name}");
        assert_eq!(
            env.ok(&["-o", "json", "tenant", "list"])
                .json()
                .as_array()
                .unwrap()
                .len(),
            3000
        );
    }
    eprintln!("{killed} of 40 writers killed while running");
    // The test is about writers killed mid-run: most of them must be.
    assert!(
        killed >= 20,
        "only {killed} of 40 writers were still running"
    );
    // The next write clears what killed writers left behind.
    env.ok(&["tenant", "update", "t2", "--name", "last"]);
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Changes made with the CLI reach a running authenticator and limiter
/// (over Redis) without a restart: new plan limits, a suspended tenant, a
/// revoked key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_changes_take_effect_in_a_running_service() {
    use cog_control::Directory;
    use cog_control::auth::AuthenticateLayer;
    use cog_control::store::RedisStore;
    use http::{Request, Response, StatusCode};
    use tower::{ServiceBuilder, ServiceExt};

    let server = cog_testkit::RedisServer::start().unwrap();
    let env = Env::redis(&server);
    env.ok(&["plan", "create", "free", "--limit", "rpm=2/1m"]);
    env.ok(&["tenant", "create", "acme", "--plan", "free"]);
    let key = env
        .ok(&["-o", "json", "key", "create", "--tenant", "acme"])
        .json();
    let (id, secret) = (
        key["id"].as_str().unwrap().to_owned(),
        key["key"].as_str().unwrap().to_owned(),
    );

    // The service polls only hourly: what it sees comes from invalidation.
    let store = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let d = Directory::start_with(store, Duration::from_secs(3600))
        .await
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(AuthenticateLayer::new(d.clone()))
        .layer(cog_ratelimit::RateLimitLayer::new(
            cog_ratelimit::store::MemoryStore::new(),
            Directory::tenant_key(),
            d.clone(),
        ))
        .service(tower::service_fn(|_: Request<String>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        }));
    let call = |key: String| {
        let svc = svc.clone();
        async move {
            let req = Request::get("/")
                .header("authorization", format!("Bearer {key}"))
                .body(String::new())
                .unwrap();
            svc.oneshot(req).await.unwrap().status()
        }
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(call(secret.clone()).await, StatusCode::OK);
    assert_eq!(call(secret.clone()).await, StatusCode::OK);
    assert_eq!(call(secret.clone()).await, StatusCode::TOO_MANY_REQUESTS);

    let wait_for = |want: StatusCode| {
        let call = &call;
        let secret = secret.clone();
        async move {
            for _ in 0..100 {
                if call(secret.clone()).await == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("still not {want} after 5 s");
        }
    };
    let env2 = Env {
        dir: tempfile::tempdir().unwrap(),
        store: env.store.clone(),
        served: None,
    };
    let run = |args: &'static [&'static str]| {
        let store = env2.store.clone();
        let dir = env2.dir.path().to_owned();
        async move {
            tokio::task::spawn_blocking(move || cog_in(&store, &dir, args, None))
                .await
                .unwrap()
        }
    };
    assert_eq!(
        run(&["plan", "update", "free", "--limit", "rpm=1000/1m"])
            .await
            .code,
        0
    );
    wait_for(StatusCode::OK).await;
    assert_eq!(run(&["tenant", "suspend", "acme", "--yes"]).await.code, 0);
    wait_for(StatusCode::FORBIDDEN).await;
    assert_eq!(run(&["tenant", "resume", "acme"]).await.code, 0);
    wait_for(StatusCode::OK).await;
    let store = env2.store.clone();
    let dir = env2.dir.path().to_owned();
    let r = tokio::task::spawn_blocking(move || {
        cog_in(&store, &dir, &["key", "revoke", &id, "--yes"], None)
    })
    .await
    .unwrap();
    assert_eq!(r.code, 0, "{}", r.stderr);
    wait_for(StatusCode::UNAUTHORIZED).await;
}

/// A tenant's limit override, set with the CLI, reaches the running
/// limiter (over Redis), and `cog usage` reports what requests consumed —
/// before and after the override, and after it is cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_and_usage_reach_a_running_limiter() {
    use cog_control::Directory;
    use cog_control::auth::AuthenticateLayer;
    use cog_control::store::RedisStore;
    use http::{Request, Response, StatusCode};
    use tower::{ServiceBuilder, ServiceExt};

    let server = cog_testkit::RedisServer::start().unwrap();
    let env = Arc::new(Env::redis(&server));
    env.ok(&[
        "plan",
        "create",
        "free",
        "--limit",
        "rpm=3/1m",
        "--quota",
        "daily=100/1d",
    ]);
    env.ok(&["tenant", "create", "acme", "--plan", "free"]);
    let secret = env
        .ok(&["-o", "json", "key", "create", "--tenant", "acme"])
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let store = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let d = Directory::start_with(store, Duration::from_secs(3600))
        .await
        .unwrap();
    let limiter = cog_ratelimit::store::RedisStore::new(
        cog_ratelimit::store::connect(&server.url()).await.unwrap(),
    );
    let svc = ServiceBuilder::new()
        .layer(AuthenticateLayer::new(d.clone()))
        .layer(cog_ratelimit::RateLimitLayer::new(
            limiter,
            Directory::tenant_key(),
            d.clone(),
        ))
        .service(tower::service_fn(|_: Request<String>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        }));
    let call = || {
        let (svc, secret) = (svc.clone(), secret.clone());
        async move {
            let req = Request::get("/")
                .header("authorization", format!("Bearer {secret}"))
                .body(String::new())
                .unwrap();
            svc.oneshot(req).await.unwrap().status()
        }
    };
    let cli = |args: &'static [&'static str]| {
        let env = env.clone();
        async move {
            tokio::task::spawn_blocking(move || env.run(args))
                .await
                .unwrap()
        }
    };
    let usage = || async {
        let r = cli(&["-o", "json", "usage", "acme"]).await;
        assert_eq!(r.code, 0, "{}", r.stderr);
        let u = r.json();
        (
            u[0]["remaining"].as_u64().unwrap(),
            u[1]["remaining"].as_u64().unwrap(),
        )
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(usage().await, (3, 100), "fresh");
    assert_eq!(call().await, StatusCode::OK);
    assert_eq!(call().await, StatusCode::OK);
    assert_eq!(usage().await, (1, 98), "two requests consumed");
    assert_eq!(call().await, StatusCode::OK);
    assert_eq!(call().await, StatusCode::TOO_MANY_REQUESTS);

    let wait_for = |want: StatusCode| async move {
        for _ in 0..100 {
            if call().await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("still not {want} after 5 s");
    };
    let r = cli(&["tenant", "update", "acme", "--override", "rpm=1000/1m"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    wait_for(StatusCode::OK).await;
    for _ in 0..5 {
        assert_eq!(call().await, StatusCode::OK, "past the plan's 3/min");
    }
    let (rpm, _) = usage().await;
    assert!(rpm > 900 && rpm < 1000, "the override's budget: {rpm}");
    let r = cli(&["tenant", "update", "acme", "--clear-override", "rpm"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    wait_for(StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(usage().await.0, 0, "back on the plan's limit");
}

#[test]
fn expired_keys_are_reported_as_expired() {
    let env = Env::file();
    env.ok(&["plan", "create", "free", "--limit", "rpm=3/1m"]);
    env.ok(&["tenant", "create", "acme", "--plan", "free"]);
    let short = env
        .ok(&[
            "-o",
            "json",
            "key",
            "create",
            "--tenant",
            "acme",
            "--expires",
            "1s",
        ])
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let long = env
        .ok(&["-o", "json", "key", "create", "--tenant", "acme"])
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Expiry is in whole seconds.
    std::thread::sleep(Duration::from_millis(2100));
    let status = |id: &str| {
        let listed = env.ok(&["-o", "json", "key", "list"]).json();
        let row = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .unwrap()
            .clone();
        let shown = env.ok(&["-o", "json", "key", "show", id]).json();
        assert_eq!(row["status"], shown["status"]);
        row["status"].as_str().unwrap().to_owned()
    };
    assert_eq!(status(&short), "expired");
    assert_eq!(status(&long), "active");
    let table = env.ok(&["key", "show", &short]).stdout;
    assert!(table.contains("expired"), "{table}");
    // The tenant counts only keys that authenticate.
    let tenants = env.ok(&["-o", "json", "tenant", "list"]).json();
    assert_eq!(tenants[0]["keys"], 1, "{tenants}");
}

#[test]
fn usage_shows_the_remaining_budget_from_redis() {
    let server = cog_testkit::RedisServer::start().unwrap();
    let env = Env::redis(&server);
    env.ok(&[
        "plan",
        "create",
        "free",
        "--limit",
        "rpm=5/1m",
        "--quota",
        "daily=100/1d",
    ]);
    env.ok(&["tenant", "create", "acme", "--plan", "free"]);
    let u = env.ok(&["-o", "json", "usage", "acme"]).json();
    assert_eq!(u[0]["name"], "rpm");
    assert_eq!(u[0]["remaining"], 5);
    assert_eq!(u[1]["name"], "daily");
    assert_eq!(u[1]["remaining"], 100);
    let r = Env::file().run(&["usage", "acme"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--limiter"), "{}", r.stderr);
}

/// One HTTP/1.1 request over a fresh connection: the status and body.
fn http(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    (status, body)
}

#[test]
fn tokens_serve_and_audit() {
    let env = Env::file();
    seed(&env);
    let write = env
        .ok(&[
            "token", "create", "--name", "billing", "--scope", "write", "-o", "json",
        ])
        .json();
    let secret = write["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("cogadm_"));
    let read = env
        .ok(&["token", "create", "--name", "dashboard", "-o", "json"])
        .json();
    assert_eq!(read["scope"], "read");
    // Listed without the secret.
    let list = env.ok(&["token", "list", "-o", "json"]);
    assert!(!list.stdout.contains(&secret));
    assert_eq!(list.json().as_array().unwrap().len(), 2);

    let (mut server, addr) = serve(&env.store, env.dir.path(), &[]);
    let (status, body) = http(&addr, "GET", "/v1/tenants/acme", &secret, "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"plan\":\"free\""), "{body}");
    let (status, _) = http(
        &addr,
        "POST",
        "/v1/tenants/acme/suspend",
        read["token"].as_str().unwrap(),
        "",
    );
    assert_eq!(status, 403);
    let (status, body) = http(&addr, "POST", "/v1/tenants/acme/suspend", &secret, "");
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(&addr, "GET", "/v1/plans", "cogadm_nope", "");
    assert_eq!(status, 401);
    let (status, body) = http(&addr, "GET", "/openapi.json", "", "");
    assert_eq!(status, 200);
    assert!(body.contains("\"openapi\":\"3.1.0\"") || body.contains("\"openapi\": \"3.1.0\""));
    // Revoked: refused at once.
    env.ok(&["--yes", "token", "revoke", write["id"].as_str().unwrap()]);
    let (status, _) = http(&addr, "GET", "/v1/plans", &secret, "");
    assert_eq!(status, 401);
    // SIGTERM (what systemd and Kubernetes send) stops it gracefully:
    // exit 0, not killed by the signal — and its stderr, which nobody
    // reads any more, is no reason to fail.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let exit = loop {
        if let Some(exit) = server.try_wait().unwrap() {
            break exit;
        }
        if started.elapsed() > std::time::Duration::from_secs(10) {
            let _ = server.kill();
            panic!("cog serve did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");

    // The CLI's and the API's writes, in order, with who made them.
    let audit = env.ok(&["audit", "-o", "json"]).json();
    let rows: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    let token_actor = format!("token:{}", write["id"].as_str().unwrap());
    assert_eq!(
        rows[rows.len() - 4..],
        [
            ("cli".to_owned(), "token.create".to_owned()),
            ("cli".to_owned(), "token.create".to_owned()),
            (token_actor, "tenant.suspend".to_owned()),
            ("cli".to_owned(), "token.revoke".to_owned()),
        ]
    );
    let table = env.ok(&["audit", "--last", "1"]);
    assert!(table.stdout.contains("token.revoke"), "{}", table.stdout);
    assert!(!table.stdout.contains("tenant.suspend"), "{}", table.stdout);
}

/// `text` with every "done in 0.2 s" made "done in _ s".
fn untimed(text: &str) -> String {
    unnumbered(text, "done in ")
}

/// `text` with placement revisions hidden: two stores number their tables
/// by the time (ms) of each change.
fn unrevisioned(text: &str) -> String {
    ["placement revision ", "\"revision\": ", "revision:   "]
        .iter()
        .fold(text.to_owned(), |t, marker| unnumbered(&t, marker))
}

/// `text` with the number after each `marker` replaced by `_`.
fn unnumbered(text: &str, marker: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(marker) {
        let (head, tail) = rest.split_at(i + marker.len());
        out.push_str(head);
        let digits = tail
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(tail.len());
        out.push('_');
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

#[test]
fn untimed_hides_durations_only() {
    assert_eq!(
        untimed("checking done in 0.25 s\nplugin x installed\n"),
        "checking done in _ s\nplugin x installed\n"
    );
    assert_eq!(untimed("nothing timed"), "nothing timed");
    assert_eq!(
        unrevisioned("x (placement revision 1765015098123)\n{\"revision\": 17, \"a\": 2}"),
        "x (placement revision _)\n{\"revision\": _, \"a\": 2}"
    );
}

/// Stored text reaches a terminal escaped. A tenant's name or metadata is
/// typed by whoever onboarded it (an API call, a signup form); an escape
/// sequence in it must not retitle the window, clear the screen or hide
/// lines of the operator's terminal. JSON output keeps the text as stored
/// (JSON escapes it itself).
#[test]
fn stored_text_cannot_drive_the_terminal() {
    let env = Env::file();
    env.ok(&["plan", "create", "free", "--limit", "rpm=2/1m"]);
    let evil = "Acme\u{1b}]0;pwned\u{7}\u{1b}[2J\r\u{9b}";
    env.ok(&[
        "tenant",
        "create",
        "acme",
        "--plan",
        "free",
        "--name",
        evil,
        "--meta",
        &format!("note={evil}"),
    ]);
    for args in [&["tenant", "show", "acme"][..], &["tenant", "list"]] {
        let r = env.ok(args);
        assert!(
            !r.stdout.contains(['\u{1b}', '\u{7}', '\r', '\u{9b}']),
            "{args:?}: {:?}",
            r.stdout
        );
        assert!(
            r.stdout
                .contains(r"Acme\u{1b}]0;pwned\u{7}\u{1b}[2J\r\u{9b}"),
            "{args:?}: {}",
            r.stdout
        );
    }
    // Only control characters are escaped: other text shows as it is.
    let plain = "Zürich \"Ltd\" \\ 東京";
    env.ok(&[
        "tenant", "create", "zurich", "--plan", "free", "--name", plain,
    ]);
    let r = env.ok(&["tenant", "list"]);
    assert!(r.stdout.contains(plain), "{}", r.stdout);
    // Errors quote what they were given, escaped too.
    let r = env.run(&["tenant", "show", "x\u{1b}[2J"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        !r.stderr.contains('\u{1b}') && r.stderr.contains(r"x\u{1b}[2J"),
        "{:?}",
        r.stderr
    );
    let json = env.ok(&["-o", "json", "tenant", "show", "acme"]).json();
    assert_eq!(json["display_name"], evil);
    assert_eq!(json["metadata"]["note"], evil);
}

/// Deleting a tenant or a plugin clears what plugins stored for it first:
/// by default in the store's Redis, else where `--plugin-data` says (one
/// URL, or every deployment); when that Redis cannot be reached, nothing
/// is deleted; `none` clears nothing.
#[test]
fn deleting_clears_the_plugin_data_first() {
    let (store, other) = (
        cog_testkit::RedisServer::start().unwrap(),
        cog_testkit::RedisServer::start().unwrap(),
    );
    let env = Env::redis(&store);
    env.ok(&["plan", "create", "free", "--limit", "rps=10/1s"]);
    for t in ["acme", "globex", "initech"] {
        env.ok(&["tenant", "create", t, "--plan", "free"]);
    }
    env.ok(&["plugin", "install", HEADERS_WASM, "--plan", "free"]);
    let hash = |t: &str| format!("cog:plugin-kv:{{{t}}}:headers");
    for server in [&store, &other] {
        for t in ["acme", "globex", "initech"] {
            server.command(&["HSET", &hash(t), "k", "v"]).unwrap();
        }
    }
    let held = |server: &cog_testkit::RedisServer, t: &str| {
        server.command(&["EXISTS", &hash(t)]).unwrap() == cog_testkit::Reply::Int(1)
    };

    env.ok(&["tenant", "delete", "acme", "--yes"]);
    assert!(!held(&store, "acme") && held(&other, "acme"));
    assert!(held(&store, "globex"));

    let r = env.run(&[
        "--plugin-data",
        "redis://127.0.0.1:1",
        "tenant",
        "delete",
        "globex",
        "--yes",
    ]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("plugin data"), "{}", r.stderr);
    env.ok(&["tenant", "show", "globex"]);

    env.ok(&[
        "--plugin-data",
        "none",
        "tenant",
        "delete",
        "globex",
        "--yes",
    ]);
    assert!(held(&store, "globex"));

    let both = format!("main={},big={}", store.url(), other.url());
    env.ok(&[
        "--plugin-data",
        &both,
        "plugin",
        "delete",
        "headers",
        "--yes",
    ]);
    for server in [&store, &other] {
        assert!(!held(server, "initech"));
    }

    // Through the admin API of `cog serve`, as directly.
    env.ok(&["plugin", "install", HEADERS_WASM, "--plan", "free"]);
    env.ok(&["tenant", "create", "hooli", "--plan", "free"]);
    store.command(&["HSET", &hash("hooli"), "k", "v"]).unwrap();
    let served = Env::redis(&store).served();
    served.ok(&["tenant", "delete", "hooli", "--yes"]);
    assert!(!held(&store, "hooli"));
}

/// Only deleting commands reach for the plugin data: others work with it
/// unreachable. A file store has no default place for it: its deletes
/// clear nothing and need nothing.
#[test]
fn only_deletes_reach_for_the_plugin_data() {
    let env = Env::file();
    env.ok(&["plan", "create", "free", "--limit", "rps=10/1s"]);
    let away = ["--plugin-data", "redis://127.0.0.1:1"];
    env.ok(&[&away[..], &["tenant", "create", "acme", "--plan", "free"]].concat());
    env.ok(&[&away[..], &["tenant", "list"]].concat());
    let r = env.run(&[&away[..], &["tenant", "delete", "acme", "--yes"]].concat());
    assert_eq!(r.code, 4, "{}", r.stderr);
    env.ok(&["tenant", "delete", "acme", "--yes"]);
}

/// `placement move` with the deployments' plugin data copies each scope of
/// the partition to its new deployment at once.
#[test]
fn a_move_copies_the_plugin_data_ahead() {
    let (main, big) = (
        cog_testkit::RedisServer::start().unwrap(),
        cog_testkit::RedisServer::start().unwrap(),
    );
    let env = Env::redis(&main);
    env.ok(&["placement", "add", "main"]);
    env.ok(&["placement", "add", "big"]);
    env.ok(&["plan", "create", "free", "--limit", "rps=10/1s"]);
    env.ok(&["tenant", "create", "acme", "--plan", "free"]);
    env.ok(&["plugin", "install", HEADERS_WASM, "--plan", "free"]);
    let hash = "cog:plugin-kv:{acme}:headers";
    main.command(&["HSET", hash, "k", "v"]).unwrap();
    let shown = env.ok(&["-o", "json", "placement", "show", "--tenant", "acme"]);
    let partition = shown.json()["partition"].to_string();
    let both = format!("main={},big={}", main.url(), big.url());
    env.ok(&[
        "--plugin-data",
        &both,
        "placement",
        "move",
        &partition,
        "big",
    ]);
    assert_eq!(
        big.command(&["HGET", hash, "k"]).unwrap(),
        cog_testkit::Reply::Bulk(Some(b"v".to_vec()))
    );
}
