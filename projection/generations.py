"""Generations of the Redis keyspace: their local spec, their meta, listing, switching and retiring.

A generation is a complete keyspace built by one dataflow run (``default`` is the one `atp run`
writes unless ``ATP_GENERATION`` names another). `atp replay` builds a new one from the log while
the live one keeps serving; `atp generation switch` moves the API to it with one ``SET`` of the
pointer and schedules the old one's retirement after a grace period. The spec (kind, formula,
cut-off) lives in a file beside the generation's recovery store, so it survives a Redis loss;
the meta hash mirrors it for readers. So does the retirement schedule (``RETIRE_FILE``), which the
old generation's own dataflow copies from its meta to its disk and back after a Redis loss.

A switch needs the new generation running live and caught up: its dataflow writes, with its
heartbeat, how far it has read its input (``caught_up_at``, ``lag``); ``live_problem`` judges them.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis
from redis.typing import EncodableT, FieldT

from core.config import Settings
from core.errors import StackError
from projection.keys import DEFAULT_GENERATION, READY, Generations, KeySpace, current_name, generations_of

LIVE, REPLAY, PIT = "live", "replay", "pit"
SPEC_FILE = "generation.json"
WAS_CURRENT_FILE = "was-current"  # beside the spec: the pointer named this generation when last seen
RETIRE_FILE = "retire-at"  # beside the spec: the meta's retire_at (epoch ms) a switch gave this generation

# What a running dataflow writes into its meta with every heartbeat (dataflows/runtime/continuity.py):
# ``flow`` (running | stopped | crash_loop), ``heartbeat`` (epoch ms), and its read progress:
# ``caught_up_at`` (epoch ms: every input record logged by then had been read; "" until it has
# caught up once since it started) and ``lag`` (input records behind the ends at the last measurement).
FLOW_RUNNING, CAUGHT_UP_AT, LAG = "running", "caught_up_at", "lag"


class GenerationError(StackError):
    """A generation operation that must not happen; the message says why and what to do."""


@dataclass(frozen=True)
class Spec:
    """What a generation is: how it was built and with which formula (never changes once written)."""

    name: str
    kind: str = LIVE  # live: `atp run`; replay: rebuilt from the log, then followed live; pit: frozen
    formula_version: int = 1
    until_ms: int | None = None  # pit: events with a log timestamp before this
    starts: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> first offset read
    ends: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> first offset not read
    created_ms: int = 0

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (SPEC_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(directory / SPEC_FILE)

    @classmethod
    def load(cls, directory: Path) -> Spec | None:
        path = directory / SPEC_FILE
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise GenerationError(f"{path} is not a generation spec ({exc}); restore it or drop the generation") from None

    def meta_fields(self) -> dict[FieldT, EncodableT]:
        out: dict[FieldT, EncodableT] = {"kind": self.kind, "formula_version": self.formula_version}
        if self.until_ms is not None:
            out["until"] = self.until_ms
        return out


def now_ms() -> int:
    return int(time.time() * 1000)


def read_meta(client: redis.Redis, ks: KeySpace) -> dict[str, str] | None:
    raw = client.hgetall(ks.meta)
    # A hand edit can leave bytes that are not UTF-8: read as such, they name nothing that exists.
    return {_text(k): _text(v) for k, v in raw.items()} if raw else None


def _text(b: bytes | str) -> str:
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else b


def write_meta(client: redis.Redis, ks: KeySpace, run_id: str, state: str, spec: Spec | None = None) -> None:
    mapping: dict[FieldT, EncodableT] = {"run_id": run_id, "state": state, "since": now_ms()}
    if spec is not None:
        mapping.update(spec.meta_fields())
    client.hset(ks.meta, mapping=mapping)


def local_dirs(settings: Settings) -> list[Path]:
    """Every generation's recovery store and spec directory on this machine."""
    return [settings.state_dir / "recovery", settings.state_dir / "generations"]


def current(client: redis.Redis, gens: Generations) -> str:
    return current_name(client.get(gens.pointer))


def for_generation(settings: Settings, name: str) -> Settings:
    """The same settings, pointed at another generation."""
    return settings.model_copy(update={"generation": name})


@dataclass(frozen=True)
class Listed:
    name: str
    current: bool
    meta: dict[str, str]
    keys: int


def list_all(settings: Settings, client: redis.Redis) -> list[Listed]:
    """Every generation with a meta key in Redis or a spec on this machine."""
    gens = generations_of(settings)
    names = {gens.name_of_meta(k.decode()) for k in client.scan_iter(match=gens.meta_pattern, count=1000)}
    if client.exists(gens.keyspace(DEFAULT_GENERATION).meta):
        names.add(DEFAULT_GENERATION)
    local = settings.state_dir / "generations"
    if local.is_dir():
        names.update(p.name for p in local.iterdir() if (p / SPEC_FILE).exists())
    cur = current(client, gens)
    out = []
    for name in sorted(names):
        ks = gens.keyspace(name)
        out.append(Listed(name, name == cur, read_meta(client, ks) or {}, count_positions(client, ks)))
    return out


def check_switchable(settings: Settings, client: redis.Redis, name: str) -> dict[str, str]:
    """The refusals no ``--force`` overrides; returns the generation's meta."""
    gens = generations_of(settings)
    meta = read_meta(client, gens.keyspace(name))
    if meta is None:
        raise GenerationError(f"generation '{name}' has no keyspace in Redis; build it with `atp replay {name}`")
    spec = Spec.load(for_generation(settings, name).generation_dir)  # this machine's copy, if it has one
    if meta.get("kind") == PIT or (spec is not None and spec.kind == PIT):
        raise GenerationError(
            f"generation '{name}' is a point-in-time rebuild, frozen by design (at {meta.get('until')}): it never "
            f"becomes current, and --force does not apply; read it with ?generation={name}")
    if meta.get("state") != READY:
        raise GenerationError(f"generation '{name}' is {meta.get('state')}; wait until it is ready")
    if meta.get("retire_at"):
        raise GenerationError(f"generation '{name}' is retiring; build a new one instead")
    if current(client, gens) == name:
        raise GenerationError(f"generation '{name}' is already current")
    return meta


def live_problem(meta: dict[str, str], at_ms: int, stale_after_ms: int, max_behind_ms: int) -> str | None:
    """Why ``meta``'s dataflow is not running live and caught up at ``at_ms``, or None: its ``flow``
    must be running, its heartbeat at most ``stale_after_ms`` old, and it must have read every input
    record logged up to ``max_behind_ms`` before ``at_ms``."""
    flow = meta.get("flow")
    if flow is None:
        return "no dataflow has run it"
    if flow != FLOW_RUNNING:
        return f"its dataflow is {flow}"
    beat = _number(meta.get("heartbeat"))
    if beat is None:
        return f"its dataflow's heartbeat is unreadable ({meta.get('heartbeat')!r})"[:120]
    if at_ms - beat > stale_after_ms:
        return (f"its dataflow's last heartbeat is {(at_ms - beat) / 1000:.1f} s old (more than "
                f"ATP_READY_HEARTBEAT_S={stale_after_ms / 1000:g}): it may have stopped or hung")
    lag = _number(meta.get(LAG))
    behind = f", {lag:,} input records behind at its last measurement" if lag is not None else ""
    caught_up = _number(meta.get(CAUGHT_UP_AT))
    if caught_up is None:
        return f"its dataflow has not caught up with its input since it started{behind}"
    if at_ms - caught_up > max_behind_ms:
        return (f"its dataflow has read its input only up to {(at_ms - caught_up) / 1000:.0f} s ago (the bound "
                f"is {max_behind_ms / 1000:g} s){behind}")
    return None


def _number(value: str | None) -> int | None:
    try:
        return int(value or "")
    except ValueError:
        return None


def not_live(name: str, problem: str) -> GenerationError:
    run = "atp run" if name == DEFAULT_GENERATION else f"ATP_GENERATION={name} atp run"
    return GenerationError(
        f"generation '{name}' is not running live and caught up ({problem}); the API would serve it frozen. "
        f"Start its dataflow (`{run}`), wait for it to catch up and switch again, or --force to switch anyway")


def switch(settings: Settings, client: redis.Redis, name: str, grace_s: float) -> str:
    """Point the API at ``name``; the old current generation retires after ``grace_s``. Returns the old name.

    Whether ``name`` runs live is the caller's check (``live_problem``): `atp generation switch`
    makes it unless ``--force``."""
    gens = generations_of(settings)
    check_switchable(settings, client, name)
    old = current(client, gens)
    retire_at = now_ms() + int(grace_s * 1000)
    # The SET is the switch. No MULTI: the two keys may live on different Redis Cluster nodes; the
    # pointer goes first, so a failure in between never retires the generation being served.
    pipe = client.pipeline(transaction=False)
    pipe.set(gens.pointer, name)
    pipe.hset(gens.keyspace(old).meta, "retire_at", retire_at)
    pipe.execute()
    return old


def save_retire_at(directory: Path, at_ms: int) -> None:
    """Keep a generation's retirement time beside its spec, for after a Redis loss."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (RETIRE_FILE + ".tmp")
    tmp.write_text(f"{at_ms}\n")
    tmp.replace(directory / RETIRE_FILE)


def load_retire_at(directory: Path) -> int | None:
    """The retirement time kept beside the spec; None when there is none (or it is not a number)."""
    try:
        return int((directory / RETIRE_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def retire_due(meta: dict[str, str] | None, at_ms: int | None = None) -> bool:
    """The generation's ``retire_at`` has passed; a value that is not a number retires nothing (as
    the API reads it)."""
    try:
        return bool(meta and meta.get("retire_at") and int(meta["retire_at"]) <= (at_ms or now_ms()))
    except ValueError:
        return False


def drop(settings: Settings, client: redis.Redis, name: str, force: bool = False) -> int:
    """Delete a generation's keyspace and local files; returns the Redis keys deleted. Never the current one."""
    gens = generations_of(settings)
    if current(client, gens) == name and not force:
        raise GenerationError(f"generation '{name}' is current; switch to another one first")
    deleted = delete_keyspace(client, gens.keyspace(name))
    gen_settings = for_generation(settings, name)
    shutil.rmtree(gen_settings.recovery_dir, ignore_errors=True)
    (gen_settings.generation_dir / SPEC_FILE).unlink(missing_ok=True)
    (gen_settings.generation_dir / WAS_CURRENT_FILE).unlink(missing_ok=True)
    (gen_settings.generation_dir / RETIRE_FILE).unlink(missing_ok=True)
    if name != DEFAULT_GENERATION:
        shutil.rmtree(gen_settings.generation_dir, ignore_errors=True)
    return deleted


def delete_keyspace(client: redis.Redis, ks: KeySpace) -> int:
    """Delete one generation's keys (position hashes, location sets, explain lists, then its meta)."""
    return (delete_matching(client, f"{ks.prefix}:pos:*", f"{ks.prefix}:locs:*", f"{ks.prefix}:expl:*")
            + client.delete(ks.meta))


def delete_matching(client: redis.Redis, *patterns: str) -> int:
    """Delete every key matching ``patterns``, 1,000 at a time; returns how many were deleted."""
    deleted: int = 0
    pipe = client.pipeline(transaction=False)  # one DEL per key: keys may live in different cluster slots
    for pattern in patterns:
        for key in client.scan_iter(match=pattern, count=1000):
            pipe.delete(key)
            if len(pipe) >= 1000:
                deleted += sum(pipe.execute())
    deleted += sum(pipe.execute())
    return deleted


def count_positions(client: redis.Redis, ks: KeySpace) -> int:
    return sum(1 for _ in client.scan_iter(match=f"{ks.prefix}:pos:*", count=1000))
