"""Location groups (network ATP): a group's position per SKU is the sum of its members' positions.

A group is configured (``ATP_LOCATION_GROUPS``, e.g. ``EAST = ["DC-01", "DC-02"]``); a location may
be in several groups. The group keeps its members' newest positions (by version) and sums them:
its version is the sum of theirs, so it only grows, and a replay gives the same group versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import final

from state.position import FIELDS, Position, rates


@dataclass(frozen=True)
class Groups:
    """Which groups each location belongs to."""

    members: Mapping[str, tuple[str, ...]]  # group -> its locations
    _of_location: Mapping[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)  # location -> its groups

    @classmethod
    def of(cls, config: Mapping[str, list[str]]) -> Groups:
        return cls({g: tuple(locs) for g, locs in config.items()})

    def __post_init__(self) -> None:
        of_location: dict[str, list[str]] = {}
        for group, locations in self.members.items():
            for loc in locations:
                of_location.setdefault(loc, []).append(group)
        object.__setattr__(self, "_of_location", {loc: tuple(gs) for loc, gs in of_location.items()})

    def of_location(self, location: str) -> tuple[str, ...]:
        return self._of_location.get(location, ())

    def __bool__(self) -> bool:
        return bool(self.members)


@final
@dataclass(frozen=True, slots=True)
class GroupPosition:
    """One SKU's position in a group: ``position.location`` is the group's name."""

    group: str
    position: Position
    members: tuple[tuple[str, int], ...]  # (location, version) of each member position summed

    @property
    def key(self) -> str:
        return self.position.key


def group_position(sku: str, group: str, members: Mapping[str, Position], now_ms: int) -> GroupPosition:
    """Sum the members' newest positions."""
    ps = list(members.values())
    sums = {f: sum(getattr(p, f) for p in ps) for f in FIELDS}
    d5 = sum(p.demand_per_min_5m for p in ps)
    d60 = sum(p.demand_per_min_60m for p in ps)
    r5, r60, eta = rates(sums["atp"], d5, d60)
    pos = Position(
        sku=sku, location=group, **sums,
        version=sum(p.version for p in ps), as_of=max(p.as_of for p in ps), updated_at=now_ms,
        formula_version=max(p.formula_version for p in ps),
        demand_per_min_5m=r5, demand_per_min_60m=r60, stockout_eta_minutes=eta,
    )
    return GroupPosition(group, pos, tuple(sorted((loc, p.version) for loc, p in members.items())))
