"""A create waiting for an object it names is tried again when that object is written, not on every step.

Applied as the worker settles batches (`apply_source`, then the retry timer's `retry_due`), on the
real database. The guarantee a user meets: a stream that brings children before their parents (a
dump, a resync in any order) costs each waiting child one more try when its parent comes, instead
of one per batch that touches its parent's model; the end state is the same (test_batch_boundaries.py
and the generated-data round trip check that).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction

from streamsync.contract.deadletter import DEPENDENCY_MISSING
from streamsync.contract.envelope import Event, Op
from streamsync.sync.batch import Outcome
from streamsync.sync.engine import SyncEngine
from streamsync.sync.retry import Retrying, apply_source, retry_due
from streamsync.sync.settle import Applied, Incoming
from tests.integration.test_batch_boundaries import (
    EAGER,
    LAST,
    SOURCE,
    STATE_TOPIC,
    Wire,
    World,
    _event,
    _origin,
    make_engine,
    make_world,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine() -> SyncEngine:
    return make_engine()


class Settler:
    """Batches settled one after the other, at growing offsets of one partition, as a worker would."""

    def __init__(self, engine: SyncEngine, partition: int = 0) -> None:
        self.engine = engine
        self.partition = partition
        self.offset = 0

    def batch(self, *events: Event) -> Applied:
        incoming = []
        for event in events:
            origin = _origin(event, self.offset)
            incoming.append(Incoming(event, dataclasses.replace(origin, partition=self.partition)))
            self.offset += 1
        with transaction.atomic():
            return apply_source(self.engine, SOURCE, incoming, EAGER, STATE_TOPIC)


def _device(world: World, name: str, location: str = "lab", model: str = "X1") -> Event:
    n = world.name
    return _event(
        "device",
        {"name": n(name), "location__name": n(location)},
        device_type__manufacturer__name=n("acme"),
        device_type__model=model,
        role__name=n("role"),
    )


def _interfaces(world: World, device: str, count: int) -> list[Event]:
    return [
        _event("interface", {"name": f"eth{i}", "device__name": world.name(device)}, type="virtual")
        for i in range(count)
    ]


def _parked() -> list[tuple[str, int, Any]]:
    from streamsync.models.bookkeeping import ParkedEvent

    return list(ParkedEvent.objects.filter(source=SOURCE).order_by("id").values_list("key", "attempts", "awaits"))


def _outcomes(applied: Applied) -> list[tuple[str, Outcome]]:
    return [(o.key, o.outcome) for o in applied.result.objects]


@pytest.fixture
def world(engine: SyncEngine) -> Any:
    """The boundaries test's world and a location "lab", all rolled back afterwards (as that test's variants are)."""
    from nautobot.dcim.models import Location, LocationType

    with transaction.atomic():
        world = make_world(engine)
        region = LocationType.objects.get(name=world.name("region"))
        Location.objects.create(name=world.name("lab"), location_type=region, status=_active())
        yield world
        transaction.set_rollback(True)


def _active() -> Any:
    from nautobot.extras.models import Status

    return Status.objects.get(name="Active")


def test_a_waiting_create_goes_on_when_the_object_it_names_is_written_and_not_before(
    engine: SyncEngine, world: World
) -> None:
    settler = Settler(engine)
    children = _interfaces(world, "new", 20)
    first = settler.batch(*children)
    assert {outcome for _, outcome in _outcomes(first)} == {Outcome.FAILED}
    waits_for = [["dcim.device", [["name", world.name("new")]]]]
    assert [(attempts, awaits) for _, attempts, awaits in _parked()] == [(1, waits_for)] * 20

    # Other devices: the same model as the one the interfaces wait for, but not it.
    others = settler.batch(_device(world, "other1"), _device(world, "other2"))
    assert _outcomes(others) == [
        (e.canonical_key, Outcome.CREATED) for e in (_device(world, "other1"), _device(world, "other2"))
    ]
    assert [attempts for _, attempts, _ in _parked()] == [1] * 20  # not tried, not counted

    parent = _device(world, "new")
    last = settler.batch(parent)
    # Outcomes in log order: the parked events came in first.
    assert _outcomes(last) == [(e.canonical_key, Outcome.CREATED) for e in [*children, parent]]
    assert _parked() == []


def test_a_create_waiting_for_a_component_goes_on_when_nautobot_makes_it_from_its_devices_type(
    engine: SyncEngine, world: World
) -> None:
    """A module waits for a module bay no event names: the bay comes from the device type's template."""
    from nautobot.dcim.models import DeviceType, Manufacturer, ModuleBayTemplate, ModuleType

    n = world.name
    device_type = DeviceType.objects.get(model="X1", manufacturer__name=n("acme"))
    ModuleBayTemplate.objects.create(device_type=device_type, name="bay1")
    ModuleType.objects.create(model="M1", manufacturer=Manufacturer.objects.get(name=n("acme")))
    module = Event(
        source=SOURCE,
        model="module",
        op=Op.UPSERT,
        key={
            "parent_module_bay__parent_device__name": n("new"),
            "parent_module_bay__name": "bay1",
            "parent_module_bay__parent_module__parent_module_bay__name": None,
        },
        attrs={"module_type__manufacturer__name": n("acme"), "module_type__model": "M1"},
    )
    settler = Settler(make_engine_with("module", "modulebay", "moduletype"))
    first = settler.batch(module)
    assert _outcomes(first) == [(module.canonical_key, Outcome.FAILED)]
    assert [awaits[0][0] for _, _, awaits in _parked()] == ["dcim.modulebay"]

    parent = _device(world, "new")
    last = settler.batch(parent)
    assert _outcomes(last) == [(module.canonical_key, Outcome.CREATED), (parent.canonical_key, Outcome.CREATED)]


def make_engine_with(*names: str) -> SyncEngine:
    from streamsync.models import builtin_model
    from streamsync.sync.permissions import set_up_writer
    from streamsync.sync.registry import ModelRegistry
    from tests.integration.test_batch_boundaries import MODELS

    registry = ModelRegistry(builtin_model(name) for name in (*MODELS, *names))
    return SyncEngine(registry, set_up_writer("streamsync", registry))


def test_the_retry_timer_leaves_a_create_alone_while_what_it_waits_for_is_missing(
    engine: SyncEngine, world: World
) -> None:
    from django.utils import timezone
    from nautobot.dcim.models import Device, DeviceType, Location
    from nautobot.extras.models import Role

    from streamsync.models.bookkeeping import ParkedEvent

    settler = Settler(engine)
    child = _interfaces(world, "new", 1)[0]
    settler.batch(child)

    def timer(policy: Any) -> Any:
        ParkedEvent.objects.filter(source=SOURCE).update(next_attempt_at=timezone.now())
        return retry_due(engine, Retrying(SOURCE, policy, f"streamsync.{SOURCE}.dlq", 1_000_000), Wire())

    # Still missing: the attempt is counted, nothing is tried.
    retried = timer(EAGER)
    assert (retried.results, retried.letters) == ([], [])
    assert [attempts for _, attempts, _ in _parked()] == [2]

    # The last attempt is made for real: the dead letter is the create's own failure.
    retried = timer(LAST)
    assert [letter.code for _, letter in retried.letters] == [DEPENDENCY_MISSING]
    assert "Device" in retried.letters[0][1].reason
    assert _parked() == []

    # Made outside the stream (the UI, another source): the timer finds it and the create goes on.
    settler.batch(child)
    n = world.name
    Device.objects.create(
        name=n("new"),
        location=Location.objects.get(name=n("lab")),
        device_type=DeviceType.objects.get(model="X1", manufacturer__name=n("acme")),
        role=Role.objects.get(name=n("role")),
        status=_active(),
    )
    retried = timer(EAGER)
    assert [(o.key, o.outcome) for r in retried.results for o in r.objects] == [(child.canonical_key, Outcome.CREATED)]
    assert _parked() == []


def test_a_parked_create_is_due_at_once_when_a_batch_of_another_partition_writes_what_it_waits_for(
    engine: SyncEngine, world: World
) -> None:
    from django.utils import timezone

    from streamsync.models.bookkeeping import ParkedEvent

    children = _interfaces(world, "new", 3)
    Settler(engine, partition=0).batch(*children)
    later = timezone.now() + timedelta(hours=1)  # a back-off far from over
    ParkedEvent.objects.filter(source=SOURCE).update(next_attempt_at=later)

    other = Settler(engine, partition=1)
    other.batch(_device(world, "other1"))  # not what they wait for
    assert set(ParkedEvent.objects.filter(source=SOURCE).values_list("next_attempt_at", flat=True)) == {later}

    parent = _device(world, "new")
    other.batch(parent)
    due = ParkedEvent.objects.filter(source=SOURCE, next_attempt_at__lte=timezone.now())
    assert sorted(due.values_list("key", flat=True)) == sorted(e.canonical_key for e in children)

    retried = retry_due(engine, Retrying(SOURCE, EAGER, f"streamsync.{SOURCE}.dlq", 1_000_000), Wire())
    outcomes = [(o.key, o.outcome) for r in retried.results for o in r.objects]
    assert outcomes == [(e.canonical_key, Outcome.CREATED) for e in children]
    assert _parked() == []
