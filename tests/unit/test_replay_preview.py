"""Which records of a replayed stretch are deletes a worker would apply, and how the cascade is put in words."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace
from typing import Any

from streamsync.contract.envelope import canonical_key
from streamsync.models.ipam import VLANModel
from streamsync.ops.cascade import CascadeReport, headline
from streamsync.ops.offsets_preview import Delete, _delete
from streamsync.sync.registry import ModelRegistry

REGISTRY = ModelRegistry([VLANModel])
KEY = {"vid": 100, "vlan_group__name": "dc1"}


def _record(value: bytes | None, key: bytes | None = None, offset: int = 7) -> Any:
    key = canonical_key("vlan", KEY).encode() if key is None else key
    return SimpleNamespace(key=key, value=value, topic="t", partition=2, offset=offset)


def _event(op: str = "delete", **overrides: Any) -> dict[str, Any]:
    return {
        "schema": "streamsync.event/v1",
        "id": "1",
        "source": "ipam",
        "model": "vlan",
        "op": op,
        "key": KEY,
        **overrides,
    }


def test_a_delete_is_found_with_its_place() -> None:
    found = _delete(_record(json.dumps(_event()).encode()), REGISTRY, "ipam")
    assert found == Delete(canonical_key("vlan", KEY), "vlan", KEY, 2, 7)
    assert found.label == 'vlan:{"vid":100,"vlan_group__name":"dc1"} (partition 2, offset 7)'


def test_a_delete_spelled_with_escapes_is_still_a_delete() -> None:
    value = json.dumps(_event()).replace('"delete"', '"\\u0064el\\u0065te"').encode()
    assert b"delete" not in value
    assert _delete(_record(value), REGISTRY, "ipam") is not None


def test_records_a_worker_would_not_apply_as_deletes_are_not_deletes() -> None:
    def found(value: bytes | None, key: bytes | None = None) -> Delete | None:
        return _delete(_record(value, key), REGISTRY, "ipam")

    assert found(json.dumps(_event("upsert", attrs={"description": "delete me"})).encode()) is None
    assert found(json.dumps(_event(source="other")).encode()) is None  # another source: dead-lettered
    assert found(json.dumps(_event(model="device")).encode(), b"device:{}") is None  # a model the source lacks
    assert found(json.dumps(_event()).encode(), b"vlan:100") is None  # keyed otherwise: dead-lettered
    assert found(None) is None  # a tombstone
    assert found(b'{"op": "delete"') is None  # not JSON


def test_the_headline_counts_in_the_models_own_words() -> None:
    report = CascadeReport(
        deleted=Counter({"dcim.device": 3}),
        cascade=Counter({"dcim.interface": 144, "ipam.ipaddresstointerface": 12, "extras.note": 1}),
        names={
            "dcim.device": ("device", "devices"),
            "dcim.interface": ("interface", "interfaces"),
            "ipam.ipaddresstointerface": ("IP Address Assignment", "IP Address Assignments"),
            "extras.note": ("note", "notes"),
        },
    )
    assert headline(report) == "3 devices, cascading to 144 interfaces, 1 note and 12 IP Address Assignments"
    report.protected = Counter({"dcim.interface": 1})
    assert headline(report).endswith("(some protected by 1 interface: those deletes fail)")
