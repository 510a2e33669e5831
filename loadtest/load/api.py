"""API load with ``wrk`` (Debian's ``wrk`` package): single-key GETs and 100-key batch POSTs.

A Lua script picks a random key (or a random prepared 100-key body) per request. For a fixed
offered rate, each connection waits ``connections / rate`` seconds between requests (wrk's
``delay()``); the achieved rate is what wrk reports, and the report quotes that.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def wrk_binary() -> str | None:
    return shutil.which("wrk")


@dataclass(frozen=True)
class WrkResult:
    name: str
    target_rps: float | None  # None: as fast as it goes
    connections: int
    duration_s: float
    requests: int
    rps: float
    latency_ms: dict[str, float]  # p50, p75, p90, p99
    errors: int  # socket errors + non-2xx/3xx

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if m is None:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def parse_wrk(name: str, out: str, target_rps: float | None, connections: int, duration_s: float) -> WrkResult:
    lat = {f"p{p}": _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M)}
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    reqs = re.search(r"^\s+(\d+) requests in", out, re.M)
    if rps is None or reqs is None or len(lat) != 4:
        raise ValueError(f"unexpected wrk output:\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return WrkResult(name, target_rps, connections, duration_s, int(reqs.group(1)), float(rps.group(1)),
                     {k: round(v, 3) for k, v in lat.items()}, errors)


def _script(keys: list[tuple[str, str]], batch: int, delay_ms: float, seed: int, token: str | None = None) -> str:
    rng = random.Random(seed)
    auth = f"wrk.headers['Authorization'] = 'Bearer {token}'\n" if token else ""
    if batch <= 1:
        paths = ",".join(json.dumps(f"/v1/availability/{s}/{loc}") for s, loc in keys)
        body = (f"{auth}local paths = {{{paths}}}\n"
                "request = function() return wrk.format('GET', paths[math.random(#paths)]) end\n")
    else:
        bodies = [json.dumps({"items": [{"sku": s, "location": loc} for s, loc in rng.sample(keys, min(batch, len(keys)))]})
                  for _ in range(20)]
        lua_bodies = ",".join("[==[" + b + "]==]" for b in bodies)
        body = (f"{auth}local bodies = {{{lua_bodies}}}\nwrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\n"
                "request = function() return wrk.format('POST', '/v1/availability/query', nil, bodies[math.random(#bodies)]) end\n")
    if delay_ms > 0:
        body += f"delay = function() return {delay_ms:.3f} end\n"
    return body


CALIBRATION_S = 3  # the short run before a paced one that measures what wrk's pacing loses


def run_wrk(base_url: str, keys: list[tuple[str, str]], work_dir: Path, name: str, duration_s: float,
            connections: int, batch: int = 1, target_rps: float | None = None, threads: int = 1,
            token: str | None = None) -> WrkResult:
    """``wrk`` as fast as it goes, or paced at ``target_rps``. wrk paces by waiting a fixed delay
    after each response, so each connection's cycle is the delay plus the latency and the delay
    ``connections / target_rps`` alone offers less than the target: a short calibration run at
    that delay measures the cycle, and the measured run waits that much less."""
    wrk = wrk_binary()
    if wrk is None:
        raise FileNotFoundError("wrk is not installed: apt-get install wrk (Debian) to measure the API")

    def once(label: str, seconds: float, delay_ms: float) -> WrkResult:
        script = work_dir / f"{label}.lua"
        script.write_text(_script(keys, batch, delay_ms, seed=len(name), token=token))
        cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s", str(script), base_url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
        (work_dir / f"{label}.txt").write_text(out)
        return parse_wrk(name, out, target_rps, connections, seconds)

    if not target_rps:
        return once(name, duration_s, 0.0)
    delay_ms = connections * 1000.0 / target_rps
    probe = once(f"{name}-calibration", CALIBRATION_S, delay_ms)
    return once(name, duration_s, paced_delay_ms(connections, target_rps, delay_ms, probe.rps))


def paced_delay_ms(connections: int, target_rps: float, tried_ms: float, achieved_rps: float) -> float:
    """The delay that offers ``target_rps``, from a run at ``tried_ms`` that achieved ``achieved_rps``:
    the rest of that run's cycle per connection (the latency) comes off the plain delay."""
    if achieved_rps <= 0:
        return tried_ms
    latency_ms = max(0.0, connections * 1000.0 / achieved_rps - tried_ms)
    return max(0.0, connections * 1000.0 / target_rps - latency_ms)
