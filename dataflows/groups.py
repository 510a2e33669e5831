"""The group step: each member position goes to its groups' keys (``sku@GROUP``), and each group
key emits its summed position once per batch when a member moved.

Member positions can arrive more than once (at-least-once after a restart) or, from different
workers, in any order: a member is replaced only by a higher version.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from bytewax.operators import StatefulBatchLogic

from dataflows.republish import REPUBLISH
from state.groups import GroupPosition, Groups, group_position
from state.position import Position

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


Member = tuple[str, Position]  # (the group, a member's position)
Snapshot = tuple[str, dict[str, Position]]


class ToGroups:
    """Callable for ``flat_map_batch``: (``sku@GROUP``, (group, position)) for each group of each
    position; nothing when no groups are configured."""

    def __init__(self, groups: Groups) -> None:
        self._groups = groups

    def __call__(self, batch: list[Position]) -> list[tuple[str, Member]]:
        if not self._groups:
            return []
        of = self._groups.of_location
        return [(f"{p.sku}@{g}", (g, p)) for p in batch for g in of(p.location)]


class GroupLogic(StatefulBatchLogic[Member, GroupPosition, Snapshot]):
    """One SKU in one group: its members' newest positions."""

    def __init__(self, resume: Snapshot | None, clock: Callable[[], float] = time.time) -> None:
        self.group, members = resume if resume is not None else ("", {})
        self.members: dict[str, Position] = dict(members)
        self._clock = clock
        # A lost keyspace is re-published: a resumed group writes its position at once.
        self._republish = REPUBLISH.active and bool(self.members)

    def on_batch(self, values: list[Member]) -> tuple[list[GroupPosition], bool]:
        changed = False
        members = self.members
        for group, p in values:
            self.group = group
            cur = members.get(p.location)
            if cur is None or p.version > cur.version:
                members[p.location] = p
                changed = True
        return (self._emit() if changed else []), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return _EPOCH if self._republish else None

    def on_notify(self) -> tuple[list[GroupPosition], bool]:
        self._republish = False
        return self._emit(), StatefulBatchLogic.RETAIN

    def _emit(self) -> list[GroupPosition]:
        sku = next(iter(self.members.values())).sku
        return [group_position(sku, self.group, self.members, int(self._clock() * 1000))]

    def snapshot(self) -> Snapshot:
        return self.group, dict(self.members)  # positions are frozen; the dict is copied
