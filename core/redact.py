"""Secrets never reach output: URLs and messages are redacted before they are logged or printed."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# scheme://user:password@ : the password runs to the last "@" before the host (it may hold "@", "/").
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<password>\S+)@(?=[^@\s]*$|[^@\s]*\s)",
                       re.I)
_QUERY_SECRET = re.compile(r"(?P<key>[?&](?:password|pass|passwd|token|secret)=)[^&\s#]*", re.I)


def url(value: str) -> str:
    """``value`` with its password hidden: the userinfo's (``redis://user:***@host:6379/0``) and a
    ``password=`` query parameter's (``unix:///run/redis.sock?password=***``)."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:  # not a URL this parser takes (an unencoded "/" in the password, say)
        return text(value)
    out = value
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"  # IPv6
        if port is not None:
            host = f"{host}:{port}"
        out = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}***", out)


def text(value: str, secrets: tuple[str, ...] = ()) -> str:
    """``value`` with every URL password, ``password=`` parameter and each of ``secrets`` replaced by ``***``."""
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", value)
    out = _QUERY_SECRET.sub(lambda m: f"{m['key']}***", out)
    for secret in secrets:
        if secret:
            out = out.replace(secret, "***")
    return out
