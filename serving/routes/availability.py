"""Availability reads: one key, one SKU across locations, and batches."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from projection.codec import MAX_SAFE_INT, Unreadable
from projection.keys import GENERATION_PATTERN
from serving.auth import ApiKey
from serving.deps import GroupsDep, KeyDep, StoreDep
from serving.errors import BODY_ERROR_RESPONSES, ERROR_RESPONSES, ApiError, unreadable
from serving.models import (
    ID_PATTERN,
    Availability,
    Explanation,
    GroupAvailability,
    LineageEntry,
    Quantities,
    QueryRequest,
    QueryResponse,
    SkuAvailability,
    UnreadableLocation,
    fields_of,
)
from serving.store import PositionStore
from state.position import FIELDS, network_total

router = APIRouter(prefix="/v1/availability", tags=["availability"], responses=ERROR_RESPONSES)

SkuPath = Annotated[str, Path(pattern=ID_PATTERN, description="Item id")]
LocationPath = Annotated[str, Path(pattern=ID_PATTERN, description="Location id")]
GenerationQuery = Annotated[str | None, Query(
    pattern=GENERATION_PATTERN,
    description="Read a named generation (e.g. a point-in-time rebuild) instead of the current one")]
GENERATION_HEADER = "ATP-Generation"  # which generation answered


def now_ms() -> int:
    return int(time.time() * 1000)


def forbidden(what: str) -> ApiError:
    """The 403 of a location or group the caller's key may not read (whether it exists or not)."""
    return ApiError(403, "forbidden", f"this API key may not read {what}")


def check_location(key: ApiKey | None, location: str) -> None:
    if key is not None and not key.sees(location):
        raise forbidden(f"location {location}")


@router.get("/{sku}/{location}", response_model=Availability, summary="ATP of one item at one location")
async def get_position(sku: SkuPath, location: LocationPath, store: StoreDep, response: Response, key: KeyDep,
                       generation: GenerationQuery = None) -> Availability:
    check_location(key, location)
    read = await (store.get_one(sku, location) if generation is None else store.get_many([(sku, location)], generation))
    response.headers[GENERATION_HEADER] = read.generation
    stored = read.results[0]
    if stored is None:
        raise ApiError(404, "not_found", f"no position for {sku}@{location}")
    if isinstance(stored, Unreadable):
        raise unreadable(f"{sku}@{location}", stored, {"sku": sku, "location": location})
    return Availability.from_stored(stored, now_ms(), read.watermark)


@router.get("/{sku}/{location}/explain", response_model=Explanation,
            summary="The position of one item at one location and the changes behind it, newest first")
async def explain(sku: SkuPath, location: LocationPath, store: StoreDep, response: Response, key: KeyDep,
                  generation: GenerationQuery = None) -> Explanation:
    check_location(key, location)
    read = await store.explain(sku, location, generation)
    response.headers[GENERATION_HEADER] = read.generation
    stored, lineage = read.results
    if stored is None:
        raise ApiError(404, "not_found", f"no position for {sku}@{location}")
    for part in (stored, lineage):
        if isinstance(part, Unreadable):
            raise unreadable(f"{sku}@{location}", part, {"sku": sku, "location": location})
    return Explanation(position=Availability.from_stored(stored, now_ms(), read.watermark),
                       changes=[LineageEntry.from_stored(e) for e in lineage])


GroupQuery = Annotated[str | None, Query(
    pattern=ID_PATTERN, description="A configured location group (ATP_LOCATION_GROUPS): its members and its sums")]


@router.get("/{sku}", response_model=SkuAvailability,
            summary="ATP of one item at every location (or a group's), with totals")
async def get_sku(sku: SkuPath, store: StoreDep, groups: GroupsDep, response: Response, key: KeyDep,
                  generation: GenerationQuery = None, group: GroupQuery = None) -> SkuAvailability:
    if group is not None:
        return await _get_group(sku, group, store, groups, response, generation, key)
    read = await store.for_sku(sku, generation)
    response.headers[GENERATION_HEADER] = read.generation
    results = read.results if key is None or key.locations is None else [
        (loc, p) for loc, p in read.results if key.sees(loc)]
    if not results:
        raise ApiError(404, "not_found", f"no positions for {sku}")
    stored = [p for _, p in results if not isinstance(p, Unreadable)]
    total = network_total(stored)
    if any(abs(v) > MAX_SAFE_INT for v in total.values()):  # only stored figures near 2**53 can sum so far
        raise unreadable(f"{sku} (network total)", Unreadable("a network total is beyond 2**53 - 1 in magnitude"),
                         {"sku": sku})
    now = now_ms()
    return SkuAvailability(
        sku=sku,
        locations=[Availability.from_stored(s, now, read.watermark) for s in stored],
        total=Quantities(**total),
        unreadable=_unreadable(results),
        restricted_to=None if key is None or key.locations is None else sorted(key.locations),
    )


def _unreadable(located: list[tuple[str, object]]) -> list[UnreadableLocation]:
    return [UnreadableLocation(location=loc, message=p.reason) for loc, p in located if isinstance(p, Unreadable)]


async def _get_group(sku: str, group: str, store: PositionStore, groups: dict[str, list[str]], response: Response,
                     generation: str | None, key: ApiKey | None) -> SkuAvailability:
    members = groups.get(group)
    if key is not None and not key.sees_group(group, members or []):
        raise forbidden(f"group {group}")
    if members is None:
        limited = key is not None and (key.locations is not None or key.groups is not None)
        known = "" if limited else f" (groups: {', '.join(sorted(groups)) or 'none configured'})"  # not to a partner
        raise ApiError(404, "unknown_group", f"no location group {group!r}{known}")
    read = await store.for_group(sku, group, members, generation)
    response.headers[GENERATION_HEADER] = read.generation
    stored, *positions = read.results
    if stored is None:
        raise ApiError(404, "not_found", f"no position for {sku} in group {group}")
    now = now_ms()
    try:
        if isinstance(stored, Unreadable):
            raise stored
        summed = GroupAvailability.from_group(stored, now, read.watermark)
    except Unreadable as exc:
        raise unreadable(f"{sku} in group {group}", exc, {"sku": sku, "group": group}) from None
    # A key named for the group (--groups) reads its sums, but member positions only at its own locations.
    located = [(loc, p) for loc, p in zip(members, positions) if p is not None and (key is None or key.sees(loc))]
    return SkuAvailability(
        sku=sku,
        locations=[Availability.from_stored(p, now, read.watermark) for _, p in located if not isinstance(p, Unreadable)],
        total=Quantities(**{f: stored[f] for f in FIELDS}),
        group=summed,
        unreadable=_unreadable(located),
        restricted_to=None if key is None or key.locations is None else sorted(key.locations),
    )


@router.post("/query", response_model=QueryResponse, summary="Up to 1000 keys in one request, in request order",
             responses=BODY_ERROR_RESPONSES)
async def query(request: QueryRequest, store: StoreDep, response: Response, key: KeyDep, http: Request,
                generation: GenerationQuery = None) -> QueryResponse:
    """A batch costs its number of items against the key's rate (the request itself paid for one)."""
    http.scope["atp.items"] = len(request.items)
    if key is not None and len(request.items) > 1:
        await charge(http, key, len(request.items) - 1)
    pairs = [(i.sku, i.location) for i in request.items]
    read = await store.get_many(pairs, generation)
    response.headers[GENERATION_HEADER] = read.generation
    found = read.results
    now = now_ms()
    # Validated in one call (the models' per-instance constructor calls were most of a batch's CPU).
    return QueryResponse.model_validate({"results": [
        {"sku": sku, "location": loc, "found": False, "availability": None,
         "error": {"code": "forbidden", "message": f"this API key may not read location {loc}"}}
        if key is not None and not key.sees(loc) else  # first: what is stored there is not this key's to learn
        {"sku": sku, "location": loc, "found": False, "availability": None,
         "error": {"code": "position_unreadable", "message": f"the stored position cannot be served: {s.reason}"}}
        if isinstance(s, Unreadable) else
        {"sku": sku, "location": loc, "found": s is not None, "availability": None if s is None else fields_of(s, now, read.watermark)}
        for (sku, loc), s in zip(pairs, found)
    ]})


async def charge(http: Request, key: ApiKey, cost: int) -> None:
    """Takes ``cost`` more requests from the key's bucket, or answers 429."""
    limiter = http.app.state.limiter
    if limiter is None or key.rate <= 0:
        return
    if cost + 1 > key.burst:
        raise ApiError(429, "batch_over_burst", f"this batch costs {cost + 1} requests, more than this key's "
                       f"burst ({key.burst:g}): split it into batches of at most {int(key.burst)} items",
                       {"cost": cost + 1, "burst": key.burst})
    verdict = await limiter.take(key, cost)
    if verdict is not None and not verdict.allowed:
        raise ApiError(429, "rate_limited", f"this batch costs {cost + 1} requests; more than {key.rate:g} per "
                       f"second (burst {key.burst:g}) for this key", {"rate_per_s": key.rate, "burst": key.burst},
                       headers={k.decode().title(): v.decode() for k, v in verdict.headers()})
