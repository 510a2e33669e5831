"""The API keys file: one JSON document of key records, tokens stored only as keyed hashes.

Like an htpasswd file it lives on disk, not in Redis: the positions keyspace is a rebuildable
projection, and losing it must not lock every channel out. ``atp keys`` edits it under an exclusive
lock and replaces it atomically; every API worker notices a change within a second
(``keyring``). A token is ``atp_`` and 32 random bytes (256 bits), so a fast hash suffices; it is
keyed (HMAC-SHA256 with the secret in a separate file) so that the keys file alone does not let
anyone check a guessed token offline.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.contract import ID_RE
from core.errors import AtpError
from serving.auth import SCOPES, ApiKey

TOKEN_PREFIX = "atp_"
FORMAT = 1


class KeyFileError(AtpError):
    """A key operation that cannot be done (unknown name, duplicate, bad scope)."""


def new_token() -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def digest(secret: bytes, token: str) -> str:
    return hmac.new(secret, token.encode(), hashlib.sha256).hexdigest()


def load_secret(path: Path, create: bool = False) -> bytes:
    """The hashing secret; made (0600) when ``create`` and missing."""
    try:
        data = path.read_bytes().strip()
    except PermissionError:
        raise KeyFileError(f"the API key secret {path} cannot be read: it must be readable by the user the API "
                           "runs as") from None
    except FileNotFoundError:
        if not create:
            raise KeyFileError(f"no API key secret at {path}: create a key with `atp keys create` first") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_hex(32).encode())
        data = path.read_bytes().strip()
    if len(data) < 32:
        raise KeyFileError(f"the API key secret at {path} is too short (at least 32 characters)")
    return data


@dataclass
class KeyRecord:
    name: str
    scopes: list[str]
    hash: str
    created_ms: int
    locations: list[str] | None = None
    groups: list[str] | None = None
    rate: float = 0.0
    burst: float = 0.0
    expires_ms: int | None = None
    previous: list[dict[str, Any]] = field(default_factory=list)  # [{"hash", "until_ms"}] after a rotation

    def key(self) -> ApiKey:
        return ApiKey(self.name, frozenset(self.scopes),
                      None if self.locations is None else frozenset(self.locations),
                      None if self.groups is None else frozenset(self.groups), self.rate, self.burst, self.expires_ms)


def read_records(path: Path) -> dict[str, KeyRecord]:
    """The records by name; an absent file has none. A malformed file is an error that names it."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:  # e.g. replaced by another user's 0600 file
        raise KeyFileError(f"the API keys file {path} cannot be read ({exc.strerror}): it must be readable by "
                           "the user the API runs as (run `atp keys` as that user)") from None
    try:
        doc = json.loads(raw)
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT}")
        records = {r["name"]: KeyRecord(**r) for r in doc["keys"]}
        for r in records.values():
            for p in r.previous:
                int(p["until_ms"]), str(p["hash"])  # a rotation's leftovers must be usable
        return records
    except (ValueError, TypeError, KeyError) as exc:
        raise KeyFileError(f"the API keys file {path} cannot be read ({type(exc).__name__}: {exc}); "
                        "restore it from a backup or move it away and create the keys again") from None


@contextmanager
def _locked(path: Path) -> Iterator[dict[str, KeyRecord]]:
    """The records, to change under an exclusive lock; written back atomically (0600) on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = read_records(path)
        yield records
        doc = {"format": FORMAT, "keys": [vars(r) for r in sorted(records.values(), key=lambda r: r.name)]}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def now_ms() -> int:
    return int(time.time() * 1000)


def check_scopes(scopes: list[str]) -> list[str]:
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise KeyFileError(f"unknown scope {', '.join(bad)}" if bad else "a key needs at least one --scope"
                        f" (scopes: {', '.join(SCOPES)})")
    return sorted(set(scopes))


def _ids(values: list[str] | None, what: str) -> list[str] | None:
    if values is None:
        return None
    bad = [v for v in values if not ID_RE.fullmatch(v)]
    if bad or not values:
        raise KeyFileError(f"{what}: {', '.join(bad) or 'empty list'}: ids are letters, digits, '.', '_' or '-'")
    return sorted(set(values))


def create(path: Path, secret: bytes, name: str, scopes: list[str], locations: list[str] | None = None,
           groups: list[str] | None = None, rate: float = 0.0, burst: float | None = None,
           expires_ms: int | None = None) -> str:
    """Adds a key and returns its token (the only time it exists outside the caller)."""
    if not ID_RE.fullmatch(name):
        raise KeyFileError(f"key name {name!r}: letters, digits, '.', '_' or '-', at most 64")
    if rate < 0 or (burst is not None and burst < 1):
        raise KeyFileError("--rate must be >= 0 and --burst >= 1")
    if expires_ms is not None and expires_ms <= now_ms():
        raise KeyFileError("--expires is in the past")
    record = KeyRecord(name, check_scopes(scopes), "", now_ms(), _ids(locations, "--locations"),
                       _ids(groups, "--groups"), rate, (burst if burst is not None else max(1.0, 2 * rate)) if rate else 0.0,
                       expires_ms)
    token = new_token()
    record.hash = digest(secret, token)
    with _locked(path) as records:
        if name in records:
            raise KeyFileError(f"a key named {name!r} exists: revoke it or rotate its token")
        records[name] = record
    return token


def revoke(path: Path, name: str) -> None:
    with _locked(path) as records:
        if records.pop(name, None) is None:
            raise KeyFileError(f"no key named {name!r} (see `atp keys list`)")


def rotate(path: Path, secret: bytes, name: str, grace_s: float) -> str:
    """A new token for the key; the old one stays valid for ``grace_s`` seconds, then is dead."""
    token = new_token()
    with _locked(path) as records:
        record = records.get(name)
        if record is None:
            raise KeyFileError(f"no key named {name!r} (see `atp keys list`)")
        now = now_ms()
        kept = [p for p in record.previous if p["until_ms"] > now]
        if grace_s > 0:
            kept.append({"hash": record.hash, "until_ms": now + int(grace_s * 1000)})
        record.previous, record.hash = kept, digest(secret, token)
    return token
