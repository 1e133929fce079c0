"""Rejects requests from blocked callers, per tenant. The caller is the value
of a header (configuration: the header name, default ``x-user-id``); a caller
is blocked when the plugin's KV store holds ``block:<value>`` for the
request's tenant — so each tenant keeps its own list, and one tenant's
entries never block another's callers. The entry's value, if any, is the
reason sent back with the 403. The Python twin of
``examples/plugins/blocklist``.
"""

import cog


def on_request(req):
    header = cog.config().decode("utf-8", "replace").strip() or "x-user-id"
    caller = req.headers.get(header)
    if caller is None:
        return
    reason = cog.kv.get(b"block:" + caller.encode("latin-1"))
    if reason is not None:
        cog.log(f"blocked caller {caller}")
        req.reject(403, reason or b"blocked")
