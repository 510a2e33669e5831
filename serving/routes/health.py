"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

import time

import redis.exceptions
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving.deps import StoreDep
from serving.errors import ERROR_RESPONSES, ApiError
from serving.metrics import exposition

router = APIRouter(tags=["operations"])

# The dataflow's liveness in the keyspace's meta hash, written by the dataflow (``flow`` and
# ``heartbeat``, epoch ms, rewritten at least every 2 s while it runs). A meta without ``flow`` (an
# older dataflow, or a keyspace written directly) leaves readiness to the keyspace's state alone.
FLOW_STOPPED, FLOW_CRASH_LOOP = "stopped", "crash_loop"


@router.get("/healthz", summary="The process is up")
@router.head("/healthz", summary="The process is up (no body)", operation_id="healthz_head")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Redis is reachable, its keyspace complete and the dataflow alive",
            responses={503: {**ERROR_RESPONSES[503], "description": (
                "Redis unreachable (store_unavailable); the keyspace missing (keyspace_missing) or being "
                "re-published (rebuilding); the dataflow stopped (dataflow_stopped), restarting after "
                "crashes (dataflow_crash_loop) or silent for longer than ATP_READY_HEARTBEAT_S (dataflow_stale)")}})
@router.head("/readyz", summary="Readiness, as GET /readyz, without a body", operation_id="readyz_head",
             responses={503: {"description": "Not ready (see GET /readyz)"}})
async def readyz(store: StoreDep, request: Request) -> dict[str, str]:
    try:
        await store.ping()
    except redis.exceptions.RedisError as exc:
        raise ApiError(503, "store_unavailable", f"Redis unreachable: {type(exc).__name__}: {exc}",
                       headers={"Retry-After": "1"}) from None
    generation = await store.check_ready()
    flow, heartbeat = await store.liveness(generation)
    stale_after_ms = int(request.app.state.ready_heartbeat_s * 1000)
    problem = flow_problem(flow, heartbeat, int(time.time() * 1000), stale_after_ms)
    if problem is not None:
        code, message = problem
        raise ApiError(503, code, message, {"generation": generation, "flow": flow, "heartbeat": heartbeat},
                       headers={"Retry-After": "1"})
    return {"status": "ready", "generation": generation}


def flow_problem(flow: str | None, heartbeat: str | None, now_ms: int, stale_after_ms: int) -> tuple[str, str] | None:
    """Why the dataflow's liveness makes the API not ready, as (code, message), or None.

    No ``flow``: not known (readiness as before liveness was published). ``stopped`` and
    ``crash_loop`` say so. Any other value (``running``, or one a newer dataflow adds) is judged by
    the heartbeat: missing, unreadable or older than ``stale_after_ms`` is stale."""
    if flow is None:
        return None
    if flow == FLOW_STOPPED:
        return "dataflow_stopped", "the dataflow is stopped: positions are not being updated"
    if flow == FLOW_CRASH_LOOP:
        return "dataflow_crash_loop", "the dataflow keeps crashing and restarting: positions are not being updated"
    try:
        age_ms = now_ms - int(heartbeat or "")  # None: ValueError, as for any unreadable heartbeat
    except (TypeError, ValueError):
        return "dataflow_stale", f"the dataflow ({flow}) has no readable heartbeat: {heartbeat!r}"[:200]
    if age_ms > stale_after_ms:
        return "dataflow_stale", (f"the dataflow's last heartbeat is {age_ms / 1000:.1f} s old "
                                  f"(more than {stale_after_ms / 1000:g} s): it may have hung or died")
    return None


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
