"""Matching what a step wrote to what a waiting create waits for (streamsync/sync/awaits.py), without a database."""

from __future__ import annotations

from typing import Any

import pytest

from streamsync.models.dcim import DeviceModel, InterfaceModel, LocationModel
from streamsync.sync import awaits
from streamsync.sync.registry import ModelRegistry

SW1 = ("dcim.device", (("name", "sw1"),))


def test_an_upsert_of_the_awaited_object_writes_it_and_one_of_another_does_not() -> None:
    assert awaits.written(SW1, [(DeviceModel, {"name": "sw1", "location__name": "dc"})], set())
    assert not awaits.written(SW1, [(DeviceModel, {"name": "sw2", "location__name": "dc"})], set())
    assert not awaits.written(SW1, [(LocationModel, {"name": "sw1", "parent__name": None})], set())


def test_an_upsert_that_does_not_say_a_looked_up_field_may_have_written_it() -> None:
    assert awaits.written(
        ("dcim.device", (("name", "sw1"), ("tenant__name", "t"))), [(DeviceModel, {"name": "sw1"})], set()
    )


def test_a_device_or_module_created_may_have_made_an_awaited_component() -> None:
    eth0 = ("dcim.interface", (("device__name", "sw1"), ("name", "eth0")))
    assert awaits.written(eth0, [], {"dcim.device"})
    assert awaits.written(eth0, [], {"dcim.module"})
    assert not awaits.written(eth0, [], {"dcim.location"})
    assert not awaits.written(SW1, [], {"dcim.device"})  # a device is no component


def test_what_parked_rows_keep_reads_back_and_anything_else_is_not_known() -> None:
    waits = frozenset({SW1, ("dcim.location", (("name", "dc"),))})
    assert awaits.from_json(awaits.to_json(waits)) == waits
    assert awaits.to_json(None) is None and awaits.to_json(frozenset()) is None
    assert awaits.from_json(None) is None and awaits.from_json("x") is None and awaits.from_json([1]) is None


def test_a_write_is_offered_in_every_shape_other_models_look_it_up_by() -> None:
    registry = ModelRegistry([LocationModel, DeviceModel, InterfaceModel])
    lookups = awaits.lookups_of(registry, [(DeviceModel, {"name": "sw1", "location__name": "dc"})], {"dcim.device"})
    assert ["dcim.device", [["name", "sw1"]]] in lookups
    assert ["dcim.interface"] in lookups  # its components, by label alone
    assert awaits.lookups_of(registry, [(InterfaceModel, {"name": "eth0", "device__name": "sw1"})], set()) == []


def test_what_an_earlier_look_found_is_not_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The failures of one pass often name the same parent: with one `known` dict it is looked up once."""
    asked: list[dict[str, Any]] = []

    def exists(orm: Any, lookup: dict[str, Any]) -> bool:
        asked.append(lookup)
        return False

    monkeypatch.setattr(awaits, "_exists", exists)
    registry = ModelRegistry([LocationModel, DeviceModel, InterfaceModel])
    known: dict[awaits.Awaited, bool | None] = {}
    for name in ("eth0", "eth1", "eth2"):
        assert awaits.missing(registry, InterfaceModel, {"name": name, "device__name": "sw1"}, known) == {SW1}
    assert asked == [{"name": "sw1"}]
    assert known == {SW1: False}
