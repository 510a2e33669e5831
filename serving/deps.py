"""Shared dependencies as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serving.auth import ApiKey
from serving.auth.middleware import key_of
from serving.store import PositionStore


async def get_store(request: Request) -> PositionStore:
    store: PositionStore = request.app.state.store
    return store


StoreDep = Annotated[PositionStore, Depends(get_store)]


async def get_groups(request: Request) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = request.app.state.groups
    return groups


GroupsDep = Annotated[dict[str, list[str]], Depends(get_groups)]


async def get_key(request: Request) -> ApiKey | None:
    """The caller's API key (None when auth is disabled)."""
    return key_of(request.scope)


KeyDep = Annotated[ApiKey | None, Depends(get_key)]
