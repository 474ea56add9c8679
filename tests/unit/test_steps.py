"""Cutting a batch into steps that can be applied together as if one event at a time."""

from __future__ import annotations

from typing import Any

from streamsync.engine import check
from streamsync.envelope import Event, Op
from streamsync.models.dcim import DeviceModel, InterfaceModel, LocationModel, LocationTypeModel
from streamsync.models.ipam import VLANGroupModel, VLANModel
from streamsync.registry import ModelRegistry
from streamsync.steps import Item, next_step

REGISTRY = ModelRegistry([LocationTypeModel, LocationModel, DeviceModel, InterfaceModel, VLANGroupModel, VLANModel])


def _vlan(vid: int, op: Op = Op.UPSERT, **attrs: Any) -> Event:
    return Event(source="s", model="vlan", op=op, key={"vid": vid, "vlan_group__name": "g"}, attrs=attrs)


def _items(*events: Event) -> list[Item]:
    items, rejected = check(list(events), REGISTRY)
    assert rejected == []
    return items


def _steps(items: list[Item], **options: Any) -> list[list[int]]:
    """The batch cut as `next_step` cuts it, as lists of event indexes."""
    out = []
    while items:
        count = next_step(items, lambda item: REGISTRY.named(item.model, {**item.attrs, **item.ids}), **options)
        assert count >= 1
        out.append([item.index for item in items[:count]])
        items = items[count:]
    return out


def test_upserts_and_then_deletes_are_one_step() -> None:
    items = _items(_vlan(1, name="a"), _vlan(2, name="b"), _vlan(1, name="c"), _vlan(3, Op.DELETE), _vlan(4, Op.DELETE))
    assert _steps(items) == [[0, 1, 2, 3, 4]]


def test_an_upsert_after_a_delete_starts_a_step() -> None:
    """Whatever the keys: the upsert may need what the delete removes (a unique name, a parent)."""
    items = _items(_vlan(1, Op.DELETE), _vlan(2, name="a"), _vlan(1, name="a"), _vlan(1, Op.DELETE))
    assert _steps(items) == [[0], [1, 2], [3]]


def test_a_delete_of_a_key_the_step_upserts_starts_a_step() -> None:
    items = _items(_vlan(1, name="a"), _vlan(2, Op.DELETE), _vlan(1, Op.DELETE), _vlan(2, Op.DELETE))
    assert _steps(items) == [[0, 1], [2, 3]]


def test_an_upsert_of_an_object_that_an_earlier_upsert_names_starts_a_step() -> None:
    """Moved before the upsert that names it, a parent changes what that upsert sees.

    A new device makes its type's interfaces; a VLAN group's new range is checked against the VLANs there.
    """

    def interface(name: str, device: str, **attrs: Any) -> Event:
        return Event(
            source="s", model="interface", op=Op.UPSERT, key={"name": name, "device__name": device}, attrs=attrs
        )

    def device(name: str, **attrs: Any) -> Event:
        return Event(source="s", model="device", op=Op.UPSERT, key={"name": name, "location__name": "dc"}, attrs=attrs)

    def group(name: str) -> Event:
        return Event(source="s", model="vlangroup", op=Op.UPSERT, key={"name": name}, attrs={"range": "1-100"})

    # Neither the VLAN nor the device `other` is what the interface names; the device `sw` is.
    items = _items(interface("eth0", "sw"), _vlan(1, name="a"), device("other"), interface("eth1", "sw"), device("sw"))
    assert _steps(items) == [[0, 1, 2, 3], [4]]
    # Names in attributes count too, and a parent before its children is one step.
    items = _items(group("h"), _vlan(1, name="a"), group("g"), group("h"))
    assert _steps(items) == [[0, 1], [2, 3]]
    assert REGISTRY.named(InterfaceModel, {"name": "eth0"}) == []  # a lookup the values do not hold
    assert REGISTRY.named(InterfaceModel, {"name": "eth0", "device__name": "sw"}) == [(DeviceModel, {"name": "sw"})]
    assert REGISTRY.named(VLANModel, {"vid": 1, "vlan_group__name": "g", "name": "a"}) == [
        (VLANGroupModel, {"name": "g"})
    ]


def test_an_event_that_may_let_a_waiting_key_go_on_ends_its_step() -> None:
    items = _items(_vlan(1, name="a"), _vlan(2, name="b"), _vlan(3, name="c"))
    assert _steps(items, ends_step=lambda item: item.index == 1) == [[0, 1], [2]]


def test_registry_knows_which_models_refer_to_which() -> None:
    """Through every foreign key, synced or not: an interface's LAG (itself) and untagged VLAN count too."""
    assert REGISTRY.ancestors(InterfaceModel) == {
        InterfaceModel,
        DeviceModel,
        LocationModel,
        LocationTypeModel,
        VLANModel,
        VLANGroupModel,
    }
    assert REGISTRY.descendants(VLANGroupModel) == {VLANModel, InterfaceModel}
    # A location refers to its parent location: it is its own ancestor and descendant.
    assert LocationModel in REGISTRY.ancestors(LocationModel)
    assert REGISTRY.descendants(LocationModel) == {
        LocationModel,
        DeviceModel,
        InterfaceModel,
        VLANGroupModel,
        VLANModel,
    }
    assert REGISTRY.ancestors(VLANModel) == {VLANGroupModel, LocationModel, LocationTypeModel}
