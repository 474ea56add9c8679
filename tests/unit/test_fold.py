"""Folding a batch's events per object: what the engine applies as one change."""

from __future__ import annotations

from typing import Any

from streamsync.contract.envelope import Event, Op, RejectCode
from streamsync.models import builtin_model
from streamsync.sync.batch import fold
from streamsync.sync.registry import ModelRegistry


def _event(op: Op, vid: int, source: str = "ipam", model: str = "vlan", **attrs: Any) -> Event:
    return Event(source=source, model=model, op=op, key={"vid": vid, "vlan_group__name": "dc1"}, attrs=attrs)


def test_upserts_of_one_object_merge_later_attributes_winning() -> None:
    registry = ModelRegistry([builtin_model("vlan")])
    first = _event(Op.UPSERT, 10, name="a", description="one")
    second = _event(Op.UPSERT, 10, description="two")
    changes, rejected = fold([first, second], registry, "ipam")
    assert not rejected
    [change] = changes.values()
    assert (change.op, change.attrs, change.events) == (Op.UPSERT, {"name": "a", "description": "two"}, [first, second])


def test_events_of_another_source_or_model_are_rejected_with_their_codes() -> None:
    registry = ModelRegistry([builtin_model("vlan")])
    other_source = _event(Op.UPSERT, 11, source="cmdb", name="x")
    unknown_model = _event(Op.UPSERT, 12, model="prefix", name="x")
    changes, rejected = fold([other_source, unknown_model, _event(Op.DELETE, 13)], registry, "ipam")
    assert [(r.event, r.code) for r in rejected] == [
        (other_source, RejectCode.WRONG_SOURCE),
        (unknown_model, RejectCode.UNKNOWN_MODEL),
    ]
    assert [c.op for c in changes.values()] == [Op.DELETE]


def test_two_spellings_of_one_address_are_one_object() -> None:
    registry = ModelRegistry([builtin_model("ipaddress")])

    def upsert(host: str, description: str) -> Event:
        key: dict[str, str | int | None] = {"host": host, "mask_length": 64, "parent__namespace__name": "Global"}
        return Event(source="ipam", model="ipaddress", op=Op.UPSERT, key=key, attrs={"description": description})

    changes, _ = fold([upsert("2001:DB8::1", "upper"), upsert("2001:db8::1", "lower")], registry, "ipam")
    assert [c.attrs["description"] for c in changes.values()] == ["lower"]
