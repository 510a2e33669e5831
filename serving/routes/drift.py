"""Drift and oversold alerts: the latest per key, newest first, and one key's."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from serving.deps import StoreDep
from serving.errors import ERROR_RESPONSES, ApiError
from serving.models import ID_PATTERN, AlertList, DriftAlert, KeyAlerts
from serving.routes.availability import (
    GENERATION_HEADER,
    GenerationQuery,
    LocationPath,
    SkuPath,
)
from state.drift import SEVERITIES

router = APIRouter(prefix="/v1/drift", tags=["drift"], responses=ERROR_RESPONSES)


@router.get("", response_model=AlertList, summary="The latest alert of each key, newest as_of first")
async def list_alerts(
    store: StoreDep, response: Response,
    location: Annotated[str | None, Query(pattern=ID_PATTERN, description="Only this location")] = None,
    min_severity: Annotated[Literal["warning", "critical"], Query(description="warning: all; critical: critical only")] = "warning",
    kind: Annotated[Literal["DRIFT", "OVERSOLD"] | None, Query(description="Only this kind")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    generation: GenerationQuery = None,
) -> AlertList:
    floor = SEVERITIES.index(min_severity)

    def accept(alert: dict[str, Any]) -> bool:
        return SEVERITIES.index(alert["severity"]) >= floor and (kind is None or alert["kind"] == kind)

    read = await store.recent_alerts(location, accept, limit, generation)
    response.headers[GENERATION_HEADER] = read.generation
    return AlertList(alerts=[DriftAlert.from_stored(a) for a in read.results])


@router.get("/{sku}/{location}", response_model=KeyAlerts, summary="The latest DRIFT and OVERSOLD alert of one key")
async def key_alerts(sku: SkuPath, location: LocationPath, store: StoreDep, response: Response,
                     generation: GenerationQuery = None) -> KeyAlerts:
    read = await store.alerts_of_key(sku, location, generation)
    response.headers[GENERATION_HEADER] = read.generation
    if not read.results:
        raise ApiError(404, "not_found", f"no alert for {sku}@{location}")
    return KeyAlerts(sku=sku, location=location, alerts=[DriftAlert.from_stored(a) for a in read.results])
