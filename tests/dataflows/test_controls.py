"""Safety-stock controls and location groups: the pure parts and the Bytewax adapters."""

from __future__ import annotations

import pytest

from core.config import load_settings
from core.errors import ConfigError
from dataflows.controls import LocationDirectory, skus_by_location
from dataflows.groups import GroupLogic, ToGroups
from dataflows.republish import REPUBLISH
from state.errors import InvalidEvent
from state.groups import Groups
from state.safety import SafetyStock
from tests.builders import control, parse, wms
from tests.serving.test_api import pos


def ctl(value, sku=None, t=0, event_id=None):
    return parse(control(value, sku=sku, t=t, event_id=event_id))


# -- precedence ----------------------------------------------------------------------------------

def test_the_most_specific_level_wins_and_a_control_beats_the_file_at_its_level():
    file = SafetyStock(locations={"DC-01": 2}, items={"SKU-1@DC-01": 5})
    item, loc = ctl(9, sku="SKU-1"), ctl(4)
    assert file.effective("SKU-1", "DC-01", item, loc) == 9
    assert file.effective("SKU-1", "DC-01", None, loc) == 5  # the file's item beats a location control
    assert file.effective("SKU-2", "DC-01", None, loc) == 4
    assert file.effective("SKU-2", "DC-01", None, None) == 2
    assert file.effective("SKU-2", "DC-02", None, None) == 0
    # A null control clears its level: the next one applies.
    assert file.effective("SKU-1", "DC-01", ctl(None, sku="SKU-1"), loc) == 5
    assert file.effective("SKU-2", "DC-01", None, ctl(None)) == 2


def test_controls_and_groups_are_validated_at_the_edge():
    with pytest.raises(InvalidEvent, match="safety_stock must be an integer >= 0 or null"):
        ctl(-1)
    s = load_settings({"ATP_LOCATION_GROUPS": '{"EAST": ["DC-01", "DC-02"], "ALL": "DC-01, DC-02, DC-03"}'})
    assert s.location_groups == {"EAST": ["DC-01", "DC-02"], "ALL": ["DC-01", "DC-02", "DC-03"]}
    for bad, needle in [('{"EAST": []}', "needs a list of locations"), ('{"EAST": ["DC 1"]}', "not location ids"),
                        ('{"E@ST": ["DC-01"]}', "is not an id"), ('{"EAST": ["DC-01", "DC-01"]}', "twice"),
                        ("EAST=DC-01", "not JSON")]:
        with pytest.raises(ConfigError, match=needle) as info:
            load_settings({"ATP_LOCATION_GROUPS": bad})
        assert "ATP_LOCATION_GROUPS" in str(info.value)


# -- the location directory ------------------------------------------------------------------------

def test_the_directory_hands_every_location_control_to_every_key_including_later_ones():
    d = LocationDirectory("controls", None)
    keys = [k for k, _ in skus_by_location([("SKU-1@DC-01", parse(wms("RECEIPT", qty=1)))])]
    assert keys == ["DC-01"]
    out, _ = d.on_batch([{"SKU-1", "SKU-2"}])
    assert out == []
    first = ctl(3, t=5, event_id="c1")
    out, _ = d.on_batch([first, ctl(9, t=1, event_id="c2")])
    assert sorted((k, c.event_id, c.sku, c.location_wide) for k, c in out) == [
        ("SKU-1@DC-01", "c1", "SKU-1", True), ("SKU-1@DC-01", "c2", "SKU-1", True),
        ("SKU-2@DC-01", "c1", "SKU-2", True), ("SKU-2@DC-01", "c2", "SKU-2", True)]
    snap = d.snapshot()
    out, _ = d.on_batch([{"SKU-2"}, first])  # nothing new: no copies, and the snapshot is reused
    assert out == [] and d.snapshot() is snap
    out, _ = d.on_batch([{"SKU-2", "SKU-3"}])  # a new key gets every control so far
    assert sorted((k, c.event_id) for k, c in out) == [("SKU-3@DC-01", "c1"), ("SKU-3@DC-01", "c2")]
    resumed = LocationDirectory("controls", d.snapshot())
    assert resumed.skus == {"SKU-1", "SKU-2", "SKU-3"} and set(resumed.controls) == {"c1", "c2"}
    assert d.snapshot() is not snap and snap[0] == {"SKU-1", "SKU-2"}  # an earlier snapshot never changes


# -- groups ----------------------------------------------------------------------------------------

def test_a_group_keeps_each_members_newest_version_and_sums_once_per_batch():
    groups = Groups.of({"EAST": ["DC-01", "DC-02"], "ALL": ["DC-01", "DC-02", "DC-03"]})
    to = ToGroups(groups)
    a, b = pos(location="DC-01", version=3, available=10, reserved=2), pos(location="DC-02", version=2, available=5)
    assert to([a, pos(location="DC-03")])[:2] == [("SKU-1@EAST", ("EAST", a)), ("SKU-1@ALL", ("ALL", a))]
    assert ToGroups(Groups({}))([a]) == []
    g = GroupLogic(None, clock=lambda: 1.0)
    out, _ = g.on_batch([("EAST", a), ("EAST", b)])
    assert len(out) == 1
    got = out[0].position
    assert (got.location, got.version, got.atp, got.available_qty, got.updated_at) == ("EAST", 5, 11, 15, 1000)
    out, _ = g.on_batch([("EAST", pos(location="DC-01", version=2, available=99))])  # older: ignored
    assert out == []
    out, _ = g.on_batch([("EAST", pos(location="DC-01", version=4, available=1, reserved=0))])
    assert (out[0].position.version, out[0].position.atp, out[0].members) == (6, 4, (("DC-01", 4), ("DC-02", 2)))


def test_a_resumed_group_republishes_at_once_when_the_keyspace_was_lost():
    g = GroupLogic(None)
    g.on_batch([("EAST", pos(location="DC-01", version=3))])
    assert GroupLogic(g.snapshot()).notify_at() is None
    REPUBLISH.reset(active=True)
    try:
        resumed = GroupLogic(g.snapshot())
        assert resumed.notify_at() is not None
        out, _ = resumed.on_notify()
        assert [(o.group, o.position.version) for o in out] == [("EAST", 3)] and resumed.notify_at() is None
    finally:
        REPUBLISH.reset(active=False)
