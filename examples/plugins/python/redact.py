"""Redacts e-mail addresses and payment card numbers from JSON bodies (of
requests, responses, or both — whichever bodies the host reads for it): an
address becomes ``[email]``, a card number (13-19 digits, spaces or dashes
allowed between them, passing the Luhn check) ``[card]``. The replacements
contain no quote or backslash, so valid JSON stays valid. The Python twin of
``examples/plugins/redact``.
"""


def _digit(c):
    return 48 <= c <= 57


def _alnum(c):
    return _digit(c) or 65 <= c <= 90 or 97 <= c <= 122


def _local(c):
    return _alnum(c) or c in b"._%+-"


def _domain(c):
    return _alnum(c) or c in b".-"


def _email_at(s, at):
    """(start, end) of an address whose ``@`` is at ``at``, if there is one:
    a local part, a domain with a dot and a 2+ letter TLD."""
    start = at
    while start > 0 and _local(s[start - 1]):
        start -= 1
    end = at + 1
    while end < len(s) and _domain(s[end]):
        end += 1
    # No trailing dots or dashes in the domain.
    while end > at + 1 and s[end - 1] in b".-":
        end -= 1
    domain = s[at + 1:end]
    tld = domain.rsplit(b".", 1)[-1]
    if start < at and b"." in domain and len(tld) >= 2 and tld.isalpha():
        return start, end
    return None


def _luhn(digits):
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_at(s, i):
    """The end of a card number starting at ``i``, if there is one."""
    digits, j, end = [], i, i
    while j < len(s) and len(digits) < 20:
        c = s[j]
        if _digit(c):
            digits.append(c - 48)
            j += 1
            end = j
        elif c in b" -" and j + 1 < len(s) and _digit(s[j + 1]) and end == j:
            j += 1
        else:
            break
    followed_by_digit = end < len(s) and _digit(s[end])
    if 13 <= len(digits) <= 19 and not followed_by_digit and _luhn(digits):
        return end
    return None


def redact(body):
    """``body`` (bytes) with addresses and card numbers replaced."""
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c == 64:  # '@'
            found = _email_at(body, i)
            if found is not None:
                start, end = found
                # The local part is already copied: take it back.
                del out[len(out) - (i - start):]
                out += b"[email]"
                i = end
                continue
        if _digit(c) and (i == 0 or not _digit(body[i - 1])):
            end = _card_at(body, i)
            if end is not None:
                out += b"[card]"
                i = end
                continue
        out.append(c)
        i += 1
    return bytes(out)


def _apply(message):
    body = message.body
    if body is None:
        return
    clean = redact(body)
    if clean != body:
        message.body = clean


def on_request(req):
    _apply(req)


def on_response(resp):
    _apply(resp)
