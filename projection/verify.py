"""Compare two generations key by key, before a switch (or instead of one, in a dry run).

Two generations built from the same log must agree on every field of every key (apart from
``updated_at``, when a position was computed, and ``formula_version``). While live traffic flows,
the two dataflows apply it at slightly different moments, and a key's events come from several
topics read at different paces, so at one instant a key may differ even with equal versions.
Every key that differs is therefore read again (both copies side by side, in one pipeline) until
it agrees or ``settle_s`` has passed; only what still differs then is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis

from projection.codec import from_hash
from projection.keys import KeySpace

IGNORED = {"updated_at", "formula_version"}


@dataclass
class Diff:
    keys_new: int = 0
    keys_current: int = 0
    equal: int = 0
    different: list[tuple[str, dict[str, tuple[Any, Any]]]] = field(default_factory=list)  # same version, other fields
    version_apart: list[tuple[str, int, int]] = field(default_factory=list)  # key, new, current
    only_new: list[str] = field(default_factory=list)
    only_current: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (self.different or self.version_apart or self.only_new or self.only_current)

    def as_dict(self, limit: int = 20) -> dict[str, Any]:
        return {
            "passed": self.passed, "keys_new": self.keys_new, "keys_current": self.keys_current,
            "equal": self.equal, "different": len(self.different), "version_apart": len(self.version_apart),
            "only_new": len(self.only_new), "only_current": len(self.only_current),
            "examples": {
                "different": [{"key": k, "fields": {f: list(v) for f, v in d.items()}} for k, d in self.different[:limit]],
                "version_apart": [{"key": k, "new": a, "current": b} for k, a, b in self.version_apart[:limit]],
                "only_new": self.only_new[:limit], "only_current": self.only_current[:limit],
            },
        }


def _suffixes(client: redis.Redis, ks: KeySpace) -> set[str]:
    """Position keys as ``{sku}:location``, the part after ``<prefix>:pos:``."""
    cut = len(ks.prefix) + len(":pos:")
    return {k.decode()[cut:] for k in client.scan_iter(match=f"{ks.prefix}:pos:*", count=1000)}


def _read_pairs(client: redis.Redis, new: KeySpace, cur: KeySpace,
                suffixes: list[str]) -> dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """Both generations' copy of each key, read next to each other in one pipeline, so that under
    live traffic the two reads of a key are microseconds apart."""
    out: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]] = {}
    for i in range(0, len(suffixes), 500):
        chunk = suffixes[i:i + 500]
        pipe = client.pipeline(transaction=False)
        for s in chunk:
            pipe.hgetall(f"{new.prefix}:pos:{s}")
            pipe.hgetall(f"{cur.prefix}:pos:{s}")
        raws = pipe.execute()
        for j, s in enumerate(chunk):
            out[s] = (from_hash(raws[2 * j]), from_hash(raws[2 * j + 1]))
    return out


def _fields_apart(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {f: (a.get(f), b.get(f)) for f in (set(a) | set(b)) - IGNORED if a.get(f) != b.get(f)}


def compare(client: redis.Redis, new: KeySpace, cur: KeySpace, settle_s: float = 0.0, poll_s: float = 0.5) -> Diff:
    names_new, names_cur = _suffixes(client, new), _suffixes(client, cur)
    diff = Diff(len(names_new), len(names_cur))
    pending = sorted(names_new | names_cur)  # a key only on one side may be in flight too
    deadline = time.monotonic() + settle_s
    while True:
        pairs = _read_pairs(client, new, cur, pending)
        apart = []
        for s, (a, b) in pairs.items():
            if a is None or b is None or a["version"] != b["version"] or _fields_apart(a, b):
                apart.append(s)
            else:
                diff.equal += 1
        if not apart or time.monotonic() >= deadline:
            for s in apart:
                a, b = pairs[s]
                if b is None:
                    diff.only_new.append(s)
                elif a is None:
                    diff.only_current.append(s)
                elif a["version"] != b["version"]:
                    diff.version_apart.append((s, a["version"], b["version"]))
                else:
                    diff.different.append((s, _fields_apart(a, b)))
            return diff
        pending = apart
        time.sleep(poll_s)
