"""The lineage list's entries: written compactly by the sink, read back by the API newest first."""

from __future__ import annotations

import pytest

from projection.codec import LINEAGE_SIZE, RS, Unreadable, lineage_arg, read_lineage
from state.fold import CONTROL, DELTA, SET_ON_HAND

T0 = 1_767_225_600_000


def _entries():
    return [
        (T0 + 2000, 3, DELTA, -5, 0, "s1", "SHIP", "wms-east", "c-ship"),
        (T0 + 1000, 4, SET_ON_HAND, 30, 0, "snap-1", "SNAPSHOT", "wms", None),  # a rebase, applied later
        (T0 + 3000, 5, CONTROL, 3, 0, "ctl-1", "SAFETY_STOCK_SET", "", "c-ctl"),
    ]


def test_entries_round_trip_newest_first():
    arg = lineage_arg(_entries())
    got = read_lineage(reversed(arg.encode().split(RS.encode())))  # as LRANGE answers: bytes, newest pushed first
    assert [(e["event_id"], e["change"], e["quantity"], e["source"], e["correlation_id"], e["version"])
            for e in got] == [("ctl-1", "control", 3, None, "c-ctl", 5), ("s1", "delta", -5, "wms-east", "c-ship", 3),
                              ("snap-1", "set_on_hand", 30, "wms", None, 4)]
    assert got[0]["effective_at"] == T0 + 3000


def test_a_write_sends_at_most_the_entries_kept():
    many = [(T0 + i, i, DELTA, 1, 0, f"e{i}", "ADJUST", "wms", None) for i in range(LINEAGE_SIZE + 5)]
    sent = lineage_arg(many).split(RS)
    assert len(sent) == LINEAGE_SIZE and sent[0].split("\x1f")[5] == "e5"
    assert lineage_arg([]) == ""


@pytest.mark.parametrize("raw, says", [
    ([b"1\x1f2\x1f0"], "has 3 fields, expected 9"),
    ([b"1\x1f2\x1f9\x1f1\x1f0\x1fe\x1fT\x1f\x1f"], "unknown kind: 9"),
    ([b"x\x1f2\x1f0\x1f1\x1f0\x1fe\x1fT\x1f\x1f"], "effective_at is not an integer"),
    ([b"\xff\xfe"], "not UTF-8"),
])
def test_an_entry_this_version_does_not_write_is_unreadable(raw, says):
    with pytest.raises(Unreadable, match=says):
        read_lineage(raw)
