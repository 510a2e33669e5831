"""Secrets never reach output: URLs and messages are redacted before they are logged or printed."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<password>[^@/\s]+)@", re.I)


def url(value: str) -> str:
    """``value`` with the password of its userinfo replaced (``redis://user:***@host:6379/0``)."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return text(value)
    if parts.password is None:
        return value
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def text(value: str, secrets: tuple[str, ...] = ()) -> str:
    """``value`` with every URL password and each of ``secrets`` replaced by ``***``."""
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", value)
    for secret in secrets:
        if secret:
            out = out.replace(secret, "***")
    return out
