"""The cog host API for Python plugins.

A plugin is a file that defines ``on_request(req)`` and/or
``on_response(resp)``; each returns ``None``. Through ``req`` and ``resp``
it reads and changes the request or response; through this module it reads
its configuration, logs, and keeps data in its tenant's key-value store.
Nothing else is reachable: no host files, network, environment or
processes. See ``docs/plugin-abi.md`` for the semantics, which are those of
the Rust PDK.

    import cog

    def on_request(req):
        if req.headers.get("x-user-id") is None:
            req.reject(401, b"who are you?")
        req.headers["x-seen-by"] = "cog"
"""

import posix as _posix

__all__ = [
    "Error", "Invalid", "NotAllowed", "Unavailable",
    "Request", "Response", "Headers", "kv", "log", "config", "tenant",
]

_FD = 4
_OK, ABSENT, INVALID, NOT_ALLOWED, UNAVAILABLE = 0, -1, -2, -3, -4

(_LOG, _HEADER_GET, _HEADER_SET, _HEADER_REMOVE, _HEADER_NAMES, _METHOD, _URI,
 _TENANT, _STATUS, _BODY_READ, _BODY_WRITE, _REJECT, _CONFIG, _KV_GET, _KV_SET,
 _KV_DELETE) = range(1, 17)
_BEGIN, _READY, _SOURCE, _HOOKS, _FAIL = range(20, 25)
_FAIL_EXCEPTION, _FAIL_SCRIPT, _FAIL_MEMORY = 0, 1, 2


class Error(Exception):
    """A host call did not do what was asked."""


class Invalid(Error):
    """The host refused an argument: a header name or value that is not
    valid (CR, LF, NUL...), a status outside 400-599."""


class NotAllowed(Error):
    """Not available in this hook, a body the host did not read, or a
    protected header (content-length, transfer-encoding, host...)."""


class Unavailable(Error):
    """The key-value store could not answer in time."""


_ERRORS = {INVALID: Invalid, NOT_ALLOWED: NotAllowed, UNAVAILABLE: Unavailable}


def _int(n):
    return n.to_bytes(4, "little", signed=True)


def _bytes(value):
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"expected str or bytes, got {type(value).__name__}")


def _call(op, *fields):
    body = bytearray((op,))
    for field in fields[:-1]:
        body += len(field).to_bytes(4, "little")
        body += field
    if fields:
        body += fields[-1]
    _posix.write(_FD, len(body).to_bytes(4, "little") + body)
    head = _posix.read(_FD, 8 + 65536)
    code = int.from_bytes(head[:4], "little", signed=True)
    size = int.from_bytes(head[4:8], "little")
    data = head[8:]
    while len(data) < size:
        data += _posix.read(_FD, size - len(data))
    return code, data


def _check(code, what):
    if code < 0 and code != ABSENT:
        raise _ERRORS.get(code, Error)(f"{what}: host code {code}")
    return code


def _data(op, *fields, what):
    code, data = _call(op, *fields)
    if code == ABSENT:
        return None
    _check(code, what)
    return data


def log(message, level="info"):
    """Logs ``message`` (``error``, ``warn``, ``info`` or ``debug``); counts
    against the plugin's log limit. ``print`` logs at ``info`` too."""
    levels = {"error": 0, "warn": 1, "warning": 1, "info": 2, "debug": 3}
    _call(_LOG, _int(levels.get(level, 3)), _bytes(str(message)))


def config():
    """The plugin's configuration (bytes)."""
    return _data(_CONFIG, what="config")


def tenant():
    """The tenant the request belongs to."""
    return _data(_TENANT, what="tenant").decode("utf-8", "replace")


class Headers:
    """The request's or the response's headers, live: reading asks the host,
    writing changes the message. Values are ``str`` (bytes outside ASCII as
    Latin-1); setting takes ``str`` or ``bytes``."""

    __slots__ = ("_which",)

    def __init__(self, which):
        self._which = which

    def get(self, name, default=None):
        value = _data(_HEADER_GET, _int(self._which), _bytes(name), what=f"header {name!r}")
        return default if value is None else value.decode("latin-1")

    def __getitem__(self, name):
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name):
        return self.get(name) is not None

    def __setitem__(self, name, value):
        code, _ = _call(_HEADER_SET, _int(self._which), _bytes(name), _bytes(value))
        _check(code, f"set header {name!r}")

    def remove(self, name):
        """Removes ``name``; whether it was there."""
        code, _ = _call(_HEADER_REMOVE, _int(self._which), _bytes(name))
        return _check(code, f"remove header {name!r}") == _OK

    def __delitem__(self, name):
        if not self.remove(name):
            raise KeyError(name)

    def keys(self):
        names = _data(_HEADER_NAMES, _int(self._which), what="header names")
        return [n.decode("latin-1") for n in names.split(b"\n") if n]

    def __iter__(self):
        return iter(self.keys())

    def items(self):
        return [(n, self.get(n)) for n in self.keys()]

    def __repr__(self):
        return f"Headers({dict(self.items())!r})"


class _Message:
    __slots__ = ()

    @property
    def method(self):
        return _data(_METHOD, what="method").decode("latin-1")

    @property
    def uri(self):
        """Path and query."""
        return _data(_URI, what="uri").decode("latin-1")

    @property
    def tenant(self):
        return tenant()

    @property
    def body(self):
        """This hook's body (bytes), or ``None`` when the host did not read
        it for this plugin. Assigning replaces it."""
        code, data = _call(_BODY_READ)
        return None if code == NOT_ALLOWED else data

    @body.setter
    def body(self, value):
        code, _ = _call(_BODY_WRITE, _bytes(value))
        _check(code, "set body")

    def reject(self, status, body=b""):
        """Answers the request with ``status`` (400-599) and ``body`` instead
        of the service."""
        code, _ = _call(_REJECT, _int(int(status)), _bytes(body))
        _check(code, f"reject {status}")


class Request(_Message):
    """The request, in ``on_request``: its headers and body are writable."""

    __slots__ = ()
    headers = Headers(0)


class Response(_Message):
    """The response, in ``on_response``: its headers and body are writable;
    the request's headers are readable as ``request_headers``."""

    __slots__ = ()
    headers = Headers(1)
    request_headers = Headers(0)

    @property
    def status(self):
        code, _ = _call(_STATUS)
        return _check(code, "status")


class _Kv:
    """The plugin's key-value store, scoped by the host to the request's
    tenant and this plugin: no key reaches another tenant's data. Keys and
    values are ``bytes`` (``str`` is stored as UTF-8)."""

    __slots__ = ()

    def get(self, key):
        return _data(_KV_GET, _bytes(key), what="kv get")

    def set(self, key, value):
        code, _ = _call(_KV_SET, _bytes(key), _bytes(value))
        _check(code, "kv set")

    def delete(self, key):
        code, _ = _call(_KV_DELETE, _bytes(key))
        return _check(code, "kv delete") == _OK


kv = _Kv()

_plugin = {}
_hooks = [None, None]


def _fail(kind, text):
    _call(_FAIL, bytes((kind,)), _bytes(text)[:2048])


def _describe(e):
    where = ""
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "plugin.py":
            where = f" (plugin.py, line {tb.tb_lineno}, in {tb.tb_frame.f_code.co_name})"
        tb = tb.tb_next
    return f"{type(e).__name__}: {e}{where}"


def _load():
    source = _data(_SOURCE, what="source")
    namespace = {"__name__": "plugin", "__builtins__": __builtins__}
    try:
        code = compile(source, "plugin.py", "exec")
        exec(code, namespace)
    except MemoryError:
        _fail(_FAIL_MEMORY, "MemoryError")
        return
    except BaseException as e:
        _fail(_FAIL_SCRIPT, _describe(e))
        return
    hooks = [namespace.get("on_request"), namespace.get("on_response")]
    for name, hook in zip(("on_request", "on_response"), hooks):
        if hook is not None and not callable(hook):
            _fail(_FAIL_SCRIPT, f"{name} is a {type(hook).__name__}, not a function")
            return
    if hooks == [None, None]:
        _fail(_FAIL_SCRIPT, "the plugin defines neither on_request nor on_response")
        return
    _plugin.update(namespace)
    _hooks[:] = hooks
    _call(_HOOKS, _int((hooks[0] is not None) | (hooks[1] is not None) << 1))


_REQUEST, _RESPONSE = Request(), Response()


def _dispatch():
    try:
        mode = _data(_BEGIN, what="begin")[0]
        if mode == 1:
            _load()
            return
        name, hook, message = (
            ("on_request", _hooks[0], _REQUEST) if mode == 2
            else ("on_response", _hooks[1], _RESPONSE)
        )
        result = hook(message)
        if result is not None:
            _fail(_FAIL_EXCEPTION,
                  f"TypeError: {name} returned {type(result).__name__}; a hook returns None")
    except MemoryError:
        _fail(_FAIL_MEMORY, "MemoryError")
    except BaseException as e:
        try:
            _fail(_FAIL_EXCEPTION, _describe(e))
        except MemoryError:
            _fail(_FAIL_MEMORY, "MemoryError")
    finally:
        for stream in ("stdout", "stderr"):
            try:
                getattr(__import__("sys"), stream).flush()
            except BaseException:
                pass


def _ready():
    _call(_READY, id(_dispatch).to_bytes(4, "little"))
