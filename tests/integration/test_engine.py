"""The engine on the real database: partial loading, batch semantics, idempotency."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from nautobot_ssot.contrib.typeddicts import TagDict

from streamsync.contract.envelope import Event, Op
from streamsync.sync.batch import BatchResult, Outcome
from streamsync.sync.engine import SyncEngine
from streamsync.sync.permissions import set_up_writer
from streamsync.sync.registry import ModelRegistry

pytestmark = pytest.mark.integration


def _vlan_event(group: str | None, vid: int, op: Op = Op.UPSERT, **attrs: Any) -> Event:
    return Event(source="ipam", model="vlan", op=op, key={"vid": vid, "vlan_group__name": group}, attrs=attrs)


@pytest.fixture
def engine() -> SyncEngine:
    from streamsync.models.ipam import VLANModel

    return SyncEngine(ModelRegistry([VLANModel]), set_up_writer("streamsync", [VLANModel]))


@pytest.fixture
def group() -> str:
    from nautobot.ipam.models import VLANGroup

    name = f"g-{uuid.uuid4().hex[:8]}"
    VLANGroup.objects.create(name=name)
    return name


def _seed(group: str, count: int) -> None:
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    active = Status.objects.get(name="Active")
    vlan_group = VLANGroup.objects.get(name=group)
    VLAN.objects.bulk_create(
        [VLAN(vid=vid, name=f"v{vid}", status=active, vlan_group=vlan_group) for vid in range(1, count + 1)]
    )


def test_nautobot_side_loads_with_one_query_whatever_the_batch_size(engine: SyncEngine, group: str) -> None:
    """The partial adapter's load, and a whole no-op batch, cost the same for 1 key and for 200."""
    _seed(group, 300)
    unchanged = {n: [_vlan_event(group, vid, name=f"v{vid}") for vid in range(1, n + 1)] for n in (1, 200)}

    # First use creates the streamsync user, warms caches and claims the objects (a claim is written once).
    engine.apply(unchanged[200], source="ipam")
    queries = {}
    for n, events in unchanged.items():
        with CaptureQueriesContext(connection) as captured:
            result = engine.apply(events, source="ipam")
        assert result.count(Outcome.UNCHANGED) == n
        queries[n] = len(captured.captured_queries)
    assert queries[1] == queries[200], queries

    from streamsync.models.ipam import VLANModel
    from streamsync.sync.adapters import adapter_classes

    nautobot_cls, _ = adapter_classes([VLANModel])
    load_queries = {}
    for n in (1, 200):
        keys = {"vlan": [{"vid": vid, "vlan_group__name": group} for vid in range(1, n + 1)]}
        adapter = nautobot_cls(keys=keys)
        with CaptureQueriesContext(connection) as captured:
            adapter.load()
        assert len(adapter.get_all("vlan")) == n
        load_queries[n] = [q["sql"].split(" FROM ")[1].split()[0] for q in captured.captured_queries]
    # One query for the VLANs, one for their tags, plus contrib's prefetch of each foreign key that is set
    # (group, status; role and tenant are empty here): never per object.
    assert load_queries[1] == load_queries[200]
    assert sorted(load_queries[1]) == sorted(['"ipam_vlan"', '"extras_tag"', '"ipam_vlangroup"', '"extras_status"'])


def test_partial_update_leaves_omitted_attributes_alone(engine: SyncEngine, group: str) -> None:
    from nautobot.ipam.models import VLAN

    engine.apply([_vlan_event(group, 10, name="users", description="floor 3", status__name="Reserved")], source="ipam")
    result = engine.apply([_vlan_event(group, 10, description="floor 4")], source="ipam")
    assert [o.outcome for o in result.objects] == [Outcome.UPDATED]
    vlan = VLAN.objects.get(vid=10, vlan_group__name=group)
    assert (vlan.name, vlan.description, vlan.status.name) == ("users", "floor 4", "Reserved")


def test_one_batch_is_one_change_context_by_the_streamsync_user(engine: SyncEngine, group: str) -> None:
    from nautobot.extras.models import ObjectChange
    from nautobot.ipam.models import VLAN

    engine.apply([_vlan_event(group, vid, name=f"n{vid}") for vid in (1, 2, 3)], source="ipam")
    ids = VLAN.objects.filter(vlan_group__name=group).values_list("pk", flat=True)
    changes = ObjectChange.objects.filter(changed_object_id__in=list(ids))
    assert changes.count() == 3
    assert set(changes.values_list("user__username", flat=True)) == {"streamsync"}
    assert len(set(changes.values_list("request_id", flat=True))) == 1
    assert set(changes.values_list("change_context_detail", flat=True)) == {"streamsync:ipam"}


def test_same_batch_twice_changes_nothing_the_second_time(engine: SyncEngine, group: str) -> None:
    from nautobot.extras.models import ObjectChange

    _seed(group, 5)
    batch = [
        _vlan_event(group, 100, name="new"),
        _vlan_event(group, 1, description="changed"),
        _vlan_event(group, 2, op=Op.DELETE),
        _vlan_event(group, 3, name="v3"),
    ]
    first = engine.apply(batch, source="ipam")
    assert [o.outcome for o in first.objects] == [
        Outcome.CREATED,
        Outcome.UPDATED,
        Outcome.DELETED,
        Outcome.UNCHANGED,
    ]
    before = ObjectChange.objects.count()
    second = engine.apply(batch, source="ipam")
    assert {o.outcome for o in second.objects} == {Outcome.UNCHANGED}
    assert ObjectChange.objects.count() == before


def test_a_failing_object_fails_alone(engine: SyncEngine, group: str) -> None:
    from nautobot.ipam.models import VLAN

    result = engine.apply(
        [
            _vlan_event(group, 20, name="ok-1"),
            _vlan_event(group, 5000, name="vid out of range"),
            _vlan_event("no-such-group", 21, name="missing group"),
            _vlan_event(group, 22, name="ok-2"),
        ],
        source="ipam",
    )
    by_vid = {o.key: o for o in result.objects}
    assert [o.outcome for o in result.objects] == [Outcome.CREATED, Outcome.FAILED, Outcome.FAILED, Outcome.CREATED]
    out_of_range = next(o for k, o in by_vid.items() if '"vid":5000' in k)
    assert not out_of_range.retryable and "vid" in out_of_range.reason
    missing_fk = next(o for k, o in by_vid.items() if "no-such-group" in k)
    assert missing_fk.retryable and "no-such-group" in missing_fk.reason
    assert set(VLAN.objects.filter(vlan_group__name=group).values_list("vid", flat=True)) == {20, 22}


def test_a_validation_rule_added_between_batches_holds_from_the_next_batch(engine: SyncEngine, group: str) -> None:
    """Nautobot's configuration is read once per batch, never kept from one batch to the next."""
    from django.contrib.contenttypes.models import ContentType
    from django.core.cache import caches
    from nautobot.data_validation.models import RequiredValidationRule
    from nautobot.ipam.models import VLAN

    first = engine.apply([_vlan_event(group, 30, name="no description yet")], source="ipam")
    assert [o.outcome for o in first.objects] == [Outcome.CREATED]
    rule = RequiredValidationRule.objects.create(
        name=f"vlan-description-{uuid.uuid4().hex[:6]}",
        content_type=ContentType.objects.get_for_model(VLAN),
        field="description",
        error_message="every VLAN needs a description",
    )
    try:
        second = engine.apply(
            [_vlan_event(group, 31, name="none"), _vlan_event(group, 32, name="some", description="floor 2")],
            source="ipam",
        )
    finally:
        rule.delete()
    assert [o.outcome for o in second.objects] == [Outcome.FAILED, Outcome.CREATED]
    assert "every VLAN needs a description" in second.objects[0].reason
    assert set(VLAN.objects.filter(vlan_group__name=group).values_list("vid", flat=True)) == {30, 32}
    assert "get" not in vars(caches["default"]), "the batch's scope ends with the batch"


def test_events_from_another_source_are_rejected(engine: SyncEngine, group: str) -> None:
    event = Event(source="cmdb", model="vlan", op=Op.UPSERT, key={"vid": 7, "vlan_group__name": group}, attrs={})
    result = engine.apply([event], source="ipam")
    assert [r.code for r in result.rejected] == ["wrong_source"]
    assert result.objects == []


def test_a_users_own_model_with_list_attributes_loads_in_constant_queries(group: str) -> None:
    """contrib prefetches only foreign keys; the partial adapter prefetches tags and other lists too."""
    from django.contrib.contenttypes.models import ContentType
    from nautobot.extras.models import Tag
    from nautobot.ipam.models import VLAN
    from nautobot_ssot.contrib import NautobotModel

    from streamsync.sync.adapters import adapter_classes

    class UserVLAN(NautobotModel):
        _model = VLAN
        _modelname = "vlan"
        _identifiers = ("vid", "vlan_group__name")
        _attributes = ("name", "tags")

        vid: int
        vlan_group__name: str | None = None
        name: str
        tags: list[TagDict] = []

    _seed(group, 40)
    tag = Tag.objects.create(name=f"t-{group}")
    tag.content_types.add(ContentType.objects.get_for_model(VLAN))
    for vlan in VLAN.objects.filter(vlan_group__name=group):
        vlan.tags.add(tag)

    nautobot_cls, _ = adapter_classes([UserVLAN])
    counts = {}
    for n in (1, 40):
        adapter = nautobot_cls(keys={"vlan": [{"vid": vid, "vlan_group__name": group} for vid in range(1, n + 1)]})
        with CaptureQueriesContext(connection) as captured:
            adapter.load()
        assert all(v.tags == [{"name": tag.name}] for v in adapter.get_all("vlan"))
        counts[n] = len(captured.captured_queries)
    assert counts[1] == counts[40], counts


# ---------------------------------------------------------------- keys whose DiffSync unique ids collide


def _stored(model: Any, ids: dict[str, Any]) -> dict[str, Any]:
    """Every identifier and attribute of the one Nautobot object with these identifiers, read from the ORM."""
    fields = [*model._identifiers, *model._attributes]
    queryset = model._model.objects.filter(**ids)  # a None identifier filters as IS NULL
    rows = list(queryset.values(*(name for name in fields if name != "tags")))
    assert len(rows) == 1, f"{model.get_type()} {ids}: {len(rows)} objects"
    if "tags" in fields:
        rows[0]["tags"] = sorted(queryset.get().tags.values_list("name", flat=True))
    return dict(rows[0])


def _outcomes(result: BatchResult) -> dict[str, Outcome]:
    assert result.rejected == [], [r.reason for r in result.rejected]
    return {o.key: o.outcome for o in result.objects}


def _key(model: str, ids: dict[str, Any]) -> str:
    from streamsync.contract.envelope import canonical_key

    return canonical_key(model, ids)


def _free_global_vid() -> int:
    """A VID that neither a VLAN without a group nor one in the group named "None" has in this database."""
    from nautobot.ipam.models import VLAN

    taken = set(VLAN.objects.filter(vlan_group__isnull=True).values_list("vid", flat=True))
    taken |= set(VLAN.objects.filter(vlan_group__name="None").values_list("vid", flat=True))
    return random.choice(sorted(set(range(1000, 4000)) - taken))  # noqa: S311 (not for security)


def _vlan(vid: int, group: str | None, name: str, **attrs: Any) -> dict[str, Any]:
    """A VLAN as `_stored` reads it: every attribute of VLANModel, Nautobot's defaults unless given."""
    defaults: dict[str, Any] = {
        "status__name": "Active",
        "role__name": None,
        "tenant__name": None,
        "description": "",
        "tags": [],
    }
    return {"vid": vid, "vlan_group__name": group, "name": name, **defaults, **attrs}


def test_vlans_whose_unique_ids_collide_are_applied_as_in_batches_of_their_own(
    engine: SyncEngine, group: str, group_named_none: str
) -> None:
    """No group and a group named "None" are two VLANs; diffsync names both `<vid>__None`."""
    from nautobot.extras.models import ObjectChange
    from nautobot.ipam.models import VLAN

    from streamsync.models.bookkeeping import OwnedObject
    from streamsync.models.ipam import VLANModel

    vid = _free_global_vid()
    no_group = {"vid": vid, "vlan_group__name": None}
    named_none = {"vid": vid, "vlan_group__name": "None"}
    bystander = {"vid": 7, "vlan_group__name": group}
    assert VLANModel.create_unique_id(**no_group) == VLANModel.create_unique_id(**named_none)
    key = {"no": _key("vlan", no_group), "named": _key("vlan", named_none), "by": _key("vlan", bystander)}

    created = engine.apply(
        [
            _vlan_event(None, vid, name="global", description="no group"),
            _vlan_event(group, 7, name="bystander"),
            _vlan_event("None", vid, name="grouped", status__name="Reserved"),
        ],
        source="ipam",
    )
    assert _outcomes(created) == {key["no"]: Outcome.CREATED, key["by"]: Outcome.CREATED, key["named"]: Outcome.CREATED}
    assert [o.key for o in created.objects] == [key["no"], key["by"], key["named"]]  # the batch's order
    assert _stored(VLANModel, no_group) == _vlan(vid, None, "global", description="no group")
    assert _stored(VLANModel, named_none) == _vlan(vid, "None", "grouped", status__name="Reserved")
    assert _stored(VLANModel, bystander) == _vlan(7, group, "bystander")
    pks = [o.pk for o in created.objects]
    # Both rounds in the batch's one change context, and both objects owned by the source.
    changes = ObjectChange.objects.filter(changed_object_id__in=pks)
    assert changes.count() == 3 and changes.values("request_id").distinct().count() == 1
    assert OwnedObject.objects.filter(source="ipam", object_id__in=pks).count() == 3

    updated = engine.apply(
        [
            _vlan_event(None, vid, description="still no group"),
            _vlan_event("None", vid, name="grouped-2", status__name="Active", description="in None"),
        ],
        source="ipam",
    )
    assert _outcomes(updated) == {key["no"]: Outcome.UPDATED, key["named"]: Outcome.UPDATED}
    assert _stored(VLANModel, no_group) == _vlan(vid, None, "global", description="still no group")
    assert _stored(VLANModel, named_none) == _vlan(vid, "None", "grouped-2", description="in None")

    mixed = engine.apply(
        [_vlan_event(None, vid, op=Op.DELETE), _vlan_event("None", vid, description="the last one")], source="ipam"
    )
    assert _outcomes(mixed) == {key["no"]: Outcome.DELETED, key["named"]: Outcome.UPDATED}
    assert not VLAN.objects.filter(vid=vid, vlan_group__isnull=True).exists()
    assert _stored(VLANModel, named_none) == _vlan(vid, "None", "grouped-2", description="the last one")

    deleted = engine.apply(
        [_vlan_event("None", vid, op=Op.DELETE), _vlan_event(None, vid, op=Op.DELETE)], source="ipam"
    )
    assert _outcomes(deleted) == {key["named"]: Outcome.DELETED, key["no"]: Outcome.UNCHANGED}
    assert not VLAN.objects.filter(vid=vid, vlan_group__name="None").exists()
    assert not VLAN.objects.filter(vid=vid, vlan_group__isnull=True).exists()
    assert _stored(VLANModel, bystander) == _vlan(7, group, "bystander")
    assert OwnedObject.objects.filter(source="ipam", object_id__in=pks).count() == 1  # the bystander's


def test_names_containing_the_unique_id_separator_are_two_objects() -> None:
    """Location `a__b` under `c` and `a` under `b__c` are both `a__b__c` to diffsync."""
    from streamsync.models.dcim import LocationModel, LocationTypeModel

    models = [LocationTypeModel, LocationModel]
    engine = SyncEngine(ModelRegistry(models), set_up_writer("streamsync", models))
    u = uuid.uuid4().hex[:8]
    kind, c, b_c = f"lt-{u}", f"c-{u}", f"b__c-{u}"
    first = {"name": "a__b", "parent__name": c}
    second = {"name": "a", "parent__name": b_c}
    assert LocationModel.create_unique_id(**first) == LocationModel.create_unique_id(**second)

    def location(ids: dict[str, Any], op: Op = Op.UPSERT, **attrs: Any) -> Event:
        return Event(source="dcim", model="location", op=op, key=ids, attrs=attrs)

    def stored(ids: dict[str, Any], **attrs: Any) -> dict[str, Any]:
        blank: dict[str, Any] = {"tenant__name": None, "description": "", "facility": "", "asn": None, "tags": []}
        blank |= {"physical_address": "", "shipping_address": "", "comments": ""}
        return {**ids, "location_type__name": kind, "status__name": "Active", **blank, **attrs}

    created = engine.apply(
        [
            Event(source="dcim", model="locationtype", op=Op.UPSERT, key={"name": kind}, attrs={"nestable": True}),
            location({"name": c, "parent__name": None}, location_type__name=kind),
            location({"name": b_c, "parent__name": None}, location_type__name=kind),
            location(first, location_type__name=kind, description="first"),
            location(second, location_type__name=kind, status__name="Planned", facility="F2", asn=65001),
        ],
        source="dcim",
    )
    assert set(_outcomes(created).values()) == {Outcome.CREATED} and len(created.objects) == 5
    assert _stored(LocationModel, first) == stored(first, description="first")
    assert _stored(LocationModel, second) == stored(second, status__name="Planned", facility="F2", asn=65001)

    updated = engine.apply(
        [location(second, comments="moved"), location(first, description="first, again")], source="dcim"
    )
    assert _outcomes(updated) == {_key("location", second): Outcome.UPDATED, _key("location", first): Outcome.UPDATED}
    assert _stored(LocationModel, first) == stored(first, description="first, again")
    assert _stored(LocationModel, second) == stored(
        second, status__name="Planned", facility="F2", asn=65001, comments="moved"
    )

    deleted = engine.apply([location(first, Op.DELETE), location(second, Op.DELETE)], source="dcim")
    assert _outcomes(deleted) == {_key("location", first): Outcome.DELETED, _key("location", second): Outcome.DELETED}
    assert not LocationModel._model.objects.filter(name__in=["a", "a__b"], parent__name__in=[c, b_c]).exists()
    assert _stored(LocationModel, {"name": b_c, "parent__name": None}) == stored({"name": b_c, "parent__name": None})


# ---------------------------------------------------------------- a load the database refuses


def test_a_key_the_database_cannot_compare_fails_alone_inside_the_workers_transaction(group: str) -> None:
    """The batch's load fails with a DataError; the batch is split up, and the transaction around it survives."""
    from nautobot.dcim.models import Location, LocationType
    from nautobot.extras.models import ObjectChange
    from nautobot_ssot.contrib import NautobotModel

    from streamsync.models.ipam import VLANModel

    class LocationByLatitude(NautobotModel):
        """A user's model keying locations by name and latitude, the latitude as text to keep its digits."""

        _model = Location
        _modelname = "location"
        _identifiers = ("name", "latitude")
        _attributes = ("location_type__name", "status__name")

        name: str
        latitude: str
        location_type__name: str
        status__name: str = "Active"

    registry = ModelRegistry([VLANModel, LocationByLatitude])
    engine = SyncEngine(registry, set_up_writer("streamsync", registry))
    u = uuid.uuid4().hex[:8]
    LocationType.objects.create(name=f"lt-{u}")

    def location(name: str, latitude: str) -> Event:
        key: dict[str, Any] = {"name": name, "latitude": latitude}
        return Event(source="ipam", model="location", op=Op.UPSERT, key=key, attrs={"location_type__name": f"lt-{u}"})

    # PostgreSQL's numeric holds 131,072 digits before the point: it cannot even compare 1e200000.
    culprit = location(f"far-{u}", "1e200000")
    huge_vid = _vlan_event(group, 2**40, name="huge")  # Django drops it from the query; the save refuses it
    with transaction.atomic():  # as the worker applies a batch (streamsync/sync/retry.py)
        result = engine.apply(
            [
                _vlan_event(group, 30, name="ok-1"),
                culprit,
                huge_vid,
                location(f"near-{u}", "45.5"),
                _vlan_event(group, 31, name="v31"),
            ],
            source="ipam",
        )
        # The worker goes on in the same transaction: parked events, state.
        assert Location.objects.filter(name=f"near-{u}").count() == 1

    by_key = {o.key: o for o in result.objects}
    assert len(by_key) == 5 and result.rejected == []
    failed = by_key[culprit.canonical_key]
    assert (failed.outcome, failed.retryable) == (Outcome.FAILED, False)
    assert "DataError" in failed.reason and "numeric" in failed.reason, failed.reason
    assert failed.events == [culprit]
    assert by_key[huge_vid.canonical_key].outcome is Outcome.FAILED and "vid" in by_key[huge_vid.canonical_key].reason
    assert [by_key[_vlan_event(group, vid).canonical_key].outcome for vid in (30, 31)] == [Outcome.CREATED] * 2
    assert by_key[location(f"near-{u}", "45.5").canonical_key].outcome is Outcome.CREATED

    from streamsync.models.ipam import VLANModel as VLANs

    assert _stored(VLANs, {"vid": 30, "vlan_group__name": group}) == _vlan(30, group, "ok-1")
    assert _stored(VLANs, {"vid": 31, "vlan_group__name": group}) == _vlan(31, group, "v31")
    near = Location.objects.get(name=f"near-{u}")
    assert (str(near.latitude), near.location_type.name, near.status.name, near.parent) == (
        "45.500000",
        f"lt-{u}",
        "Active",
        None,
    )
    assert not Location.objects.filter(name=f"far-{u}").exists()
    # The split-up batch is still one change context.
    changes = ObjectChange.objects.filter(changed_object_id__in=[o.pk for o in result.objects if o.pk])
    assert changes.count() == 3 and changes.values("request_id").distinct().count() == 1


def test_a_load_of_many_keys_finds_exactly_the_rows_they_name(group: str) -> None:
    """Keys folded into `__in` terms per group still name exactly their rows: nulls, other groups, absent keys."""
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    from streamsync.models.ipam import VLANModel
    from streamsync.sync.adapters import adapter_classes

    other = f"o-{uuid.uuid4().hex[:8]}"
    VLANGroup.objects.create(name=other)
    _seed(group, 20)
    active = Status.objects.get(name="Active")
    VLAN.objects.create(vid=5, name=f"v5-{other}", status=active, vlan_group=VLANGroup.objects.get(name=other))
    VLAN.objects.create(vid=3999, name=f"free-{uuid.uuid4().hex[:8]}", status=active, vlan_group=None)
    keys: list[dict[str, Any]] = [{"vid": vid, "vlan_group__name": group} for vid in (1, 2, 5, 19, 25)]
    keys += [{"vid": 5, "vlan_group__name": other}, {"vid": 6, "vlan_group__name": other}]
    keys += [{"vid": 3999, "vlan_group__name": None}, {"vid": 1, "vlan_group__name": None}]
    # The same vid in several groups: the groups vary, and the null one is a term of its own.
    VLAN.objects.create(vid=3999, name=f"v3999-{other}", status=active, vlan_group=VLANGroup.objects.get(name=other))
    across = [{"vid": 3999, "vlan_group__name": name} for name in (group, other, None)]

    def load(keys: list[dict[str, Any]]) -> set[tuple[int, str | None]]:
        nautobot_cls, _ = adapter_classes([VLANModel])
        adapter = nautobot_cls(keys={"vlan": keys})
        adapter.load()
        return {(v.vid, v.vlan_group__name) for v in adapter.get_all("vlan")}

    def expected(keys: list[dict[str, Any]]) -> set[tuple[int, str | None]]:  # each key on its own
        return {(key["vid"], key["vlan_group__name"]) for key in keys if VLAN.objects.filter(**key).exists()}

    assert {(1, group), (19, group), (5, other), (3999, None)} <= expected(keys)
    assert (25, group) not in expected(keys) and (5, group) in expected(keys)
    assert load(keys) == expected(keys)
    assert expected(across) == {(3999, other), (3999, None)}
    assert load(across) == expected(across)
