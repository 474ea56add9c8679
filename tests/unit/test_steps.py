"""Cutting a batch into steps that can be applied together as if one event at a time."""

from __future__ import annotations

from typing import Any

from streamsync.contract.envelope import Event, Op
from streamsync.models.dcim import DeviceModel, InterfaceModel, LocationModel, LocationTypeModel
from streamsync.models.ipam import VLANGroupModel, VLANModel
from streamsync.sync.batch import check
from streamsync.sync.registry import ModelRegistry
from streamsync.sync.steps import Item, Relations, next_step

REGISTRY = ModelRegistry([LocationTypeModel, LocationModel, DeviceModel, InterfaceModel, VLANGroupModel, VLANModel])


def _vlan(vid: int, op: Op = Op.UPSERT, **attrs: Any) -> Event:
    return Event(source="s", model="vlan", op=op, key={"vid": vid, "vlan_group__name": "g"}, attrs=attrs)


def _items(*events: Event) -> list[Item]:
    items, rejected = check(list(events), REGISTRY)
    assert rejected == []
    return items


def _steps(items: list[Item], names: dict[int, str] | None = None, **options: Any) -> list[list[int]]:
    """The batch cut as `next_step` cuts it, as lists of event indexes.

    Two VLAN events clash when their VLANs may have one name: `names` are the VLANs' names now (by VID).
    """
    now = names or {}

    def possible(item: Item) -> set[str]:
        vid = item.ids["vid"]
        return (
            {now[vid]}
            if vid in now
            else set() | {i.attrs["name"] for i in items if i.key == item.key and "name" in i.attrs}
        )

    def clash(one: Item, other: Item) -> bool:
        if one.model is not VLANModel or one.op is other.op is Op.DELETE:
            return False
        return bool(possible(one) & possible(other))

    def named(item: Item) -> list[tuple[Any, dict[str, Any]]]:
        return REGISTRY.named(item.model, {**item.attrs, **item.ids})

    relations = Relations(REGISTRY.related, clash, named)
    out = []
    pending = items
    while pending:
        step = next_step(pending, relations, **options)
        assert step and step[0] is pending[0]
        out.append([item.index for item in step])
        pending = [item for item in pending if item not in step]
    return out


def test_upserts_and_then_deletes_are_one_step() -> None:
    items = _items(_vlan(1, name="a"), _vlan(2, name="b"), _vlan(1, name="c"), _vlan(3, Op.DELETE), _vlan(4, Op.DELETE))
    assert _steps(items) == [[0, 1, 2, 3, 4]]


def test_a_key_deleted_and_upserted_again_takes_a_step_each_time_and_the_other_keys_go_on() -> None:
    """Its upsert takes effect, the delete removes it, the next upsert creates it anew; the others fold."""
    items = _items(_vlan(1, name="a"), _vlan(1, Op.DELETE), _vlan(2, name="b"), _vlan(1, name="c"), _vlan(2, name="d"))
    assert _steps(items) == [[0, 2, 4], [1], [3]]


def test_an_upsert_that_may_want_what_a_delete_frees_waits_for_it() -> None:
    """A VLAN may take the name of one deleted before it: the delete goes first."""
    items = _items(_vlan(1, Op.DELETE), _vlan(2, name="a"), _vlan(3, name="b"))
    assert _steps(items, names={1: "a"}) == [[0, 2], [1]]
    assert _steps(items, names={1: "z"}) == [[0, 1, 2]]


def test_an_event_waits_for_an_earlier_one_of_a_related_model() -> None:
    """A VLAN upsert after its group's delete waits for it (related models), and so does a delete of another VLAN.

    The group's delete goes last in its step: the other VLAN's delete would reach it before the upsert.
    """
    delete_group = Event(source="s", model="vlangroup", op=Op.DELETE, key={"name": "g"})
    items = _items(_vlan(1, name="a"), delete_group, _vlan(1, name="b"), _vlan(2, Op.DELETE))
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
    assert _steps(items) == [[0, 1, 3], [2]]
    assert REGISTRY.named(InterfaceModel, {"name": "eth0"}) == []  # a lookup the values do not hold
    assert REGISTRY.named(InterfaceModel, {"name": "eth0", "device__name": "sw"}) == [(DeviceModel, {"name": "sw"})]
    assert REGISTRY.named(VLANModel, {"vid": 1, "vlan_group__name": "g", "name": "a"}) == [
        (VLANGroupModel, {"name": "g"})
    ]


def test_an_upsert_does_not_fold_past_another_keys_that_may_want_the_same_name() -> None:
    """VLAN 2 takes the name VLAN 1 gives up in between: folded into VLAN 2's first upsert, it would come first."""
    items = _items(_vlan(2, description="x"), _vlan(1, name="b"), _vlan(2, name="a"))
    assert _steps(items, names={1: "a"}) == [[0, 1], [2]]
    assert _steps(items, names={1: "z"}) == [[0, 1, 2]]  # no name in common: it folds


def test_an_event_that_may_let_a_waiting_key_go_on_ends_its_step() -> None:
    items = _items(_vlan(1, name="a"), _vlan(2, name="b"), _vlan(3, name="c"))
    assert _steps(items, ends_step=lambda item: item.index == 1) == [[0, 1], [2]]


def test_an_event_that_may_let_a_waiting_key_go_on_does_not_overtake_what_that_key_must_follow() -> None:
    """A device's delete may let a waiting location delete go on; a VLAN group's move onto it was left earlier.

    Unrelated to the move, the device's delete would otherwise join the step, and the location be
    tried again before the group moves onto it (and protects it).
    """
    location: dict[str, str | int | bool | None] = {"name": "eu", "parent__name": None}
    group = Event(source="s", model="vlangroup", op=Op.UPSERT, key={"name": "g"}, attrs={"location__name": "eu"})
    device = Event(source="s", model="device", op=Op.DELETE, key={"name": "sw", "location__name": "dc"})
    items = _items(Event(source="s", model="location", op=Op.DELETE, key=location), group, device)
    [waiting] = _items(Event(source="s", model="location", op=Op.DELETE, key=location))
    # Taken, the device's delete would reach the location's delete of the step before the group's move.
    assert _steps(items) == [[0], [1, 2]]

    def frees(item: Item) -> list[Item]:
        return [waiting] if item.model is DeviceModel else []

    assert _steps(items, frees=frees) == [[0], [1, 2]]
    # With nothing left for later before it, it goes on in its step.
    assert _steps(items[:1] + items[2:], frees=frees) == [[0, 2]]


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
    assert REGISTRY.related(VLANModel, LocationTypeModel) and REGISTRY.related(LocationTypeModel, VLANModel)
    assert not REGISTRY.related(VLANModel, VLANModel) and REGISTRY.related(LocationModel, LocationModel)


def test_registry_knows_which_unique_values_objects_of_different_keys_may_clash_on() -> None:
    """A VLAN's name in its group; not its VID in its group, nor a location's name under its parent: those are keys."""
    assert REGISTRY.unique(VLANModel) == [("vlan_group__name", "name")]
    assert REGISTRY.unique(LocationModel) == []
    # A device's asset tag is unique; its rack position is too, but the model does not sync it.
    assert REGISTRY.unique(DeviceModel) == [("asset_tag",)]
