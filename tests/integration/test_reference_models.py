"""Statuses, tenant groups, modules and their interfaces, through Kafka and a running worker into Nautobot.

One worker, three rounds of events (create with children before parents, update, delete); after
each, every object the test made is read back with every attribute the models sync and compared
whole. A device's own interface and its modules' interfaces share the name `eth0`.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from streamsync.contract.envelope import canonical_key
from tests.integration.conftest import Stream, wait_for
from tests.integration.load_helpers import load_queries
from tests.integration.state_helpers import own_source, publish

pytestmark = pytest.mark.integration

MODELS = ["status", "tenantgroup", "tenant", "device", "moduletype", "modulebay", "module"]
MODELS += ["interface", "moduleinterface"]


def _event(source: str, op: str, model: str, key: dict[str, Any], **attrs: Any) -> dict[str, Any]:
    return {"schema": "streamsync.event/v1", "source": source, "model": model, "op": op, "key": key, "attrs": attrs}


def bay_key(sw: str, name: str, module_bay: str | None = None, parent_bay: str | None = None) -> dict[str, Any]:
    """A module bay of device `sw`: of the device itself, or of the module in `module_bay` (in `parent_bay`)."""
    return {
        "name": name,
        "parent_device__name": sw,
        "parent_module__parent_module_bay__name": module_bay,
        "parent_module__parent_module_bay__parent_module__parent_module_bay__name": parent_bay,
    }


def module_key(sw: str, in_bay: str, parent_bay: str | None = None) -> dict[str, Any]:
    return {
        "parent_module_bay__parent_device__name": sw,
        "parent_module_bay__name": in_bay,
        "parent_module_bay__parent_module__parent_module_bay__name": parent_bay,
    }


def interface_key(sw: str, in_bay: str, parent_bay: str | None = None, name: str = "eth0") -> dict[str, Any]:
    """An interface of the module in `in_bay` (in `parent_bay`) of device `sw`."""
    return {
        "name": name,
        "device__name": sw,
        "module__parent_module_bay__name": in_bay,
        "module__parent_module_bay__parent_module__parent_module_bay__name": parent_bay,
    }


def _places(u: str) -> None:
    """What the test does not stream: location, role, device type, and a module type with an interface template."""
    from django.contrib.contenttypes.models import ContentType
    from nautobot.dcim.models import (
        Device,
        DeviceType,
        InterfaceTemplate,
        Location,
        LocationType,
        Manufacturer,
        ModuleType,
    )
    from nautobot.extras.models import Role, Status

    site = LocationType.objects.create(name=f"site-{u}")
    site.content_types.add(ContentType.objects.get_for_model(Device))
    Location.objects.create(name=f"dc-{u}", location_type=site, status=Status.objects.get(name="Active"))
    Role.objects.create(name=f"role-{u}").content_types.add(ContentType.objects.get_for_model(Device))
    acme = Manufacturer.objects.create(name=f"acme-{u}")
    DeviceType.objects.create(model="X1", manufacturer=acme)
    templated = ModuleType.objects.create(model=f"TPL-{u}", manufacturer=acme)
    InterfaceTemplate.objects.create(module_type=templated, name="eth9", type="1000base-t")


def _state_now(u: str) -> dict[str, Any] | None:
    """`_state`, or None when a row it follows was deleted while it read (the worker committing): not yet."""
    from django.core.exceptions import ObjectDoesNotExist

    try:
        return _state(u)
    except ObjectDoesNotExist:
        return None


def _state(u: str) -> dict[str, Any]:
    """Every object of the test, keyed as its events key it, with every synced attribute."""
    from nautobot.dcim.models import Interface, Module, ModuleBay, ModuleType
    from nautobot.extras.models import Status
    from nautobot.tenancy.models import Tenant, TenantGroup

    def where(module: Module | None) -> tuple[str | None, str | None]:
        """A module by the bay it is in and the bay its parent module is in."""
        if module is None:
            return (None, None)
        bay = module.parent_module_bay
        return (bay.name, bay.parent_module.parent_module_bay.name if bay.parent_module else None)

    def cts(obj: Any) -> list[str]:
        return sorted(f"{c.app_label}.{c.model}" for c in obj.content_types.all())

    def name(obj: Any) -> str | None:
        return obj.name if obj is not None else None

    return {
        "statuses": {s.name: (s.color, s.description, cts(s)) for s in Status.objects.filter(name__endswith=u)},
        "tenant groups": {
            g.name: (name(g.parent), g.description) for g in TenantGroup.objects.filter(name__endswith=u)
        },
        "tenants": {t.name: name(t.tenant_group) for t in Tenant.objects.filter(name__endswith=u)},
        "module types": {
            (m.manufacturer.name, m.model): (m.part_number, m.comments)
            for m in ModuleType.objects.filter(manufacturer__name=f"acme-{u}")
        },
        "module bays": {
            (name(b.parent_device), *where(b.parent_module), b.name): (
                b.position,
                b.label,
                b.description,
                b.requires_first_party_modules,
            )
            for b in ModuleBay.objects.filter(parent_device__name=f"sw-{u}")
        },
        "modules": {
            (name(m.device), *where(m)): (
                m.module_type.model,
                m.status.name,
                name(m.tenant),
                name(m.role),
                m.serial,
                m.asset_tag,
                name(m.location),
            )
            for m in Module.objects.filter(parent_module_bay__parent_device__name=f"sw-{u}")
        },
        "interfaces": {
            (name(i.device), *where(i.module), i.name): (
                i.type,
                i.status.name,
                i.description,
                i.label,
                i.enabled,
                i.mgmt_only,
                i.mtu,
            )
            for i in Interface.objects.filter(device__name=f"sw-{u}")
        },
    }


def test_reference_data_modules_and_interfaces_on_modules_round_trip_through_a_worker(
    stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    u = uuid.uuid4().hex[:8]
    stream, source = own_source(stream, tmp_path, MODELS, user=f"streamsync-{u}")
    _places(u)
    sw = f"sw-{u}"
    staged, lc = f"staged-{u}", f"LC-{u}"

    def up(model: str, key: dict[str, Any], **attrs: Any) -> dict[str, Any]:
        return _event(source, "upsert", model, key, **attrs)

    def rm(model: str, key: dict[str, Any]) -> dict[str, Any]:
        return _event(source, "delete", model, key)

    on_device = {"name": "eth0", "device__name": sw}  # the key interface events have always had
    ct = [{"app_label": "dcim", "model": "module"}, {"app_label": "dcim", "model": "interface"}]
    created = [
        up("tenantgroup", {"name": f"leaf-{u}"}, parent__name=f"mid-{u}", description="leaf"),
        up("tenantgroup", {"name": f"mid-{u}"}, parent__name=f"root-{u}"),
        up("tenantgroup", {"name": f"root-{u}"}),
        up("tenant", {"name": f"t-{u}"}, tenant_group__name=f"leaf-{u}"),
        up("status", {"name": staged}, color="00ff00", description="being installed", content_types=ct),
        up("moduletype", {"model": lc, "manufacturer__name": f"acme-{u}"}, part_number="LC-8", comments="8 ports"),
        up(
            "device",
            {"name": sw, "location__name": f"dc-{u}"},
            device_type__manufacturer__name=f"acme-{u}",
            device_type__model="X1",
            role__name=f"role-{u}",
        ),
        up("modulebay", bay_key(sw, "slot1"), position="1", label="Slot 1"),
        up("modulebay", bay_key(sw, "slot2"), description="right"),
        up("modulebay", bay_key(sw, "sub1", "slot1"), requires_first_party_modules=True),
        up("module", module_key(sw, "slot1"), **_type(u, lc), status__name=staged, tenant__name=f"t-{u}", serial="S1"),
        up("module", module_key(sw, "sub1", "slot1"), **_type(u, lc), serial="S2"),
        up("module", module_key(sw, "slot2"), **_type(u, f"TPL-{u}"), asset_tag=f"A-{u}"),
        up("interface", on_device, type="1000base-t", description="the device's own"),
        up("moduleinterface", interface_key(sw, "slot1"), type="10gbase-x-sfpp", description="slot 1"),
        up("moduleinterface", interface_key(sw, "slot2"), type="10gbase-x-sfpp", status__name=staged),
        up("moduleinterface", interface_key(sw, "sub1", "slot1"), type="1000base-t", enabled=False, label="deep"),
        # Made by Nautobot from the module type's template when the module is: adopted, not duplicated.
        up("moduleinterface", interface_key(sw, "slot2", name="eth9"), type="1000base-t", description="adopted"),
    ]
    worker = start_worker("--source", source, "--batch-timeout", "0.2", on=stream)
    publish(stream, tmp_path, *reversed(created), source=source)  # children before parents
    device_eth0: tuple[Any, ...] = ("1000base-t", "Active", "the device's own", "", True, False, None)
    expected: dict[str, Any] = {
        "statuses": {staged: ("00ff00", "being installed", ["dcim.interface", "dcim.module"])},
        "tenant groups": {
            f"root-{u}": (None, ""),
            f"mid-{u}": (f"root-{u}", ""),
            f"leaf-{u}": (f"mid-{u}", "leaf"),
        },
        "tenants": {f"t-{u}": f"leaf-{u}"},
        "module types": {(f"acme-{u}", lc): ("LC-8", "8 ports"), (f"acme-{u}", f"TPL-{u}"): ("", "")},
        "module bays": {
            (sw, None, None, "slot1"): ("1", "Slot 1", "", False),
            (sw, None, None, "slot2"): ("slot2", "", "right", False),  # Nautobot's position: the name
            (sw, "slot1", None, "sub1"): ("sub1", "", "", True),
        },
        "modules": {
            (sw, "slot1", None): (lc, staged, f"t-{u}", None, "S1", None, None),
            (sw, "sub1", "slot1"): (lc, "Active", None, None, "S2", None, None),
            (sw, "slot2", None): (f"TPL-{u}", "Active", None, None, None, f"A-{u}", None),
        },
        "interfaces": {
            (sw, None, None, "eth0"): device_eth0,
            (sw, "slot1", None, "eth0"): ("10gbase-x-sfpp", "Active", "slot 1", "", True, False, None),
            (sw, "slot2", None, "eth0"): ("10gbase-x-sfpp", staged, "", "", True, False, None),
            (sw, "sub1", "slot1", "eth0"): ("1000base-t", "Active", "", "deep", False, False, None),
            (sw, "slot2", None, "eth9"): ("1000base-t", "Active", "adopted", "", True, False, None),
        },
    }
    wait_for(lambda: _state_now(u) == expected, 180, f"everything created: {expected}", worker)

    # Each `eth0` is addressed alone; the status's content types are replaced as a set.
    updated = [
        up("status", {"name": staged}, content_types=[ct[1]], description="staged"),
        up("tenantgroup", {"name": f"leaf-{u}"}, parent__name=f"root-{u}"),
        up("interface", on_device, description="still the device's own", mtu=1500),
        up("moduleinterface", interface_key(sw, "slot1"), mtu=9000),
        up("moduleinterface", interface_key(sw, "sub1", "slot1"), enabled=True),
        up("module", module_key(sw, "slot1"), status__name="Active", serial="S1b"),
        up("modulebay", bay_key(sw, "slot2"), position="2"),
    ]
    publish(stream, tmp_path, *updated, source=source)
    device_eth0 = ("1000base-t", "Active", "still the device's own", "", True, False, 1500)
    expected["statuses"][staged] = ("00ff00", "staged", ["dcim.interface"])
    expected["tenant groups"][f"leaf-{u}"] = (f"root-{u}", "leaf")
    expected["interfaces"][(sw, None, None, "eth0")] = device_eth0
    expected["interfaces"][(sw, "slot1", None, "eth0")] = ("10gbase-x-sfpp", "Active", "slot 1", "", True, False, 9000)
    expected["interfaces"][(sw, "sub1", "slot1", "eth0")] = ("1000base-t", "Active", "", "deep", True, False, None)
    expected["modules"][(sw, "slot1", None)] = (lc, "Active", f"t-{u}", None, "S1b", None, None)
    expected["module bays"][(sw, None, None, "slot2")] = ("2", "", "right", False)
    wait_for(lambda: _state_now(u) == expected, 120, f"the updates: {expected}", worker)

    # Deleting one eth0 leaves the others; a module goes with its interface; a status no longer in use goes.
    deleted = [
        rm("moduleinterface", interface_key(sw, "slot1")),
        rm("interface", on_device),
        rm("module", module_key(sw, "sub1", "slot1")),
        rm("moduleinterface", interface_key(sw, "slot2")),
        rm("status", {"name": staged}),
        rm("tenantgroup", {"name": f"mid-{u}"}),
    ]
    publish(stream, tmp_path, *deleted, source=source)
    expected["statuses"] = {}
    del expected["tenant groups"][f"mid-{u}"]
    del expected["modules"][(sw, "sub1", "slot1")]
    expected["interfaces"] = {(sw, "slot2", None, "eth9"): expected["interfaces"][(sw, "slot2", None, "eth9")]}
    wait_for(lambda: _state_now(u) == expected, 120, f"the deletes: {expected}", worker)
    assert worker.stop() == 0


def _type(u: str, model: str) -> dict[str, str]:
    return {"module_type__manufacturer__name": f"acme-{u}", "module_type__model": model}


def test_modules_in_no_device_are_left_out_of_every_module_model() -> None:
    """A spare module kept at a location, and one in its bay, have no device to be named by: no key, no load."""
    from django.contrib.contenttypes.models import ContentType
    from nautobot.dcim.models import Interface, Location, Module, ModuleBay, ModuleType

    from streamsync.models import builtin_model
    from streamsync.sync.adapters import adapter_classes

    u = uuid.uuid4().hex[:8]
    _places(u)
    store = Location.objects.get(name=f"dc-{u}")
    store.location_type.content_types.add(ContentType.objects.get_for_model(Module))
    templated = ModuleType.objects.get(model=f"TPL-{u}")  # its template gives each module an eth9
    active = store.status
    spare = Module.objects.create(module_type=templated, location=store, status=active)
    bay = ModuleBay.objects.create(parent_module=spare, name="sub1")
    Module.objects.create(module_type=templated, parent_module_bay=bay, status=active)
    assert Interface.objects.filter(module__module_type=templated, device=None).count() == 2

    names = ["modulebay", "module", "interface", "moduleinterface"]
    adapter_class, _ = adapter_classes([builtin_model(name) for name in names])
    adapter = adapter_class(keys=None)  # as a resync loads: everything
    adapter.load()
    loaded = {obj.pk for name in names for obj in adapter.get_all(name)}
    theirs = {*Module.objects.filter(module_type=templated).values_list("pk", flat=True)}
    theirs |= {bay.pk, *Interface.objects.filter(module__module_type=templated).values_list("pk", flat=True)}
    assert loaded.isdisjoint(theirs)


def test_nautobots_own_interface_changes_are_events_of_the_model_that_keys_them(
    stream: Stream, alice: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Two models are bound to Nautobot's Interface: each change is published once, by the one whose key names it."""
    from nautobot.dcim.models import Device, Interface, Location, Module, ModuleBay, ModuleType
    from nautobot.extras.context_managers import web_request_context
    from nautobot.extras.models import Role, Status

    from streamsync.models.bookkeeping import OutboxEvent
    from streamsync.outbox.broker import StreamsyncEventBroker
    from streamsync.settings import StreamsyncSettings

    u = uuid.uuid4().hex[:8]
    _places(u)
    active = Status.objects.get(name="Active")
    sw = Device.objects.create(
        name=f"sw-{u}",
        location=Location.objects.get(name=f"dc-{u}"),
        device_type_id=ModuleType.objects.get(model=f"TPL-{u}").manufacturer.device_types.get().pk,
        role=Role.objects.get(name=f"role-{u}"),
        status=active,
    )
    bay = ModuleBay.objects.create(parent_device=sw, name="slot1")
    (broker,) = [b for b in _event_brokers() if isinstance(b, StreamsyncEventBroker)]
    broker.configure(
        StreamsyncSettings.load(
            {"topic_prefix": stream.prefix, "sources": {"cmdb": {"models": ["interface", "moduleinterface"]}}}
        )
    )
    topic = broker.topic
    try:
        with web_request_context(alice):
            Module.objects.create(
                module_type=ModuleType.objects.get(model=f"TPL-{u}"), parent_module_bay=bay, status=active
            )
            own = Interface.objects.create(device=sw, name="eth9", type="virtual", status=active)
        on_module = Interface.objects.get(module__parent_module_bay=bay, name="eth9")  # from the template, unlogged
        with web_request_context(alice):
            on_module.description = "module's"
            on_module.validated_save()
        with web_request_context(alice):
            own.delete()
        with web_request_context(alice):
            on_module.delete()
    finally:
        broker.configure()
    events = [(row.key, json.loads(row.value)["op"]) for row in OutboxEvent.objects.filter(topic=topic).order_by("id")]
    device_key = canonical_key("interface", {"name": "eth9", "device__name": f"sw-{u}"})
    module_key = canonical_key("moduleinterface", interface_key(f"sw-{u}", "slot1", name="eth9"))
    assert events == [(device_key, "upsert"), (module_key, "upsert"), (device_key, "delete"), (module_key, "delete")]
    assert "was deleted, but its state before was not recorded" not in caplog.text


def _event_brokers() -> list[Any]:
    from nautobot.core.events import _EVENT_BROKERS

    return list(_EVENT_BROKERS)


def test_loading_modules_and_their_interfaces_costs_the_same_queries_for_one_device_as_for_three() -> None:
    """Deep lookups (a module's bay's module's bay) are fetched per model, never per object."""
    from streamsync.contract.envelope import Event, Op
    from streamsync.settings import resolve_model
    from streamsync.sync.batch import Outcome
    from streamsync.sync.engine import SyncEngine
    from streamsync.sync.permissions import set_up_writer
    from streamsync.sync.registry import ModelRegistry

    registry = ModelRegistry(resolve_model(name) for name in MODELS)
    engine = SyncEngine(registry, set_up_writer("streamsync", registry))
    worlds = []
    for _ in range(3):
        u = uuid.uuid4().hex[:8]
        _places(u)
        sw, lc = f"sw-{u}", {"module_type__manufacturer__name": f"acme-{u}", "module_type__model": f"TPL-{u}"}
        device = {"device_type__manufacturer__name": f"acme-{u}", "device_type__model": "X1", "role__name": f"role-{u}"}
        events = [
            Event(source="test", model=model, op=Op.UPSERT, key=key, attrs=attrs)
            for model, key, attrs in [
                ("device", {"name": sw, "location__name": f"dc-{u}"}, device),
                ("modulebay", bay_key(sw, "slot1"), {}),
                ("module", module_key(sw, "slot1"), lc),
                ("modulebay", bay_key(sw, "sub1", "slot1"), {}),
                ("module", module_key(sw, "sub1", "slot1"), lc),
                ("interface", {"name": "eth9", "device__name": sw}, {"type": "virtual"}),
                (
                    "moduleinterface",
                    interface_key(sw, "slot1", name="eth9"),
                    {"type": "1000base-t", "description": "on slot1"},
                ),
                (
                    "moduleinterface",
                    interface_key(sw, "sub1", "slot1", name="eth9"),
                    {"type": "1000base-t", "description": "on sub1"},
                ),
            ]
        ]
        result = engine.apply(events, source="test")
        assert {o.outcome for o in result.objects} <= {Outcome.CREATED, Outcome.UPDATED}, [
            o.reason for o in result.failed
        ]
        worlds.append(events)
    queries = {n: load_queries(list(registry), worlds, n) for n in (1, 3)}
    assert queries[1] == queries[3], queries
