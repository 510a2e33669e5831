"""The schemas kept in ``schemas/avro``: every revision, indexed by fingerprint and by name.

Files are named ``<RecordName>.<revision>.avsc``. The namespace carries the major (breaking)
version, like the topic suffix ``.v1``; revisions inside it must stay backward compatible, so
a reader on the newest revision reads records written with every older one.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.errors import SchemaError

AVRO_DIR = Path(__file__).parent / "avro"


@dataclass(frozen=True)
class SchemaVersion:
    """One revision of one record schema."""

    name: str  # full name, e.g. com.atpstream.v1.WarehouseEvent
    revision: int
    raw: dict[str, Any]
    parsed: Any  # for writing (logical types converted)
    parsed_plain: Any  # for reading: timestamps stay epoch-millis ints
    fingerprint: bytes  # CRC-64-AVRO, little-endian, as in single-object encoding

    @property
    def canonical(self) -> str:
        return to_parsing_canonical_form(self.parsed)


def strip_logical_types(node: Any) -> Any:
    """Drop ``logicalType`` so the hot path reads timestamps as plain ints, not datetimes."""
    if isinstance(node, dict):
        return {k: strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [strip_logical_types(v) for v in node]
    return node


def _load(path: Path) -> SchemaVersion:
    try:
        stem, rev = path.name.removesuffix(".avsc").rsplit(".", 1)
        revision = int(rev)
        raw = json.loads(path.read_text())
        parsed = parse_schema(copy.deepcopy(raw))
        parsed_plain = parse_schema(strip_logical_types(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise SchemaError(f"cannot load schema {path.name}: {exc}; expected <Name>.<revision>.avsc") from exc
    full = f"{raw.get('namespace')}.{raw['name']}" if raw.get("namespace") else raw["name"]
    if raw["name"] != stem:
        raise SchemaError(f"{path.name}: record name {raw['name']!r} does not match the file name")
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    return SchemaVersion(full, revision, raw, parsed, parsed_plain, fp)


class SchemaStore:
    """All schema revisions of a directory, looked up by fingerprint or by record name."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        if not versions:
            raise SchemaError("no schemas found")
        self._by_fp = {v.fingerprint: v for v in versions}
        by_name: dict[str, list[SchemaVersion]] = {}
        for v in versions:
            by_name.setdefault(v.name, []).append(v)
        self._by_name = {k: sorted(vs, key=lambda v: v.revision) for k, vs in by_name.items()}
        self._short = {k.rsplit(".", 1)[-1]: k for k in self._by_name}

    @classmethod
    def from_dir(cls, directory: Path = AVRO_DIR) -> SchemaStore:
        return cls([_load(p) for p in sorted(directory.glob("*.avsc"))])

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fp.get(fp)

    def revisions(self, name: str) -> list[SchemaVersion]:
        """Every revision of a record, oldest first; ``name`` may be short (``WarehouseEvent``)."""
        full = self._short.get(name, name)
        try:
            return self._by_name[full]
        except KeyError:
            raise SchemaError(f"unknown record {name!r}; known: {sorted(self._short)}") from None

    def latest(self, name: str) -> SchemaVersion:
        return self.revisions(name)[-1]

    def names(self) -> list[str]:
        return sorted(self._by_name)


@lru_cache(maxsize=1)
def default_store() -> SchemaStore:
    """The store of this package's ``avro/`` directory, loaded once per process."""
    return SchemaStore.from_dir()
