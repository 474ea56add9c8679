"""The bulk write path writes what the per-object path writes: objects, change log, events, outbox, outcomes.

The same batches (creates, updates of objects that exist with or without a change log, deletes)
are applied to the same starting rows once with the engine's bulk creates and updates and once
without (`SyncEngine(bulk=False)`), each variant in a savepoint rolled back afterwards, and
compared exactly: every object of the events' models with every column (new objects' primary
keys and timestamps normalised), the ObjectChange rows of each batch (action, user, user name,
one request id per batch, context, detail, object data v1 and v2), what Nautobot publishes to
event brokers for them (pre-change and post-change data, differences, context), the outbox rows
(events and headers) and each object's outcome with its reason.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nautobot_ssot.contrib.types import CustomFieldAnnotation

from streamsync.contract.envelope import Event, Op, decode
from streamsync.models import builtin_model
from streamsync.sync import bulk
from streamsync.sync.batch import BatchResult, Outcome
from streamsync.sync.engine import SyncEngine
from streamsync.sync.permissions import set_up_writer
from streamsync.sync.registry import ModelRegistry
from tests.integration.conftest import Stream, wait_for

pytestmark = pytest.mark.integration

SOURCE = "bulk"
MODELS = ("tenant", "role", "manufacturer", "platform", "namespace", "locationtype", "vlangroup", "vlan")
# Models whose rows are compared besides MODELS': the assignment tests' (label: lookup ending in the test's suffix).
JOINED = {
    "dcim.location": "name__endswith",
    "ipam.prefix": "namespace__name__endswith",
    "ipam.prefixlocationassignment": "location__name__endswith",
    "ipam.vlanlocationassignment": "location__name__endswith",
}
EXAMPLES = int(os.environ.get("STREAMSYNC_BULK_EXAMPLES", "4"))


def engines(models: Sequence[Any] = ()) -> dict[str, SyncEngine]:
    registry = ModelRegistry(models or [builtin_model(name) for name in MODELS])
    writer = set_up_writer("streamsync", registry)
    return {"bulk": SyncEngine(registry, writer), "one by one": SyncEngine(registry, writer, bulk=False)}


class _Rollback(Exception):
    pass


def _event(model: str, key: dict[str, Any], **attrs: Any) -> Event:
    return Event(source=SOURCE, model=model, op=Op.UPSERT, key=key, attrs=attrs)


def _delete(model: str, key: dict[str, Any]) -> Event:
    return Event(source=SOURCE, model=model, op=Op.DELETE, key=key)


def _recorder(events: list[tuple[str, Any]]) -> Any:
    from nautobot.core.events import EventBroker

    class Recorder(EventBroker):
        def publish(self, *, topic: str, payload: Any) -> None:
            events.append((topic, json.loads(payload)))

    return Recorder()


class _Published:
    """An event broker that keeps what Nautobot publishes: the payloads webhooks and job hooks are given too."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.broker = _recorder(self.events)

    def __enter__(self) -> _Published:
        from nautobot.core.events import register_event_broker
        from nautobot.extras.context_managers import ChangeContext

        # Nautobot's change contexts share one pre-change dict (a mutable default argument), so a
        # variant would see the pre-change data the previous one recorded: each starts without any.
        for default in ChangeContext.__init__.__defaults__ or ():
            if isinstance(default, dict):
                default.clear()
        register_event_broker(self.broker)
        return self

    def __exit__(self, *exc: object) -> None:
        from nautobot.core.events import deregister_event_broker

        deregister_event_broker(self.broker)


# --- what a variant wrote ----------------------------------------------------------------------


def _normal(value: Any, names: dict[str, str]) -> Any:
    """`value` with the variant's new primary keys replaced by what they name, and timestamps dropped."""
    if isinstance(value, dict):
        # natural_slug ends in the first characters of the primary key
        return {k: _normal(v, names) for k, v in value.items() if k not in ("created", "last_updated", "natural_slug")}
    if isinstance(value, list | tuple):
        return [_normal(v, names) for v in value]
    if isinstance(value, str):
        for pk, name in names.items():
            value = value.replace(pk, name)
        return value
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return sorted(str(getattr(item, "pk", item)) for item in value)
    return value if value is None or isinstance(value, bool | int | str | dict) else str(value)


def _row(obj: Any) -> dict[str, Any]:
    """Every column of `obj` (to-many fields as lists of primary keys), and its primary key."""
    from django.forms.models import model_to_dict

    return {**{field: _plain(value) for field, value in model_to_dict(obj).items()}, "_pk": str(obj.pk)}


def _written(
    topic: str, u: str, results: Sequence[BatchResult], before: dict[str, Any], published: Sequence[tuple[str, Any]]
) -> dict[str, Any]:
    """Everything the batches wrote, with nothing that differs between equal writes (ids, times).

    The change log and the outbox as multisets: across objects their order follows the order of the
    writes, which the bulk path changes (one object has one ObjectChange per batch either way).
    """
    from django.apps import apps
    from nautobot.extras.models import ObjectChange

    from streamsync.models.bookkeeping import OutboxEvent

    changes = list(ObjectChange.objects.exclude(pk__in=before["changes"]).order_by("time", "pk"))
    names = {str(c.changed_object_id): f"<{c.changed_object_type.model} {c.object_repr}>" for c in changes}
    rows = {}
    for name in MODELS:
        django_model = builtin_model(name)._model  # type: ignore[attr-defined]
        mine = {"vlan_group__name__endswith": u} if name == "vlan" else {"name__endswith": u}
        for obj in django_model.objects.filter(**mine):
            data = _row(obj)
            rows[f"{name} {obj} {data.get('vlan_group')}"] = data
    for label, lookup in JOINED.items():
        for obj in apps.get_model(label).objects.filter(**{lookup: u}):
            rows[f"{label} {obj}"] = _row(obj)
            names.setdefault(str(obj.pk), f"<{label} {obj}>")  # assignments have no change log of their own
    requests: dict[str, str] = {}
    logged = []
    for change in changes:
        request = requests.setdefault(str(change.request_id), f"request {len(requests)}")
        logged.append(
            (
                request,
                change.action,
                change.user.username if change.user else None,
                change.user_name,
                change.change_context,
                change.change_context_detail,
                change.changed_object_type.model,
                str(change.changed_object_id),
                change.object_repr,
                change.object_data,
                change.object_data_v2,
            )
        )
    outbox = []
    for row in OutboxEvent.objects.filter(topic=topic).exclude(pk__in=before["outbox"]).order_by("id"):
        event = decode(row.value.encode())
        headers = dict(row.headers)
        change = ObjectChange.objects.get(pk=headers.pop("nautobot-change-id"))
        assert headers.pop("nautobot-request-id") == str(change.request_id)
        outbox.append((event.model, event.op, event.key, event.attrs, sorted(headers.items()), change.action))
    outcomes = [
        [(o.key, o.model, o.outcome, o.reason, o.retryable, [e.id for e in o.events], str(o.pk)) for o in r.objects]
        for r in results
    ]
    rejected = [[(r.event.id, r.code, r.reason) for r in result.rejected] for result in results]
    events = []
    for event_topic, payload in published:
        context = dict(payload.pop("context"))
        context.pop("timestamp")
        context["request_id"] = requests[context["request_id"]]
        events.append((event_topic, context, payload))
    # One request id per batch: as many as there are batches that wrote.
    wrote = (Outcome.CREATED, Outcome.UPDATED, Outcome.DELETED)
    assert len(requests) == sum(1 for r in results if any(o.outcome in wrote for o in r.objects))
    parts = {
        "rows": rows,
        "log": logged,
        "events": events,
        "outbox": outbox,
        "outcomes": outcomes,
        "rejected": rejected,
    }
    written = _normal(parts, names)
    for data in written["rows"].values():  # to-many values: sorted as the names they stand for
        for field, value in data.items():
            if isinstance(value, list):
                data[field] = sorted(value)
    for part in ("log", "events", "outbox"):
        written[part].sort(key=repr)
    return written


def _variant(engine: SyncEngine, topic: str, u: str, batches: Sequence[Sequence[Event]]) -> dict[str, Any]:
    from django.db import transaction
    from nautobot.extras.models import ObjectChange

    from streamsync.models.bookkeeping import OutboxEvent

    before = {
        "changes": list(ObjectChange.objects.values_list("pk", flat=True)),
        "outbox": list(OutboxEvent.objects.values_list("pk", flat=True)),
    }
    written: dict[str, Any] = {}
    try:
        with transaction.atomic():
            with _Published() as published:
                results = [engine.apply(events, source=SOURCE) for events in batches]
            written = _written(topic, u, results, before, published.events)
            raise _Rollback
    except _Rollback:
        pass
    return written


def _same(broker: Any, u: str, batches: Sequence[Sequence[Event]], models: Sequence[Any] = ()) -> dict[str, Any]:
    """Apply `batches` both ways (through `models`, or the built-in ones); they must write the same.

    Returns what they wrote.
    """
    written = {way: _variant(engine, broker.topic, u, batches) for way, engine in engines(models).items()}
    for part in ("outcomes", "rejected", "log", "events", "outbox", "rows"):
        mine, theirs = written["bulk"][part], written["one by one"][part]
        if isinstance(mine, dict):
            mine, theirs = sorted(mine.items()), sorted(theirs.items())
        first = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), None)
        shown = (mine[first], theirs[first]) if first is not None else (len(mine), len(theirs))
        assert mine == theirs, f"{part} differs: bulk {shown[0]}\none by one {shown[1]}"
    return written["bulk"]


# --- the starting data ---------------------------------------------------------------------------


def _world() -> str:
    """Committed starting objects under a fresh suffix; returns it."""
    from django.contrib.contenttypes.models import ContentType
    from nautobot.extras.models import Role, Status, Tag
    from nautobot.ipam.models import VLANGroup
    from nautobot.tenancy.models import TenantGroup

    u = uuid.uuid4().hex[:8]
    TenantGroup.objects.create(name=f"tg-{u}")
    VLANGroup.objects.create(name=f"g-{u}", range="1-100")
    for name in (f"tag-{u}", f"Tag-b-{u}"):
        tag = Tag.objects.create(name=name)
        tag.content_types.add(
            *ContentType.objects.filter(model__in=["vlan", "tenant"], app_label__in=["ipam", "tenancy"])
        )
    Tag.objects.create(name=f"notag-{u}")  # allowed on nothing
    status = Status.objects.create(name=f"devices-only-{u}")  # a status VLANs may not have
    status.content_types.add(ContentType.objects.get(app_label="dcim", model="device"))
    role = Role.objects.create(name=f"devices-only-{u}")  # a role VLANs may not have
    role.content_types.add(ContentType.objects.get(app_label="dcim", model="device"))
    _existing(u)
    return u


def _existing(u: str) -> None:
    """Objects the batches update, written without a change log (Nautobot keeps their pre-change data itself).

    Names a, b and c of each family the batches draw from exist, d and e do not; so do VLANs 1 to 3
    of the group gx-<u>. Tenants a and b have tags, two of them (their order is the database's).
    """
    from django.contrib.contenttypes.models import ContentType
    from nautobot.dcim.models import Manufacturer, Platform
    from nautobot.extras.models import Role, Status, Tag
    from nautobot.ipam.models import VLAN, Namespace, VLANGroup
    from nautobot.tenancy.models import Tenant

    tags = [Tag.objects.get(name=f"tag-{u}"), Tag.objects.get(name=f"Tag-b-{u}")]
    vlan_type = ContentType.objects.get(app_label="ipam", model="vlan")
    for n in ("a", "b", "c"):
        tenant = Tenant.objects.create(name=f"t{n}-{u}", description="old")
        tenant.tags.set({"a": tags, "b": tags[:1], "c": []}[n])
        Manufacturer.objects.create(name=f"m{n}-{u}", description="old")
        Platform.objects.create(name=f"p{n}-{u}", description="old")
        Namespace.objects.create(name=f"ns{n}-{u}", description="old")
        Role.objects.create(name=f"r{n}-{u}", color="0000ff").content_types.add(vlan_type)
        VLANGroup.objects.create(name=f"vg{n}-{u}", range="1-4094")
    group, active = VLANGroup.objects.create(name=f"gx-{u}", range="1-100"), Status.objects.get(name="Active")
    for vid in (1, 2, 3):
        VLAN.objects.create(vid=vid, name=f"v{'abc'[vid - 1]}", vlan_group=group, status=active, description="old")


def _batch(u: str) -> st.SearchStrategy[list[Event]]:
    """Random upserts (creates, incomplete creates, updates of what exists or an earlier event made, bad values)
    and deletes."""
    tags = st.sampled_from(
        [[], [{"name": f"tag-{u}"}], [{"name": f"notag-{u}"}], [{"name": f"tag-{u}"}, {"name": f"Tag-b-{u}"}]]
    )
    names = st.sampled_from(["a", "b", "c", "d", "e"])
    vids = st.integers(min_value=1, max_value=6)
    text = st.sampled_from(["", "x", "y"])
    one = st.one_of(
        st.builds(
            lambda n, d, t, g: _event(
                "tenant",
                {"name": f"t{n}-{u}"},
                description=d,
                tags=t,
                **({"tenant_group__name": f"tg-{u}"} if g else {}),
            ),
            names,
            text,
            tags,
            st.booleans(),
        ),
        st.builds(lambda n, d: _event("manufacturer", {"name": f"m{n}-{u}"}, description=d), names, text),
        st.builds(
            lambda n, m: _event("platform", {"name": f"p{n}-{u}"}, manufacturer__name=f"m{m}-{u}" if m else None),
            names,
            st.sampled_from(["", "a", "z"]),
        ),
        st.builds(lambda n, d: _event("namespace", {"name": f"ns{n}-{u}"}, description=d), names, text),
        st.builds(
            lambda n, c: _event(
                "role", {"name": f"r{n}-{u}"}, color=c, content_types=[{"app_label": "ipam", "model": "vlan"}]
            ),
            names,
            st.sampled_from(["ff0000", "00ff00"]),
        ),
        st.builds(lambda n: _event("locationtype", {"name": f"lt{n}-{u}"}, nestable=True), names),
        st.builds(
            lambda n, r: _event("vlangroup", {"name": f"vg{n}-{u}"}, range=r), names, st.sampled_from(["1-4094", "1-3"])
        ),
        st.builds(
            lambda vid, n, t, g, complete: _event(
                "vlan",
                {"vid": vid, "vlan_group__name": g},
                **({"name": f"v{n}"} if complete else {"description": "no name"}),
                tags=t,
            ),
            vids,
            names,
            tags,
            st.sampled_from([f"g-{u}", f"vga-{u}", f"gx-{u}"]),
            st.booleans(),
        ),
        st.builds(lambda n: _delete("tenant", {"name": f"t{n}-{u}"}), names),
        st.builds(lambda n: _delete("manufacturer", {"name": f"m{n}-{u}"}), names),
        st.builds(lambda vid: _delete("vlan", {"vid": vid, "vlan_group__name": f"g-{u}"}), vids),
    )
    # Updates of what exists before the batch, drawn more often than the above draws them, so that a step
    # has several of one model: the bulk updates' chunks.
    abc = st.sampled_from(["a", "b", "c"])
    existing = st.one_of(
        st.builds(lambda n, d, t: _event("tenant", {"name": f"t{n}-{u}"}, description=d, tags=t), abc, text, tags),
        st.builds(lambda n, d: _event("manufacturer", {"name": f"m{n}-{u}"}, description=d), abc, text),
        st.builds(lambda n, d: _event("namespace", {"name": f"ns{n}-{u}"}, description=d), abc, text),
        st.builds(
            lambda vid, d, n: _event("vlan", {"vid": vid, "vlan_group__name": f"gx-{u}"}, description=d, **n),
            st.integers(min_value=1, max_value=3),
            text,
            st.sampled_from([{}, {"name": "va"}, {"name": "vd"}, {"name": "ve"}]),
        ),
    )
    parts = st.tuples(st.lists(one, min_size=1, max_size=25), st.lists(existing, max_size=15))
    return parts.flatmap(lambda drawn: st.permutations(drawn[0] + drawn[1]))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(data=st.data())
def test_random_batches_write_the_same_in_bulk_as_one_by_one(broker: Any, data: st.DataObject) -> None:
    """Over random batches of every bulk-safe family (and two that are not), both paths write exactly the same."""
    u = _world()
    batches = data.draw(st.lists(_batch(u), min_size=1, max_size=3))
    _same(broker, u, batches)


def test_one_object_that_fails_validation_fails_alone_and_the_others_are_written(broker: Any) -> None:
    """A chunk with a VLAN outside its group's range, a tag not allowed, a name taken in the chunk, a status
    and a role not allowed on VLANs (which only Nautobot's validation refuses, not the database)."""
    u = _world()
    vlans = [_event("vlan", {"vid": vid, "vlan_group__name": f"g-{u}"}, name=f"v{vid}") for vid in range(1, 21)]
    vlans[3] = _event("vlan", {"vid": 500, "vlan_group__name": f"g-{u}"}, name="out of range")
    vlans[7] = _event("vlan", {"vid": 8, "vlan_group__name": f"g-{u}"}, name="v8", tags=[{"name": f"notag-{u}"}])
    vlans[9] = _event("vlan", {"vid": 10, "vlan_group__name": f"g-{u}"}, name="v2")  # v2's name, in one batch
    vlans[12] = _event("vlan", {"vid": 13, "vlan_group__name": f"g-{u}"}, name="v13", status__name=f"devices-only-{u}")
    vlans[14] = _event("vlan", {"vid": 15, "vlan_group__name": f"g-{u}"}, name="v15", role__name=f"devices-only-{u}")
    written = _same(broker, u, [vlans])
    outcomes = {key: (outcome, reason) for key, _, outcome, reason, *_ in written["outcomes"][0]}
    failed = {key for key, (outcome, _) in outcomes.items() if outcome == Outcome.FAILED}
    assert failed == {vlans[i].canonical_key for i in (3, 7, 9, 12, 14)}, outcomes
    assert "range" in outcomes[vlans[3].canonical_key][1]
    assert "not allowed" in outcomes[vlans[7].canonical_key][1]
    assert "already exists" in outcomes[vlans[9].canonical_key][1]
    assert "status" in outcomes[vlans[12].canonical_key][1]
    assert "role" in outcomes[vlans[14].canonical_key][1]
    assert sum(1 for o, _ in outcomes.values() if o == Outcome.CREATED) == 15
    assert [entry[1] for entry in written["log"]] == ["create"] * 15
    assert len(written["outbox"]) == 15


def _vlans(u: str, count: int) -> list[Any]:
    """`count` VLANs of the group g-<u> (range 1-100), written without a change log."""
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    group, active = VLANGroup.objects.get(name=f"g-{u}"), Status.objects.get(name="Active")
    return [
        VLAN.objects.create(vid=vid, name=f"v{vid}", vlan_group=group, status=active) for vid in range(10, 10 + count)
    ]


def test_one_update_that_fails_validation_fails_alone_and_the_others_are_written(broker: Any) -> None:
    """A chunk of VLAN updates with a status and a role not allowed on VLANs (only Nautobot's validation refuses
    them), a name another VLAN holds, a tag not allowed (refused when it is set, after the UPDATE) and a
    description too long for its column: each fails alone, as on the per-object path; the rest are updated."""
    from nautobot.ipam.models import VLAN

    u = _world()
    existing = _vlans(u, 20)
    VLAN.objects.create(vid=99, name="taken", vlan_group=existing[0].vlan_group, status=existing[0].status)

    def update(vid: int, **attrs: Any) -> Event:
        return _event("vlan", {"vid": vid, "vlan_group__name": f"g-{u}"}, **{"description": f"new {vid}", **attrs})

    updates = [update(vlan.vid) for vlan in existing]
    updates[3] = update(13, status__name=f"devices-only-{u}")
    updates[5] = update(15, role__name=f"devices-only-{u}")
    updates[9] = update(19, name="taken")
    updates[12] = update(22, description="x" * 300)
    updates[15] = update(25, tags=[{"name": f"notag-{u}"}])
    updates[17] = update(27, tags=[{"name": f"Tag-b-{u}"}, {"name": f"tag-{u}"}])
    written = _same(broker, u, [updates])
    outcomes = {key: (outcome, reason) for key, _, outcome, reason, *_ in written["outcomes"][0]}
    failed = {key for key, (outcome, _) in outcomes.items() if outcome == Outcome.FAILED}
    assert failed == {updates[i].canonical_key for i in (3, 5, 9, 12, 15)}, outcomes
    assert "status" in outcomes[updates[3].canonical_key][1]
    assert "role" in outcomes[updates[5].canonical_key][1]
    assert "already exists" in outcomes[updates[9].canonical_key][1]
    assert "not allowed" in outcomes[updates[15].canonical_key][1]
    assert sum(1 for o, _ in outcomes.values() if o == Outcome.UPDATED) == 15
    assert [entry[1] for entry in written["log"]] == ["update"] * 15
    assert [payload["prechange"]["description"] for _, _, payload in written["events"]] == [""] * 15
    assert len(written["outbox"]) == 15


def test_updates_mixed_with_creates_and_deletes_write_the_same(broker: Any) -> None:
    """Updates of objects without a change log and of objects a batch before created (their pre-change data comes
    from that ObjectChange), beside creates and deletes of the same models in each batch."""
    u = _world()
    existing = _vlans(u, 12)
    group = {"vlan_group__name": f"g-{u}"}
    first = [_event("vlan", {"vid": v.vid, **group}, description=f"one {v.vid}") for v in existing[:8]]
    first += [_event("vlan", {"vid": vid, **group}, name=f"n{vid}") for vid in range(40, 46)]
    first += [_delete("vlan", {"vid": v.vid, **group}) for v in existing[8:10]]
    first += [_event("tenant", {"name": f"t{n}-{u}"}, description=f"one {n}", tags=[]) for n in "abcde"]
    second = [_event("vlan", {"vid": vid, **group}, description=f"two {vid}") for vid in (10, 11, 40, 41, 42, 43)]
    second += [_event("vlan", {"vid": existing[10].vid, **group}, name="n40")]  # n40's name: refused
    second += [_delete("vlan", {"vid": 44, **group}), _delete("tenant", {"name": f"ta-{u}"})]
    second += [_event("tenant", {"name": f"t{n}-{u}"}, tags=[{"name": f"tag-{u}"}]) for n in "bcde"]
    written = _same(broker, u, [first, second])
    actions = sorted(entry[1] for entry in written["log"])
    assert actions.count("update") == 8 + 3 + 6 + 4 and actions.count("delete") == 4, actions


def _assignment_models() -> list[Any]:
    from django.apps import apps

    from streamsync.models.derived import derived_model

    built_in = [
        builtin_model(name) for name in ("location", "locationtype", "namespace", "prefix", "vlangroup", "vlan")
    ]
    return built_in + [derived_model(apps.get_model(label)) for label in JOINED if label.endswith("assignment")]


def _joined_world(u: str) -> None:
    """Locations a to c of a type that takes prefixes and VLANs, prefixes 10.<n>.0.0/24 for n in 1 to 8 in the
    namespace ns-<u>, VLANs 1 to 3 of gx-<u>; prefix 1 and VLAN 1 are at location a already. No change log."""
    from django.contrib.contenttypes.models import ContentType
    from nautobot.dcim.models import Location, LocationType
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, Namespace, Prefix

    kind = LocationType.objects.create(name=f"lt-{u}")
    kind.content_types.add(ContentType.objects.get_for_model(Prefix), ContentType.objects.get_for_model(VLAN))
    active = Status.objects.get(name="Active")
    places = [Location.objects.create(name=f"l{n}-{u}", location_type=kind, status=active) for n in "abc"]
    namespace = Namespace.objects.create(name=f"ns-{u}")
    prefixes = [Prefix.objects.create(prefix=f"10.{n}.0.0/24", namespace=namespace, status=active) for n in range(1, 9)]
    prefixes[0].locations.add(places[0])
    VLAN.objects.get(vid=1, vlan_group__name=f"gx-{u}").locations.add(places[0])


def _joins(u: str, prefix: int, location: str) -> Event:
    key = {"prefix__namespace__name": f"ns-{u}", "prefix__network": f"10.{prefix}.0.0", "prefix__prefix_length": 24}
    return _event("prefixlocationassignment", {**key, "location__name": f"l{location}-{u}"})


def _places_vlan(u: str, vid: int, location: str) -> Event:
    return _event(
        "vlanlocationassignment", {"vid": vid, "vlan_group__name": f"gx-{u}", "location__name": f"l{location}-{u}"}
    )


def test_assignments_write_the_same_in_bulk_as_one_by_one(broker: Any) -> None:
    """Assignments join two objects, and Nautobot logs a change to both (serialised whole) for each one.

    In bulk each joined object is logged once per chunk, as the last assignment leaves it: the same
    ObjectChange rows and events as one by one. Also when the batch has logged the object already
    (location a updated, location d and prefix 9 created before the assignments: their rows are
    updated, not doubled), for an assignment that exists (unchanged), one naming a prefix that does
    not exist (it fails alone), and in a second batch beside a delete."""
    u = _world()
    _joined_world(u)
    active = {"status__name": "Active"}
    location = {"location_type__name": f"lt-{u}", **active}
    first = [
        _event("location", {"name": f"la-{u}", "parent__name": None}, description="updated", **location),
        _event("location", {"name": f"ld-{u}", "parent__name": None}, **location),
        _event(
            "prefix", {"network": "10.9.0.0", "prefix_length": 24, "namespace__name": f"ns-{u}"}, status__name="Active"
        ),
    ]
    first += [_joins(u, n, place) for n in range(1, 10) for place in "abd" if (n + ord(place)) % 3]
    first += [_joins(u, 1, "a"), _joins(u, 99, "a")]  # exists already; names no prefix
    first += [_places_vlan(u, vid, place) for vid in (1, 2, 3) for place in "ac"]
    second = [_joins(u, n, "c") for n in range(1, 9)] + [_places_vlan(u, 3, "b")]
    second += [Event(source=SOURCE, model="prefixlocationassignment", op=Op.DELETE, key=_joins(u, 1, "a").key)]
    written = _same(broker, u, [first, second], _assignment_models())
    outcomes = [{key.split("|", 1)[0]: outcome for key, _, outcome, *_ in batch} for batch in written["outcomes"]]
    logged = sorted((request, action, kind) for request, action, _, _, _, _, kind, *_ in written["log"])
    assert logged.count(("request 0", "update", "location")) == 2, logged  # a (updated, then joined) and b
    assert logged.count(("request 0", "create", "location")) == 1, logged  # d: created, then joined
    assert sum(1 for _, o in outcomes[0].items() if o == Outcome.CREATED) >= 18, outcomes


def test_assignments_are_inserted_together_and_each_joined_object_logged_once(broker: Any) -> None:
    """The bulk path is the one taken for assignments: one INSERT of them, one of ObjectChanges, and
    each joined object's change row written once for the chunk (3 locations, 8 prefixes)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from nautobot.extras.models import ObjectChange

    u = _world()
    _joined_world(u)
    engine = engines(_assignment_models())["bulk"]
    events = [_joins(u, n, place) for n in range(1, 9) for place in "bc"]
    before = ObjectChange.objects.count()
    with CaptureQueriesContext(connection) as captured:
        result = engine.apply(events, source=SOURCE)
    assert [o.outcome for o in result.objects] == [Outcome.CREATED] * 16
    inserts = [q["sql"].split()[2] for q in captured.captured_queries if q["sql"].startswith("INSERT")]
    assert inserts.count('"ipam_prefixlocationassignment"') == 1, inserts
    assert inserts.count('"extras_objectchange"') == 1, inserts
    assert ObjectChange.objects.count() - before == 2 + 8  # locations b and c, prefixes 1 to 8


CODE = "streamsync_bulk_code"  # a custom field on manufacturers, synced by _vendor_model()


def _vendor_model() -> Any:
    """A user's own contrib model of manufacturers with a custom field."""
    from nautobot.dcim.models import Manufacturer
    from nautobot_ssot.contrib import NautobotModel

    class VendorModel(NautobotModel):
        _model = Manufacturer
        _modelname = "vendor"
        _identifiers = ("name",)
        _attributes = ("description", "code")

        name: str
        description: str = ""
        code: Annotated[str | None, CustomFieldAnnotation(key=CODE)] = None

    return VendorModel


def test_custom_field_updates_write_the_same(broker: Any) -> None:
    """Updates and creates of a model with a custom field: the custom field data, validated and logged alike."""
    from django.contrib.contenttypes.models import ContentType
    from nautobot.dcim.models import Manufacturer
    from nautobot.extras.models import CustomField

    # Without a default: the field stays (as test_model_library's does), and would fill other tests' manufacturers.
    field, _ = CustomField.objects.get_or_create(key=CODE, defaults={"label": "Code", "type": "text"})
    field.content_types.add(ContentType.objects.get_for_model(Manufacturer))
    u = _world()

    def vendor(n: str, **attrs: Any) -> Event:
        return Event(source=SOURCE, model="vendor", op=Op.UPSERT, key={"name": f"m{n}-{u}"}, attrs=attrs)

    first = [vendor("a", code="A1"), vendor("b", description="b"), vendor("c", code="C1", description="c")]
    first += [vendor("d", code="D1"), vendor("e")]
    second = [vendor(n, code=f"{n.upper()}2") for n in "abcde"] + [vendor("a", description="again")]
    written = _same(broker, u, [first, second], [_vendor_model()])
    codes = {row["name"]: row["_custom_field_data"] for name, row in written["rows"].items() if "manufacturer" in name}
    assert {name: data.get(CODE) for name, data in codes.items()} == {f"m{n}-{u}": f"{n.upper()}2" for n in "abcde"}
    actions = sorted(entry[1] for entry in written["log"])
    assert actions == ["create"] * 2 + ["update"] * 8, actions


def test_bulk_updates_write_one_update_and_one_change_log_insert(broker: Any) -> None:
    """The bulk path is the one taken for updates: one UPDATE of VLANs, one INSERT of ObjectChanges and one of
    outbox rows for a chunk; the queries grow with the chunk only by the two that Nautobot's change context
    makes per ObjectChange as it exits (each object's previous change, for the pre-change data), as for single
    saves. (The others may shrink: Nautobot's configuration, read once, may be cached by then.)"""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for size in (10, 30):
        u = _world()
        engine = engines()["bulk"]
        events = [
            _event("vlan", {"vid": v.vid, "vlan_group__name": f"g-{u}"}, description="new") for v in _vlans(u, size)
        ]
        with CaptureQueriesContext(connection) as captured:
            result = engine.apply(events, source=SOURCE)
        assert [o.outcome for o in result.objects] == [Outcome.UPDATED] * size
        sql = [q["sql"] for q in captured.captured_queries]
        assert sum(1 for q in sql if q.startswith('UPDATE "ipam_vlan"')) == 1, sql
        inserts = [q.split()[2] for q in sql if q.startswith("INSERT")]
        assert inserts.count('"extras_objectchange"') == 1, inserts
        assert inserts.count('"streamsync_outboxevent"') == 1, inserts
        exits = sum(
            1 for q in sql if q.startswith('SELECT "extras_objectchange"."id", "extras_objectchange"."object_data')
        )
        counts.append((exits, len(sql) - exits))
    assert [exits for exits, _ in counts] == [2 * 10, 2 * 30], counts
    assert counts[1][1] <= counts[0][1], counts


def test_bulk_creates_write_one_insert_and_one_change_log_insert(broker: Any) -> None:
    """The bulk path is the one taken: one INSERT of VLANs and one of ObjectChanges for a chunk, not one per object.

    A VLAN taking a name an earlier one of the chunk takes is refused before the INSERT (it fails
    alone on the per-object path), so the chunk's INSERT goes through."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    u = _world()
    engine = engines()["bulk"]
    events = [_event("vlan", {"vid": vid, "vlan_group__name": f"g-{u}"}, name=f"v{vid}") for vid in range(1, 31)]
    events[20] = _event("vlan", {"vid": 21, "vlan_group__name": f"g-{u}"}, name="v5")
    with CaptureQueriesContext(connection) as captured:
        result = engine.apply(events, source=SOURCE)
    assert [o.outcome for o in result.objects] == [Outcome.CREATED] * 20 + [Outcome.FAILED] + [Outcome.CREATED] * 9
    inserts = [q["sql"].split()[2] for q in captured.captured_queries if q["sql"].startswith("INSERT")]
    assert inserts.count('"ipam_vlan"') == 1, inserts
    assert inserts.count('"extras_objectchange"') == 1, inserts
    assert inserts.count('"streamsync_outboxevent"') == 1, inserts


def test_a_batch_the_bulk_creates_make_whole_leaves_nothing_to_update(broker: Any) -> None:
    """Every change of a model created in bulk: the bulk updates get none, and the batch ends with the creates."""
    u = _world()
    events = [_event("vlan", {"vid": vid, "vlan_group__name": f"g-{u}"}, name=f"v{vid}") for vid in range(1, 6)]
    result = engines()["bulk"].apply(events, source=SOURCE)
    assert [o.outcome for o in result.objects] == [Outcome.CREATED] * 5


def test_the_models_written_in_bulk_are_exactly_those_whose_receivers_are_known() -> None:
    """A receiver Nautobot or an app adds for a bulk model (an upgrade) turns it per-object, and fails this test."""
    from django.apps import apps

    reasons = {label: bulk.unsafe_because(apps.get_model(label)) for label in sorted(bulk.CANDIDATES)}
    assert reasons == dict.fromkeys(sorted(bulk.CANDIDATES)), reasons
    for label in (
        "dcim.location",
        "dcim.locationtype",
        "ipam.prefix",
        "ipam.ipaddress",
        "dcim.device",
        "ipam.vrfprefixassignment",  # Nautobot's IPAM receiver re-parents on save
        "dcim.deviceclusterassignment",  # its save() is its own
    ):
        assert bulk.unsafe_because(apps.get_model(label)) is not None


def test_a_burst_through_a_real_worker_ends_with_every_object_its_change_log_and_its_event(
    broker: Any, stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    """300 creates produced before the worker starts (so its batches are large): exact objects, one
    ObjectChange each with its batch's request id, one event each on Nautobot's events topic."""
    from nautobot.extras.models import ObjectChange
    from nautobot.ipam.models import VLAN, VLANGroup

    from tests.integration.test_nautobot_events import _read
    from tests.integration.test_resilience import log_records
    from tests.integration.test_worker_end_to_end import _event as line
    from tests.integration.test_worker_end_to_end import _publish

    group = f"burst-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    wanted = {vid: (f"v{vid}", f"d{vid % 7}") for vid in range(1, 301)}
    _publish(stream, tmp_path, *(line("upsert", vid, group, name=n, description=d) for vid, (n, d) in wanted.items()))
    worker = start_worker("--source", "ipam")

    def vlans() -> dict[int, tuple[str, str]]:
        return {v.vid: (v.name, v.description) for v in VLAN.objects.filter(vlan_group__name=group)}

    wait_for(lambda: len(vlans()) == len(wanted), 300, "the burst applied", worker)
    assert vlans() == wanted
    rows = {str(v.pk): v for v in VLAN.objects.filter(vlan_group__name=group).select_related("status", "tenant")}
    assert {(v.status.name, v.tenant, v.role) for v in rows.values()} == {("Active", None, None)}

    changes = list(ObjectChange.objects.filter(changed_object_id__in=list(rows)))
    assert sorted(str(c.changed_object_id) for c in changes) == sorted(rows)  # exactly one each
    assert {(c.action, c.user_name, c.change_context, c.change_context_detail) for c in changes} == {
        ("create", "streamsync", "orm", "streamsync:ipam")
    }
    batches = [r["received"] for r in log_records(worker, "batch committed")]
    assert max(batches) > 1, batches  # batched, so the bulk path was open to it
    assert len({c.request_id for c in changes}) <= len(batches)

    messages = _read(stream.bootstrap, broker.topic, len(wanted), timeout=120)
    by_key = {m.key: m for m in messages if group in m.key}
    assert len(by_key) == len([m for m in messages if group in m.key]) == len(wanted)  # one event per object
    request_of = {rows[str(c.changed_object_id)].vid: str(c.request_id) for c in changes}
    for vid, (name, description) in wanted.items():
        message = by_key[f'vlan:{{"vid":{vid},"vlan_group__name":"{group}"}}']
        assert message.event.op is Op.UPSERT
        assert (message.event.attrs["name"], message.event.attrs["description"]) == (name, description)
        assert message.headers["nautobot-request-id"] == request_of[vid]
        assert message.headers["nautobot-action"] == "create" and message.headers["streamsync-origin"] == "ipam"
    assert worker.stop() == 0


def test_a_burst_of_updates_through_a_real_worker_ends_with_every_change_its_change_log_and_its_event(
    broker: Any, stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    """300 updates of VLANs that exist without a change log, produced before the worker starts (so its batches
    are large): exact objects, one update ObjectChange each with its batch's request id, one event each on
    Nautobot's events topic carrying the new values."""
    from nautobot.extras.models import ObjectChange, Status
    from nautobot.ipam.models import VLAN, VLANGroup

    from tests.integration.test_nautobot_events import _read
    from tests.integration.test_resilience import log_records
    from tests.integration.test_worker_end_to_end import _event as line
    from tests.integration.test_worker_end_to_end import _publish

    group = VLANGroup.objects.create(name=f"burst-{uuid.uuid4().hex[:6]}")
    active = Status.objects.get(name="Active")
    VLAN.objects.bulk_create(VLAN(vid=vid, name=f"v{vid}", vlan_group=group, status=active) for vid in range(1, 301))
    wanted = {vid: (f"v{vid}", f"d{vid % 7}") for vid in range(1, 301)}
    _publish(stream, tmp_path, *(line("upsert", vid, group.name, description=d) for vid, (_, d) in wanted.items()))
    worker = start_worker("--source", "ipam")

    def vlans() -> dict[int, tuple[str, str]]:
        return {v.vid: (v.name, v.description) for v in VLAN.objects.filter(vlan_group=group)}

    wait_for(lambda: vlans() == wanted, 300, "the burst applied", worker)
    rows = {str(v.pk): v for v in VLAN.objects.filter(vlan_group=group)}
    changes = list(ObjectChange.objects.filter(changed_object_id__in=list(rows)))
    assert sorted(str(c.changed_object_id) for c in changes) == sorted(rows)  # exactly one each
    assert {(c.action, c.user_name, c.change_context, c.change_context_detail) for c in changes} == {
        ("update", "streamsync", "orm", "streamsync:ipam")
    }
    assert all(c.object_data["description"] == rows[str(c.changed_object_id)].description for c in changes)
    batches = [r["received"] for r in log_records(worker, "batch committed")]
    assert max(batches) > 1, batches  # batched, so the bulk path was open to it
    assert len({c.request_id for c in changes}) <= len(batches)

    messages = _read(stream.bootstrap, broker.topic, len(wanted), timeout=120)
    by_key = {m.key: m for m in messages if group.name in m.key}
    assert len(by_key) == len([m for m in messages if group.name in m.key]) == len(wanted)  # one event per object
    request_of = {rows[str(c.changed_object_id)].vid: str(c.request_id) for c in changes}
    for vid, (name, description) in wanted.items():
        message = by_key[f'vlan:{{"vid":{vid},"vlan_group__name":"{group.name}"}}']
        assert message.event.op is Op.UPSERT
        assert (message.event.attrs["name"], message.event.attrs["description"]) == (name, description)
        assert message.headers["nautobot-request-id"] == request_of[vid]
        assert message.headers["nautobot-action"] == "update" and message.headers["streamsync-origin"] == "ipam"
    assert worker.stop() == 0
