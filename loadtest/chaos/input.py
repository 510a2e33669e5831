"""The chaos run's input: a seeded simulated stream with duplicates and poison mixed in."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from dataflows.kafka.producer import RECORD_OF_ALIAS
from sandbox.simulator import Simulator
from schemas import Encoder, default_store

POISON_KINDS = ("bad_magic", "unknown_schema", "truncated", "invalid_semantics")


@dataclass(frozen=True)
class Outgoing:
    """One record to produce: a canonical event (``record``) or raw poison bytes (``value``)."""

    alias: str
    record: dict[str, Any] | None = None
    key: bytes | None = None
    value: bytes | None = None
    poison: str | None = None
    duplicate: bool = False


def build_input(events: int, skus: int, locations: int, seed: int, duplicates: float, poison: float,
                duplicate_spread: int = 2000) -> tuple[list[Outgoing], Counter[str]]:
    """``events`` simulated events; a share re-sent up to ``duplicate_spread`` records later, and a
    share followed by a poison record. Returns the records and what was mixed in."""
    sim = Simulator(seed=seed, skus=skus, locations=locations)
    rng = random.Random(seed * 7919 + 1)
    encoder = Encoder(default_store())
    out: list[Outgoing] = []
    later: dict[int, list[Outgoing]] = {}
    mixed: Counter[str] = Counter()
    for i in range(events):
        alias, rec = sim.next()
        out.append(Outgoing(alias, rec))
        out.extend(later.pop(i, []))
        if rng.random() < duplicates:
            later.setdefault(i + rng.randint(1, duplicate_spread), []).append(Outgoing(alias, rec, duplicate=True))
            mixed["duplicate"] += 1
        if rng.random() < poison:
            kind = POISON_KINDS[mixed["poison"] % len(POISON_KINDS)]
            out.append(_poison(kind, alias, rec, encoder, rng, i))
            mixed["poison"] += 1
            mixed[f"poison.{kind}"] += 1
    for i in sorted(later):
        out.extend(later[i])
    return out, mixed


def _poison(kind: str, alias: str, rec: dict[str, Any], encoder: Encoder, rng: random.Random, i: int) -> Outgoing:
    key = f"{rec['sku']}@{rec['location']}".encode()
    valid = encoder.encode(RECORD_OF_ALIAS[alias], rec)
    if kind == "bad_magic":
        value = b"\x01\x02" + valid[2:]
    elif kind == "unknown_schema":
        value = valid[:2] + rng.randbytes(8) + valid[10:]
    elif kind == "truncated":
        value = valid[: 10 + (len(valid) - 10) // 2]
    else:  # well-formed Avro that breaks the contract: a receipt of minus five units
        bad = {**rec, "event_id": f"poison-{i}", "event_type": "RECEIPT", "qty": -5, "to_status": "AVAILABLE",
               "counted_qty": None, "from_status": None, "order_line_id": None, "reason": None,
               "to_location": None, "from_location": None, "transfer_id": None}
        for name in ("order_id", "order_line_id", "channel", "expires_at", "snapshot_id", "on_hand", "as_of",
                     "source_system"):
            bad.pop(name, None)
        value = encoder.encode("WarehouseEvent", bad)
        alias = "wms"
    return Outgoing(alias, key=key, value=value, poison=kind)
