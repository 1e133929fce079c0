"""Adds and strips headers, as its configuration says, one rule per line:

    request add x-served-by: edge-1
    request strip x-internal-
    response add x-powered-by: cog
    response strip server

``strip`` removes every header whose name starts with the prefix. The
Python twin of ``examples/plugins/headers``.
"""

import cog


def rules(config, phase):
    """The rules for ``phase`` (``request`` or ``response``); unknown lines
    are ignored."""
    out = []
    for line in config.splitlines():
        line = line.strip()
        if not line.startswith(phase):
            continue
        rest = line[len(phase):].lstrip()
        if rest.startswith("add "):
            name, colon, value = rest[4:].partition(":")
            if colon:
                out.append(("add", name.strip().lower(), value.strip()))
        elif rest.startswith("strip "):
            prefix = rest[6:].strip().lower()
            if prefix:
                out.append(("strip", prefix, None))
    return out


def apply(headers, phase):
    config = cog.config().decode("utf-8", "replace")
    for kind, name, value in rules(config, phase):
        if kind == "strip":
            for header in headers.keys():
                if header.startswith(name):
                    headers.remove(header)
        else:
            headers[name] = value


def on_request(req):
    apply(req.headers, "request")


def on_response(resp):
    apply(resp.headers, "response")
