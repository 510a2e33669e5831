"""The status report: its lines, what decides the exit code, and the judgments behind each line.

``sandbox.status`` runs the checks; the functions here turn what they found (or the error they
met) into one ``Component`` each, without any I/O, so each judgment is tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core import redact
from core.config import Settings
from projection.keys import READY

STATE_WIDTH, NAME_WIDTH = 10, 12
Meta = tuple[str, dict[str, str] | None]  # the generation served, and its meta (None: missing)


@dataclass
class Component:
    """One line of the report. ``ok`` None: informational, it does not decide the exit code."""

    name: str
    state: str
    address: str = ""
    detail: str = ""
    ok: bool | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        parts = [f"{self.name:{NAME_WIDTH}}", f"{self.state:{STATE_WIDTH}}", self.address, self.detail]
        return " ".join(p for p in parts if p).rstrip()


@dataclass
class Report:
    """Every line of a status, with the local stack's processes first when there are any."""

    checked_at: datetime
    components: list[Component]
    processes: dict[str, dict[str, Any]] | None = None  # the local stack's: name -> pid (None: stopped), kind

    @property
    def ok(self) -> bool:
        """Everything up and the keyspace ready."""
        return all(c.ok for c in self.components if c.ok is not None)

    def lines(self) -> list[str]:
        out = []
        for name, proc in (self.processes or {}).items():
            what = f"{proc['kind']}, " if proc.get("kind") else ""
            state = f"running ({what}pid {proc['pid']})" if proc["pid"] else "stopped"
            out.append(f"{'process':{NAME_WIDTH}} {name:{STATE_WIDTH}} {state}")
        return out + [c.line() for c in self.components]

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"ok": self.ok, "checked_at": self.checked_at.isoformat().replace("+00:00", "Z")}
        if self.processes is not None:
            doc["processes"] = self.processes
        doc["components"] = {c.name.replace(" ", "_"): {"state": c.state, "address": c.address, "detail": c.detail,
                                                         "ok": c.ok, **c.data} for c in self.components}
        return doc


@dataclass(frozen=True)
class Lag:
    """Records of each input topic the dataflow has not consumed yet (None: not known)."""

    topics: dict[str, int | None]
    source: str

    @property
    def known(self) -> int:
        return sum(n for n in self.topics.values() if n is not None)


def consumed_offsets(samples: dict[Any, float] | None, committed: dict[str, int] | None) -> dict[str, int]:
    """``{partition}-{topic}`` -> the next offset the dataflow reads: its metrics' where they name the
    partition, else its recovery store's (the higher of the two: both only move forward). The store
    keeps librdkafka's "from the beginning" (-2) for a partition not read yet: offset 0."""
    out = {key: max(0, int(offset)) for key, offset in (committed or {}).items()}
    for (name, labels), value in (samples or {}).items():
        if name == "atp_input_offset":
            lab = dict(labels)
            key = f"{lab['partition']}-{lab['topic']}"
            out[key] = max(out.get(key, 0), int(value))
    return out


def lag_per_topic(topics: list[str], ends: dict[str, int], consumed: dict[str, int]) -> dict[str, int | None]:
    """End offsets (``{partition}-{topic}``) minus consumed ones, summed per topic; a topic with a
    partition that holds records nobody says were read is None (unknown)."""
    out: dict[str, int | None] = dict.fromkeys(topics, 0)
    for key, end in ends.items():
        topic = key.split("-", 1)[1]
        if out.get(topic) is None:
            continue
        if key in consumed:
            out[topic] = (out[topic] or 0) + max(0, end - consumed[key])
        elif end > 0:
            out[topic] = None
    return out


def ago(now_ms: int, at_ms: float) -> str:
    """How long before ``now_ms`` ``at_ms`` was, in the unit that reads best."""
    s = max(0.0, (now_ms - at_ms) / 1000)
    if s < 120:
        return f"{s:.1f} s ago"
    return f"{s / 60:.0f} min ago" if s < 7200 else f"{s / 3600:.1f} h ago" if s < 172_800 else f"{s / 86400:.0f} d ago"


def iso(ms: float) -> str:
    """Epoch milliseconds as an ISO-8601 UTC time."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def api_url(settings: Settings) -> str:
    """Where the API answers: an address that binds every interface is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.api_host, settings.api_host)
    scheme = "https" if settings.api_tls_cert_file is not None else "http"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{settings.api_port}"


def metrics_url(settings: Settings) -> str | None:
    return f"http://{settings.metrics_host}:{settings.metrics_port}/metrics" if settings.metrics_port else None


def kafka_line(settings: Settings, md: Any, error: str | None) -> Component:
    address = redact.text(settings.kafka_bootstrap)
    if md is None:
        return Component("kafka", "down", address, error or "", ok=False)
    missing = [t for t in settings.all_topics if t not in md.topics]
    detail = f"{len(md.brokers)} broker(s), " + (f"topics missing: {', '.join(missing)} (run `atp topics create`)"
                                                  if missing else f"all {len(settings.all_topics)} topics")
    return Component("kafka", "up", address, detail, ok=not missing, data={"brokers": len(md.brokers),
                                                                         "missing_topics": missing})


def redis_lines(settings: Settings, found: Meta | None, error: str | None) -> list[Component]:
    """Redis, and the keyspace the API serves (``found``: None when Redis did not answer)."""
    address = redact.url(settings.redis_url)
    if found is None:
        return [Component("redis", "down", address, error or "", ok=False),
                Component("keyspace", "unknown", "", "Redis is not reachable", ok=False)]
    generation, meta = found
    redis_up = Component("redis", "up", address, ok=True)
    if meta is None:
        return [redis_up, Component("keyspace", "missing", "", f"generation '{generation}' has no meta: never "
                                    "written, or lost (a running dataflow re-publishes it)", ok=False,
                                    data={"generation": generation})]
    state = meta.get("state") or "unknown"
    since = meta.get("since", "")
    detail = f"generation '{generation}'" + (f", {state} since {iso(int(since))}" if since.isdigit() else "")
    return [redis_up, Component("keyspace", state, "", detail, ok=state == READY,
                                data={"generation": generation, "since": since or None, "run_id": meta.get("run_id"),
                                      "kind": meta.get("kind")})]


def dataflow_line(settings: Settings, found: Meta | None, samples: dict[Any, float] | None,
                  metrics_error: str | None, now_ms: int) -> Component:
    """Up when its heartbeat is as fresh as /readyz wants it; a dataflow that publishes none (an older
    one) is up when its metrics endpoint answers."""
    from serving.routes.health import flow_problem  # the API's own rule (imported here: it loads FastAPI)

    url = metrics_url(settings)
    metrics = ("metrics disabled (ATP_METRICS_PORT=0)" if url is None else
               f"metrics {url} " + ("reachable" if samples is not None else f"unreachable ({metrics_error})"))
    meta = found[1] if found is not None else None
    flow, heartbeat = (meta.get("flow"), meta.get("heartbeat")) if meta else (None, None)
    data = {"flow": flow, "heartbeat": int(heartbeat) if heartbeat and heartbeat.isdigit() else None,
            "metrics": url, "metrics_reachable": samples is not None}
    if flow is not None:
        problem = flow_problem(flow, heartbeat, now_ms, int(settings.ready_heartbeat_s * 1000))
        if problem is None:
            return Component("dataflow", "up", "", f"{flow}, heartbeat {ago(now_ms, int(heartbeat or 0))}; "
                             f"{metrics}", ok=True, data=data)
        return Component("dataflow", "down", "", f"{problem[1]}; {metrics}", ok=False, data=data)
    if samples is not None:
        return Component("dataflow", "up", "", f"no heartbeat in the keyspace; {metrics}", ok=True, data=data)
    why = "no heartbeat (Redis unreachable)" if found is None else "no heartbeat in the keyspace"
    return Component("dataflow", "down", "", f"{why}; {metrics}", ok=False, data=data)


def api_line(settings: Settings, probe: dict[str, Any] | None, error: str | None) -> Component:
    address = api_url(settings)
    if probe is None:
        return Component("api", "down", address, error or "", ok=False)
    up = probe["healthz"] == 200
    ready = probe["readyz"] == 200
    detail = f"healthz {'ok' if up else probe['healthz']}, readyz " + (
        "ready" if ready else f"{probe['readyz']} {probe['readyz_code'] or ''}".rstrip())
    return Component("api", "up" if up else "down", address, detail, ok=up and ready, data=probe)


def lag_line(found: tuple[Lag | None, str | None]) -> Component:
    """``found``: the lag, or None and why it is not known."""
    lag, why = found
    if lag is None:
        return Component("lag", "unknown", "", why or "", data={"topics": None})
    per_topic = ", ".join(f"{t} {'?' if n is None else n}" for t, n in lag.topics.items())
    unknown = any(n is None for n in lag.topics.values())
    state = "unknown" if unknown and not lag.known else f"{lag.known}" + ("+" if unknown else "")
    detail = f"records behind: {per_topic} (consumed offsets from {lag.source})"
    return Component("lag", state, "", detail, data={"topics": lag.topics, "source": lag.source})


def last_event_line(now_ms: int, at_ms: float | None, source: str, error: str | None) -> Component:
    """``at_ms``: the newest event time found (None: none, or not known when ``error`` says why)."""
    if at_ms is None:
        if error is not None:
            return Component("last event", "unknown", "", error, data={"at": None})
        return Component("last event", "none", "", "no event applied yet", data={"at": None})
    return Component("last event", ago(now_ms, at_ms), "", f"at {iso(at_ms)} (from {source})",
                     data={"at": iso(at_ms), "age_s": round(max(0, now_ms - at_ms) / 1000, 3)})


def dead_letters_line(found: tuple[tuple[int, str] | None, str | None]) -> Component:
    """``found``: (how many, counted how), or None and why they were not counted."""
    counted, why = found
    if counted is None:
        return Component("dead letters", "unknown", "", why or "", data={"last_hour": None})
    count, how = counted
    detail = f"in the last hour (counted from {how})" + ("; `atp dlq list` names them" if count else "")
    return Component("dead letters", str(count), "", detail, data={"last_hour": count})
