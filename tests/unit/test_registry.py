"""The gate between events and Nautobot: only registered models and declared fields pass."""

from __future__ import annotations

import pytest

from streamsync.contract.envelope import Event, Op, RejectCode
from streamsync.models.ipam import VLANModel
from streamsync.sync.registry import ModelRegistry, RejectedEvent


def _event(**overrides: object) -> Event:
    fields: dict[str, object] = {
        "source": "ipam",
        "model": "vlan",
        "op": Op.UPSERT,
        "key": {"vid": 100, "vlan_group__name": "dc1"},
        "attrs": {"name": "users"},
    }
    fields.update(overrides)
    return Event.model_validate(fields)


def test_split_returns_identifiers_and_only_the_named_attributes() -> None:
    model, ids, attrs = ModelRegistry([VLANModel]).split(_event())
    assert model is VLANModel
    assert ids == {"vid": 100, "vlan_group__name": "dc1"}
    assert attrs == {"name": "users"}


@pytest.mark.parametrize(
    ("overrides", "code", "reason"),
    [
        ({"model": "nope"}, RejectCode.UNKNOWN_MODEL, "unknown model 'nope'"),
        ({"key": {"vid": 100}}, RejectCode.BAD_KEY, "missing identifier(s) ['vlan_group__name']"),
        (
            {"key": {"vid": 100, "vlan_group__name": "dc1", "site": "x"}},
            RejectCode.BAD_KEY,
            "unknown identifier(s) ['site']",
        ),
        ({"attrs": {"colour": "x"}}, RejectCode.UNDECLARED_ATTRIBUTE, "undeclared attribute(s) ['colour']"),
        ({"key": {"vid": "100", "vlan_group__name": "dc1"}}, RejectCode.WRONG_TYPE, "vlan.vid: "),
        ({"attrs": {"name": ["a"]}}, RejectCode.WRONG_TYPE, "vlan.name: "),
    ],
)
def test_split_rejects_what_the_model_does_not_declare(
    overrides: dict[str, object], code: RejectCode, reason: str
) -> None:
    with pytest.raises(RejectedEvent) as error:
        ModelRegistry([VLANModel]).split(_event(**overrides))
    assert error.value.code is code
    assert reason in error.value.reason


def test_fold_merges_upserts_and_lets_a_delete_win() -> None:
    from streamsync.sync.batch import fold

    registry = ModelRegistry([VLANModel])
    changes, rejected = fold(
        [
            _event(attrs={"name": "users", "description": "a"}),
            _event(attrs={"description": "b"}),
            _event(key={"vid": 200, "vlan_group__name": "dc1"}),
            _event(key={"vid": 200, "vlan_group__name": "dc1"}, op=Op.DELETE, attrs={}),
            _event(key={"vid": 300, "vlan_group__name": "dc1"}, op=Op.DELETE, attrs={}),
            _event(key={"vid": 300, "vlan_group__name": "dc1"}, attrs={"name": "new"}),
            _event(model="nope"),
        ],
        registry,
    )
    assert [(r.code, r.reason) for r in rejected] == [
        (RejectCode.UNKNOWN_MODEL, "unknown model 'nope'; this source accepts ['vlan']")
    ]
    by_vid = {c.ids["vid"]: c for c in changes.values()}
    assert (by_vid[100].op, by_vid[100].attrs, by_vid[100].recreated) == (
        Op.UPSERT,
        {"name": "users", "description": "b"},
        False,
    )
    assert by_vid[200].op is Op.DELETE
    assert (by_vid[300].op, by_vid[300].attrs, by_vid[300].recreated) == (Op.UPSERT, {"name": "new"}, True)
    assert len(by_vid[100].events) == 2


def test_shapes_are_the_field_sets_other_models_look_an_object_up_by() -> None:
    """What a waiting create's lookup of its parent looks like, so that a write of the parent can be matched to it."""
    from streamsync.models.dcim import DeviceModel, InterfaceModel, LocationModel

    registry = ModelRegistry([LocationModel, DeviceModel, InterfaceModel])
    assert registry.shapes(DeviceModel) == {("name",)}  # an interface's `device__name`
    assert registry.shapes(InterfaceModel) == set()  # nothing registered names an interface
    assert ("name",) in registry.shapes(LocationModel)  # a device's `location__name`, a location's `parent__name`
