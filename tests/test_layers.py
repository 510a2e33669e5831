"""The layering of the code is a checked contract: every import points down, and no import circles.

Layers, bottom to top (docs/development.md has the map):

0. ``core``: errors, settings, logging, process tuning. Imports nothing of the project.
1. ``state`` (the domain: events and the pure fold) and ``schemas`` (the wire format).
2. ``projection``: the Redis keyspace both the sink and the API use.
3. ``dataflows`` (the stream) and ``serving`` (the HTTP API), which never import each other.
4. ``sandbox``: the local stack, the simulator and the demo.
5. ``loadtest``: workload, truth, chaos, load tests and benchmarks.
6. ``atp``: the commands, imported by nothing.

Inside ``dataflows``: ``dataflows.kafka`` (the connector) is below the steps at the package root,
which are below ``dataflows.runtime`` (the process that runs them). Every import counts, including
one inside a function: a function-level import is still an arrow.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [("core",), ("state", "schemas"), ("projection",), ("dataflows", "serving"), ("sandbox",), ("loadtest",),
          ("atp",)]
PACKAGES = {p: i for i, layer in enumerate(LAYERS) for p in layer}
# Inside dataflows, lowest first; a module is in the first group whose prefix it has (the root steps last).
DATAFLOWS = ["dataflows.hotmetrics", "dataflows.metrics", "dataflows.kafka", "dataflows.runtime"]


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the project modules (or packages) it imports, anywhere in its body."""
    out: dict[str, set[str]] = defaultdict(set)
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            mod = _module_of(path)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                out[mod].update(n for n in names if n.split(".")[0] in PACKAGES)
    return out


def _dataflows_rank(mod: str) -> int:
    """0-1: metrics, 2: the Kafka connector, 3: the root steps, 4: the runtime."""
    for i, prefix in enumerate(DATAFLOWS):
        if mod == prefix or mod.startswith(prefix + "."):
            return i if i < 3 else 4
    return 3


def _upward(src: str, dst: str) -> bool:
    a, b = src.split(".")[0], dst.split(".")[0]
    if a != b:
        return PACKAGES[b] >= PACKAGES[a]  # up, or across a layer (dataflows <-> serving, state <-> schemas)
    if a == "dataflows" and dst != "dataflows":
        return _dataflows_rank(dst) > _dataflows_rank(src)
    return False


def test_every_import_points_down():
    bad = sorted(f"{src} -> {dst}" for src, dsts in imports().items() for dst in dsts if _upward(src, dst))
    assert not bad, "imports that point up or across a layer:\n" + "\n".join(bad)


def _real_modules(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges between modules only (``from pkg import name`` names a module when one exists)."""
    known = set(graph)
    return {m: {d for d in dsts if d in known and d != m and not m.startswith(d + ".")} for m, dsts in graph.items()}


def test_no_import_circles():
    graph = _real_modules(imports())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_check_sees_an_upward_import():
    """The contract can fail: a lower layer naming a higher one is caught."""
    assert _upward("state.fold", "projection.keys") and _upward("dataflows.kafka.sink", "dataflows.decode")
    assert _upward("serving.store", "dataflows.flow") and _upward("core.config", "state.limits")
    assert not _upward("dataflows.runtime.run", "dataflows.kafka.admin") and not _upward("atp.cli", "loadtest.chaos.run")
