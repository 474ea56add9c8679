"""Splitting a batch into rounds without two changes of one DiffSync unique id."""

from __future__ import annotations

from typing import Any

from diffsync import DiffSyncModel

from streamsync.contract.envelope import Op
from streamsync.models.dcim import LocationModel
from streamsync.models.ipam import VLANGroupModel, VLANModel
from streamsync.sync.batch import Change, rounds


def _change(model: type[DiffSyncModel], **ids: Any) -> Change:
    return Change(model, ids, Op.UPSERT)


def _keys(split: list[list[Change]]) -> list[list[str]]:
    return [[change.key for change in batch_round] for batch_round in split]


def test_a_batch_without_collisions_is_one_round_in_its_order() -> None:
    changes = [_change(VLANModel, vid=vid, vlan_group__name="g") for vid in (3, 1, 2)]
    changes.append(_change(VLANGroupModel, name="3__g"))  # another model: its ids are its own
    assert _keys(rounds(changes)) == [[c.key for c in changes]]


def test_the_nth_change_of_a_unique_id_goes_to_round_n() -> None:
    no_group = _change(VLANModel, vid=100, vlan_group__name=None)
    named_none = _change(VLANModel, vid=100, vlan_group__name="None")
    other = _change(VLANModel, vid=101, vlan_group__name=None)
    first = _change(LocationModel, name="a__b", parent__name="c")
    second = _change(LocationModel, name="a", parent__name="b__c")
    third = _change(LocationModel, name="a__b__c", parent__name=None)  # `a__b__c__None`: not the same
    split = rounds([no_group, first, named_none, other, second, third])
    assert _keys(split) == [[no_group.key, first.key, other.key, third.key], [named_none.key, second.key]]


def test_the_unique_ids_of_the_model_given_count() -> None:
    class ByName(DiffSyncModel):
        _modelname = "vlan"
        _identifiers = ("vlan_group__name",)

        vlan_group__name: str | None = None

    changes = [_change(VLANModel, vid=vid, vlan_group__name="g") for vid in (1, 2)]
    assert _keys(rounds(changes, lambda change: ByName)) == [[changes[0].key], [changes[1].key]]
