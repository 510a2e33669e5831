"""Shared dependencies as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serving.store import PositionStore


async def get_store(request: Request) -> PositionStore:
    return request.app.state.store  # type: ignore[no-any-return]


StoreDep = Annotated[PositionStore, Depends(get_store)]


async def get_groups(request: Request) -> dict[str, list[str]]:
    return request.app.state.groups  # type: ignore[no-any-return]


GroupsDep = Annotated[dict[str, list[str]], Depends(get_groups)]
