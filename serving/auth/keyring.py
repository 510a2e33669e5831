"""The keys a running API knows: a token's keyed hash -> its key, reloaded when the file changes.

The file is checked (one ``stat``) at most once a second, so a revocation or rotation reaches every
API worker within about a second, without a restart.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from serving.auth import ApiKey
from serving.auth.keyfile import KeyFileError, digest, load_secret, now_ms, read_records

log = logging.getLogger(__name__)
CHECK_EVERY_S = 1.0


class Keyring:
    def __init__(self, keys_file: Path, secret_file: Path) -> None:
        self._file, self._secret_file = keys_file, secret_file
        self._secret: bytes | None = None
        self._by_hash: dict[str, tuple[ApiKey, int | None]] = {}  # hash -> (key, valid until ms)
        self._seen: tuple[int, int, int] | None = None  # (inode, size, mtime_ns) of the loaded file
        self._next_check = 0.0
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        self._next_check = now + CHECK_EVERY_S
        try:
            st = os.stat(self._file)
            seen: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            seen = None
        if seen == self._seen and not force:
            return
        try:
            records = read_records(self._file)
            secret = load_secret(self._secret_file) if records else None
        except KeyFileError as exc:  # keep the keys loaded last; say why once per change
            log.error("API keys not reloaded: %s", exc)
            self._seen = seen
            return
        by_hash: dict[str, tuple[ApiKey, int | None]] = {}
        for r in records.values():
            key = r.key()
            by_hash[r.hash] = (key, None)
            for p in r.previous:
                by_hash[p["hash"]] = (key, int(p["until_ms"]))
        self._by_hash, self._secret, self._seen = by_hash, secret, seen
        if not records:
            log.warning("no API keys in %s: every request needs one; create it with `atp keys create`", self._file)

    def __len__(self) -> int:
        return len(self._by_hash)

    def lookup(self, token: str) -> ApiKey | None:
        """The key of a valid token, or None (unknown, rotated out, or expired: the caller cannot tell which)."""
        self.refresh()
        if self._secret is None:
            return None
        found = self._by_hash.get(digest(self._secret, token))
        if found is None:
            return None
        key, until = found
        now = now_ms()
        if (until is not None and now >= until) or (key.expires_ms is not None and now >= key.expires_ms):
            return None
        return key
