"""Drift and oversold alerts: the latest per key, newest first, and one key's."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from projection.codec import Unreadable
from serving.deps import KeyDep, StoreDep
from serving.errors import ERROR_RESPONSES, ApiError
from serving.models import ID_PATTERN, AlertList, DriftAlert, KeyAlerts, UnreadableAlert, parse_alert
from serving.routes.availability import (
    GENERATION_HEADER,
    GenerationQuery,
    LocationPath,
    SkuPath,
    check_location,
)
from state.drift import SEVERITIES

router = APIRouter(prefix="/v1/drift", tags=["drift"], responses=ERROR_RESPONSES)


@router.get("", response_model=AlertList, summary="The latest alert of each key, newest as_of first")
async def list_alerts(
    store: StoreDep, response: Response, key: KeyDep,
    location: Annotated[str | None, Query(pattern=ID_PATTERN, description="Only this location")] = None,
    min_severity: Annotated[Literal["warning", "critical"], Query(description="warning: all; critical: critical only")] = "warning",
    kind: Annotated[Literal["DRIFT", "OVERSOLD"] | None, Query(description="Only this kind")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    generation: GenerationQuery = None,
) -> AlertList:
    """With an API key limited to some locations, only theirs (a location outside them is refused)."""
    if location is not None:
        check_location(key, location)
    floor = SEVERITIES.index(min_severity)

    def accept(alert: DriftAlert) -> bool:
        return (SEVERITIES.index(alert.severity) >= floor and (kind is None or alert.kind == kind)
                and (key is None or key.sees(alert.location)))

    read, bad = await store.recent_alerts(location, parse_alert, accept, limit, generation)
    if key is not None and key.locations is not None:  # an entry of another location is not this key's to see
        bad = [(m, u) for m, u in bad if key.sees(str(m).rpartition("@")[2])]
    response.headers[GENERATION_HEADER] = read.generation
    return AlertList(alerts=read.results, unreadable=[UnreadableAlert(entry=m, message=u.reason) for m, u in bad])


@router.get("/{sku}/{location}", response_model=KeyAlerts, summary="The latest DRIFT and OVERSOLD alert of one key")
async def key_alerts(sku: SkuPath, location: LocationPath, store: StoreDep, response: Response, key: KeyDep,
                     generation: GenerationQuery = None) -> KeyAlerts:
    check_location(key, location)
    read = await store.alerts_of_key(sku, location, parse_alert, generation)
    response.headers[GENERATION_HEADER] = read.generation
    if not read.results:
        raise ApiError(404, "not_found", f"no alert for {sku}@{location}")
    return KeyAlerts(sku=sku, location=location,
                     alerts=[a for _, a in read.results if not isinstance(a, Unreadable)],
                     unreadable=[UnreadableAlert(entry=k, message=a.reason)
                                 for k, a in read.results if isinstance(a, Unreadable)])
