"""The built-in model library applied by the engine to a real, migrated Nautobot database.

Every test names its objects with a fresh suffix: the session's database is shared by all tests.
Rows are read back from Nautobot's ORM; outcomes are checked object by object.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import pytest
from django.contrib.contenttypes.models import ContentType
from nautobot.dcim.models import (
    Device,
    DeviceType,
    Interface,
    InterfaceTemplate,
    Location,
    LocationType,
    Manufacturer,
    Platform,
)
from nautobot.extras.models import CustomField, ObjectChange, Role, Status, Tag
from nautobot.ipam.models import VLAN, IPAddress, Namespace, Prefix, VLANGroup
from nautobot.tenancy.models import Tenant, TenantGroup
from nautobot_ssot.contrib import NautobotModel
from nautobot_ssot.contrib.types import CustomFieldAnnotation

from streamsync.contract.envelope import Event, Op
from streamsync.models import BUILTIN_MODELS, builtin_model
from streamsync.sync.batch import BatchResult, Outcome
from streamsync.sync.engine import SyncEngine
from streamsync.sync.permissions import set_up_writer
from streamsync.sync.registry import ModelRegistry
from tests.integration.load_helpers import load_queries

pytestmark = pytest.mark.integration

CREATED, UPDATED, DELETED, UNCHANGED, FAILED = (
    Outcome.CREATED,
    Outcome.UPDATED,
    Outcome.DELETED,
    Outcome.UNCHANGED,
    Outcome.FAILED,
)


def ct(label: str) -> dict[str, str]:
    """A content type as contrib's ContentTypeDict: "dcim.device" -> {"app_label": "dcim", "model": "device"}."""
    app_label, model = label.split(".")
    return {"app_label": app_label, "model": model}


def up(model: str, key: dict[str, Any], **attrs: Any) -> Event:
    return Event(source="test", model=model, op=Op.UPSERT, key=key, attrs=attrs)


def rm(model: str, key: dict[str, Any]) -> Event:
    return Event(source="test", model=model, op=Op.DELETE, key=key)


@pytest.fixture(scope="module")
def engine() -> SyncEngine:
    registry = ModelRegistry(builtin_model(name) for name in BUILTIN_MODELS)
    return SyncEngine(registry, set_up_writer("streamsync", registry))


@pytest.fixture
def u() -> str:
    return uuid.uuid4().hex[:8]


def apply(engine: SyncEngine, *events: Event) -> BatchResult:
    result = engine.apply(list(events), source="test")
    assert result.rejected == [], [r.reason for r in result.rejected]
    return result


def outcomes(result: BatchResult) -> dict[str, Outcome]:
    return {o.key: o.outcome for o in result.objects}


def expect(result: BatchResult, *pairs: tuple[Event, Outcome]) -> None:
    """Exactly these objects, with these outcomes (failure reasons shown when they differ)."""
    expected = {event.canonical_key: outcome for event, outcome in pairs}
    assert outcomes(result) == expected, {o.key: o.reason for o in result.failed}


def all_are(result: BatchResult, outcome: Outcome, events: list[Event]) -> None:
    expect(result, *((e, outcome) for e in events))


# --- a small world with one object of every built-in model, in dependency order -------------


def world(u: str) -> list[Event]:
    """Everything a device with an interface, a VLAN and an address needs, parents first."""
    return [
        up("tenant", {"name": f"tenant-{u}"}),
        up(
            "role",
            {"name": f"role-{u}"},
            content_types=[ct("dcim.device"), ct("dcim.interface"), ct("ipam.vlan"), ct("ipam.prefix")],
        ),
        up("locationtype", {"name": f"region-{u}"}),
        up(
            "locationtype",
            {"name": f"site-{u}"},
            parent__name=f"region-{u}",
            content_types=[ct("dcim.device"), ct("ipam.vlangroup")],
        ),
        up("location", {"name": f"eu-{u}", "parent__name": None}, location_type__name=f"region-{u}"),
        up(
            "location",
            {"name": f"dc-{u}", "parent__name": f"eu-{u}"},
            location_type__name=f"site-{u}",
            tenant__name=f"tenant-{u}",
        ),
        up("vlangroup", {"name": f"vg-{u}"}, location__name=f"dc-{u}", range="100-199"),
        up("vlan", {"vid": 100, "vlan_group__name": f"vg-{u}"}, name="users", role__name=f"role-{u}"),
        up("namespace", {"name": f"ns-{u}"}),
        up("prefix", {"network": "10.1.0.0", "prefix_length": 16, "namespace__name": f"ns-{u}"}),
        up(
            "ipaddress",
            {"host": "10.1.2.3", "mask_length": 16, "parent__namespace__name": f"ns-{u}"},
            dns_name="sw.example.com",
        ),
        up("manufacturer", {"name": f"acme-{u}"}),
        up("devicetype", {"model": "X1", "manufacturer__name": f"acme-{u}"}),
        up("platform", {"name": f"os-{u}"}, manufacturer__name=f"acme-{u}"),
        up(
            "device",
            {"name": f"sw-{u}", "location__name": f"dc-{u}"},
            device_type__manufacturer__name=f"acme-{u}",
            device_type__model="X1",
            role__name=f"role-{u}",
            platform__name=f"os-{u}",
        ),
        up("interface", {"name": "eth0", "device__name": f"sw-{u}"}, type="1000base-t"),
    ]


def assert_world(u: str) -> None:
    """The rows `world(u)` describes, with Nautobot's defaults where the events named nothing."""

    site_type = LocationType.objects.get(name=f"site-{u}")
    assert site_type.parent.name == f"region-{u}"
    assert sorted(c.model for c in site_type.content_types.all()) == ["device", "vlangroup"]
    dc = Location.objects.get(name=f"dc-{u}")
    assert (dc.parent.name, dc.location_type, dc.status.name, dc.tenant.name) == (
        f"eu-{u}",
        site_type,
        "Active",
        f"tenant-{u}",
    )
    group = VLANGroup.objects.get(name=f"vg-{u}")
    assert (group.location, group.range) == (dc, "100-199")
    vlan = VLAN.objects.get(vlan_group=group, vid=100)
    assert (vlan.name, vlan.status.name, vlan.role.name, vlan.tenant) == ("users", "Active", f"role-{u}", None)
    prefix = Prefix.objects.get(namespace__name=f"ns-{u}", network="10.1.0.0", prefix_length=16)
    assert (prefix.status.name, prefix.type) == ("Active", "network")
    address = IPAddress.objects.get(parent__namespace__name=f"ns-{u}", host="10.1.2.3")
    assert (address.parent, address.mask_length, address.dns_name, address.status.name) == (
        prefix,
        16,
        "sw.example.com",
        "Active",
    )
    assert Platform.objects.get(name=f"os-{u}").manufacturer.name == f"acme-{u}"
    device = Device.objects.get(name=f"sw-{u}")
    assert (device.location, device.device_type.model, device.role.name, device.platform.name) == (
        dc,
        "X1",
        f"role-{u}",
        f"os-{u}",
    )
    assert (device.status.name, device.serial, device.asset_tag, device.tenant) == ("Active", "", None, None)
    interface = Interface.objects.get(device=device, name="eth0")
    assert (interface.type, interface.status.name, interface.enabled, interface.mgmt_only, interface.mtu) == (
        "1000base-t",
        "Active",
        True,
        False,
        None,
    )


# --- every op on every model family -------------------------------------------------------


def test_location_types_and_locations_create_update_delete(engine: SyncEngine, u: str) -> None:
    lt_key, loc_key = {"name": f"campus-{u}"}, {"name": f"hq-{u}", "parent__name": None}
    created = [
        up("locationtype", lt_key, nestable=True, description="campuses"),
        up("location", loc_key, location_type__name=f"campus-{u}", status__name="Planned", facility="F1"),
    ]
    all_are(apply(engine, *created), CREATED, created)
    lt = LocationType.objects.get(name=f"campus-{u}")
    assert (lt.nestable, lt.description, lt.parent) == (True, "campuses", None)
    loc = Location.objects.get(name=f"hq-{u}")
    assert (loc.location_type, loc.status.name, loc.facility, loc.description, loc.parent, loc.tenant) == (
        lt,
        "Planned",
        "F1",
        "",
        None,
        None,
    )

    # An upsert naming one attribute changes that one only.
    updated = [up("location", loc_key, description="head office"), up("locationtype", lt_key, description="sites")]
    all_are(apply(engine, *updated), UPDATED, updated)
    loc.refresh_from_db()
    lt.refresh_from_db()
    assert (loc.description, loc.status.name, loc.facility, loc.location_type) == ("head office", "Planned", "F1", lt)
    assert (lt.description, lt.nestable) == ("sites", True)

    deleted = [rm("location", loc_key), rm("locationtype", lt_key)]
    all_are(apply(engine, *deleted), DELETED, deleted)
    assert not Location.objects.filter(name=f"hq-{u}").exists()
    assert not LocationType.objects.filter(name=f"campus-{u}").exists()


def test_tenants_create_update_delete(engine: SyncEngine, u: str) -> None:
    TenantGroup.objects.create(name=f"customers-{u}")
    key = {"name": f"tenant-{u}"}
    created = up("tenant", key, tenant_group__name=f"customers-{u}", description="a customer")
    expect(apply(engine, created), (created, CREATED))
    tenant = Tenant.objects.get(name=f"tenant-{u}")
    assert (tenant.tenant_group.name, tenant.description, tenant.comments) == (f"customers-{u}", "a customer", "")

    updated = up("tenant", key, comments="since 2020")
    expect(apply(engine, updated), (updated, UPDATED))
    tenant.refresh_from_db()
    assert (tenant.tenant_group.name, tenant.description, tenant.comments) == (
        f"customers-{u}",
        "a customer",
        "since 2020",
    )

    deleted = rm("tenant", key)
    expect(apply(engine, deleted), (deleted, DELETED))
    assert not Tenant.objects.filter(name=f"tenant-{u}").exists()


def test_vlan_groups_and_vlans_create_update_delete(engine: SyncEngine, u: str) -> None:
    group_key, vlan_key = {"name": f"vg-{u}"}, {"vid": 120, "vlan_group__name": f"vg-{u}"}
    created = [
        up("vlangroup", group_key, range="100-199"),
        up("vlan", vlan_key, name="voice", status__name="Reserved", description="phones"),
    ]
    all_are(apply(engine, *created), CREATED, created)
    vlan = VLAN.objects.get(vlan_group__name=f"vg-{u}", vid=120)
    assert (vlan.name, vlan.status.name, vlan.description, vlan.role, vlan.tenant) == (
        "voice",
        "Reserved",
        "phones",
        None,
        None,
    )
    assert (vlan.vlan_group.range, vlan.vlan_group.location, vlan.vlan_group.description) == ("100-199", None, "")

    updated = [up("vlan", vlan_key, description="desk phones"), up("vlangroup", group_key, description="voice")]
    all_are(apply(engine, *updated), UPDATED, updated)
    vlan.refresh_from_db()
    assert (vlan.name, vlan.status.name, vlan.description) == ("voice", "Reserved", "desk phones")
    assert (vlan.vlan_group.range, vlan.vlan_group.description) == ("100-199", "voice")

    # The group's delete comes first; the engine deletes its VLAN before it.
    deleted = [rm("vlangroup", group_key), rm("vlan", vlan_key)]
    all_are(apply(engine, *deleted), DELETED, deleted)
    assert not VLANGroup.objects.filter(name=f"vg-{u}").exists()
    assert not VLAN.objects.filter(pk=vlan.pk).exists()


def test_namespaces_prefixes_and_ip_addresses_create_update_delete(engine: SyncEngine, u: str) -> None:
    ns_key = {"name": f"ns-{u}"}
    prefix_key = {"network": "192.0.2.0", "prefix_length": 24, "namespace__name": f"ns-{u}"}
    ip_key = {"host": "192.0.2.10", "mask_length": 24, "parent__namespace__name": f"ns-{u}"}
    created = [
        up("namespace", ns_key, description="lab"),
        up("prefix", prefix_key, status__name="Reserved"),
        up("ipaddress", ip_key, dns_name="gw.example.com"),
    ]
    all_are(apply(engine, *created), CREATED, created)
    prefix = Prefix.objects.get(namespace__name=f"ns-{u}", network="192.0.2.0", prefix_length=24)
    assert (prefix.status.name, prefix.type, prefix.description, prefix.namespace.description) == (
        "Reserved",
        "network",
        "",
        "lab",
    )
    address = IPAddress.objects.get(parent=prefix, host="192.0.2.10")
    assert (address.mask_length, address.dns_name, address.status.name, address.type) == (
        24,
        "gw.example.com",
        "Active",
        "host",
    )

    updated = [
        up("prefix", prefix_key, description="lab /24"),
        up("ipaddress", ip_key, description="gateway"),
        up("namespace", ns_key, description="the lab"),
    ]
    all_are(apply(engine, *updated), UPDATED, updated)
    prefix.refresh_from_db()
    address.refresh_from_db()
    assert (prefix.description, prefix.status.name) == ("lab /24", "Reserved")
    assert (address.description, address.dns_name, address.status.name) == ("gateway", "gw.example.com", "Active")
    assert Namespace.objects.get(name=f"ns-{u}").description == "the lab"

    deleted = [rm("namespace", ns_key), rm("prefix", prefix_key), rm("ipaddress", ip_key)]
    all_are(apply(engine, *deleted), DELETED, deleted)
    assert not Namespace.objects.filter(name=f"ns-{u}").exists()
    assert not Prefix.objects.filter(pk=prefix.pk).exists()
    assert not IPAddress.objects.filter(pk=address.pk).exists()


def test_address_keeps_its_key_when_a_narrower_prefix_adopts_it(engine: SyncEngine, u: str) -> None:
    """Nautobot re-parents an address under a new, narrower prefix; its key does not name the parent."""

    ip_key = {"host": "10.5.5.5", "mask_length": 24, "parent__namespace__name": f"ns-{u}"}
    events = [
        up("namespace", {"name": f"ns-{u}"}),
        up("prefix", {"network": "10.0.0.0", "prefix_length": 8, "namespace__name": f"ns-{u}"}),
        up("ipaddress", ip_key),
    ]
    all_are(apply(engine, *events), CREATED, events)
    narrower = up("prefix", {"network": "10.5.5.0", "prefix_length": 24, "namespace__name": f"ns-{u}"})
    expect(apply(engine, narrower), (narrower, CREATED))
    assert IPAddress.objects.get(host="10.5.5.5", parent__namespace__name=f"ns-{u}").parent.prefix_length == 24

    again = up("ipaddress", ip_key, description="still me")
    expect(apply(engine, again), (again, UPDATED))
    assert IPAddress.objects.get(host="10.5.5.5", parent__namespace__name=f"ns-{u}").description == "still me"


def test_dcim_create_update_delete(engine: SyncEngine, u: str) -> None:
    places = world(u)[:6]  # tenant, role, location types and locations
    all_are(apply(engine, *places), CREATED, places)

    keys = {
        "manufacturer": {"name": f"acme-{u}"},
        "devicetype": {"model": "X1", "manufacturer__name": f"acme-{u}"},
        "role": {"name": f"leaf-{u}"},
        "platform": {"name": f"os-{u}"},
        "device": {"name": f"sw-{u}", "location__name": f"dc-{u}"},
        "interface": {"name": "eth0", "device__name": f"sw-{u}"},
    }
    created = [
        up("manufacturer", keys["manufacturer"]),
        up("devicetype", keys["devicetype"], part_number="X1-48", u_height=2),
        up("role", keys["role"], color="ff0000", content_types=[ct("dcim.device")]),
        up("platform", keys["platform"], network_driver="cisco_ios"),
        up(
            "device",
            keys["device"],
            device_type__manufacturer__name=f"acme-{u}",
            device_type__model="X1",
            role__name=f"leaf-{u}",
            platform__name=f"os-{u}",
            serial="S1",
        ),
        up("interface", keys["interface"], type="10gbase-x-sfpp", mtu=9000),
    ]
    all_are(apply(engine, *created), CREATED, created)
    device_type = DeviceType.objects.get(model="X1", manufacturer__name=f"acme-{u}")
    assert (device_type.part_number, device_type.u_height, device_type.is_full_depth) == ("X1-48", 2, True)
    role = Role.objects.get(name=f"leaf-{u}")
    assert (role.color, [c.model for c in role.content_types.all()]) == ("ff0000", ["device"])
    platform = Platform.objects.get(name=f"os-{u}")
    assert (platform.network_driver, platform.manufacturer) == ("cisco_ios", None)
    device = Device.objects.get(name=f"sw-{u}", location__name=f"dc-{u}")
    assert (device.device_type, device.role, device.platform, device.serial, device.status.name) == (
        device_type,
        role,
        platform,
        "S1",
        "Active",
    )
    interface = Interface.objects.get(device=device, name="eth0")
    assert (interface.type, interface.mtu, interface.enabled, interface.description) == (
        "10gbase-x-sfpp",
        9000,
        True,
        "",
    )

    updated = [
        up("manufacturer", keys["manufacturer"], description="vendor"),
        up("devicetype", keys["devicetype"], part_number="X1-48T"),
        up("role", keys["role"], description="leaf switches"),
        up("platform", keys["platform"], manufacturer__name=f"acme-{u}"),
        up("device", keys["device"], serial="S2"),
        up("interface", keys["interface"], description="uplink"),
    ]
    all_are(apply(engine, *updated), UPDATED, updated)
    device.refresh_from_db()
    interface.refresh_from_db()
    device_type.refresh_from_db()
    role.refresh_from_db()
    platform.refresh_from_db()
    assert Manufacturer.objects.get(name=f"acme-{u}").description == "vendor"
    assert (device_type.part_number, device_type.u_height) == ("X1-48T", 2)
    assert (role.description, role.color) == ("leaf switches", "ff0000")
    assert (platform.manufacturer.name, platform.network_driver) == (f"acme-{u}", "cisco_ios")
    assert (device.serial, device.platform, device.role, device.status.name) == ("S2", platform, role, "Active")
    assert (interface.description, interface.mtu, interface.type) == ("uplink", 9000, "10gbase-x-sfpp")

    # Parents' deletes first on purpose: the engine deletes children before their parents.
    deleted = [rm(model, key) for model, key in keys.items()]
    all_are(apply(engine, *deleted), DELETED, deleted)
    assert not Manufacturer.objects.filter(name=f"acme-{u}").exists()
    assert not Role.objects.filter(name=f"leaf-{u}").exists()
    assert not Platform.objects.filter(name=f"os-{u}").exists()
    assert not Device.objects.filter(pk=device.pk).exists()
    assert not Interface.objects.filter(pk=interface.pk).exists()


def test_loading_costs_the_same_queries_for_one_object_as_for_many(engine: SyncEngine, u: str) -> None:
    """Tags, content types and foreign keys are fetched per model, never per object."""
    worlds = [world(f"{u}{i}") for i in range(3)]
    for events in worlds:
        apply(engine, *events)
    models = [builtin_model(name) for name in BUILTIN_MODELS]
    queries = {n: load_queries(models, worlds, n) for n in (1, 3)}
    assert queries[1] == queries[3], queries


# --- order inside one batch ---------------------------------------------------------------


def test_one_batch_in_the_wrong_order_creates_everything(engine: SyncEngine, u: str) -> None:
    """Children before parents, a child location before its parent location: all are created."""
    events = list(reversed(world(u)))
    assert events[0].model == "interface"
    all_are(apply(engine, *events), CREATED, events)
    assert_world(u)


def test_deletes_with_parents_first_in_one_batch(engine: SyncEngine, u: str) -> None:
    apply(engine, *world(u))
    # Each parent's delete before its children's.
    deleted = [
        rm("locationtype", {"name": f"site-{u}"}),
        rm("location", {"name": f"dc-{u}", "parent__name": f"eu-{u}"}),
        rm("vlangroup", {"name": f"vg-{u}"}),
        rm("devicetype", {"model": "X1", "manufacturer__name": f"acme-{u}"}),
        rm("device", {"name": f"sw-{u}", "location__name": f"dc-{u}"}),
        rm("interface", {"name": "eth0", "device__name": f"sw-{u}"}),
        rm("vlan", {"vid": 100, "vlan_group__name": f"vg-{u}"}),
    ]
    all_are(apply(engine, *deleted), DELETED, deleted)
    assert not LocationType.objects.filter(name=f"site-{u}").exists()
    assert not Location.objects.filter(name=f"dc-{u}").exists()
    assert not Device.objects.filter(name=f"sw-{u}").exists()
    assert not Interface.objects.filter(device__name=f"sw-{u}").exists()
    assert not VLAN.objects.filter(vlan_group__name=f"vg-{u}").exists()
    # What the batch did not name is still there.
    assert LocationType.objects.filter(name=f"region-{u}").exists()
    assert Location.objects.filter(name=f"eu-{u}").exists()


def test_deleting_a_location_tree_parent_first_reports_every_location_deleted(engine: SyncEngine, u: str) -> None:
    apply(engine, *world(u)[:6])
    deleted = [
        rm("location", {"name": f"eu-{u}", "parent__name": None}),
        rm("location", {"name": f"dc-{u}", "parent__name": f"eu-{u}"}),
    ]
    result = apply(engine, *deleted)
    assert not Location.objects.filter(name__in=[f"eu-{u}", f"dc-{u}"]).exists()  # this part holds today
    all_are(result, DELETED, deleted)


# --- failures stay with their object --------------------------------------------------------


def test_one_failing_object_fails_alone(engine: SyncEngine, u: str) -> None:
    apply(engine, *world(u))
    out_of_range = up("vlan", {"vid": 200, "vlan_group__name": f"vg-{u}"}, name="outside")
    too_big = up("vlan", {"vid": 5000, "vlan_group__name": None}, name=f"global-{u}")
    unknown_role = up("vlan", {"vid": 150, "vlan_group__name": f"vg-{u}"}, name="x", role__name=f"nope-{u}")
    unknown_type = up(
        "device",
        {"name": f"sw2-{u}", "location__name": f"dc-{u}"},
        device_type__manufacturer__name=f"acme-{u}",
        device_type__model="nope",
        role__name=f"role-{u}",
    )
    no_prefix = up("ipaddress", {"host": "172.16.0.1", "mask_length": 24, "parent__namespace__name": f"ns-{u}"})
    protected = rm("manufacturer", {"name": f"acme-{u}"})  # its device type is still in use
    good = [
        up("vlan", {"vid": 101, "vlan_group__name": f"vg-{u}"}, name="guests"),
        up("tenant", {"name": f"other-{u}"}),
        up("interface", {"name": "eth0", "device__name": f"sw-{u}"}, description="fine"),
    ]
    result = apply(engine, out_of_range, too_big, unknown_role, unknown_type, no_prefix, protected, *good)
    expect(
        result,
        (out_of_range, FAILED),
        (too_big, FAILED),
        (unknown_role, FAILED),
        (unknown_type, FAILED),
        (no_prefix, FAILED),
        (protected, FAILED),
        (good[0], CREATED),
        (good[1], CREATED),
        (good[2], UPDATED),
    )
    by_key = {o.key: o for o in result.objects}
    # A related object that may still arrive, or a dependant that may still go: worth retrying.
    assert {o.key: o.retryable for o in result.objects} == {
        out_of_range.canonical_key: False,
        too_big.canonical_key: False,
        unknown_role.canonical_key: True,
        unknown_type.canonical_key: True,
        no_prefix.canonical_key: True,
        protected.canonical_key: True,
        **{e.canonical_key: False for e in good},
    }
    assert "VLAN ID is not contained in VLAN Group range" in by_key[out_of_range.canonical_key].reason
    assert "4094" in by_key[too_big.canonical_key].reason
    assert "ProtectedError" in by_key[protected.canonical_key].reason

    assert not VLAN.objects.filter(vid__in=[200, 150], vlan_group__name=f"vg-{u}").exists()
    assert not VLAN.objects.filter(name=f"global-{u}").exists()
    assert not Device.objects.filter(name=f"sw2-{u}").exists()
    assert not IPAddress.objects.filter(host="172.16.0.1", parent__namespace__name=f"ns-{u}").exists()
    assert Manufacturer.objects.filter(name=f"acme-{u}").exists()
    assert VLAN.objects.get(vid=101, vlan_group__name=f"vg-{u}").name == "guests"
    assert Tenant.objects.filter(name=f"other-{u}").exists()
    assert Device.objects.get(name=f"sw-{u}").interfaces.get(name="eth0").description == "fine"


# --- idempotency ----------------------------------------------------------------------------


def test_the_same_batch_twice_changes_nothing_the_second_time(engine: SyncEngine, u: str) -> None:
    events = world(u)
    all_are(apply(engine, *events), CREATED, events)
    logged = ObjectChange.objects.count()
    all_are(apply(engine, *events), UNCHANGED, events)
    assert ObjectChange.objects.count() == logged
    assert_world(u)


# --- interfaces Nautobot creates from the device type's templates ---------------------------


def _device_type_with_templates(engine: SyncEngine, u: str, **template: Any) -> None:
    apply(engine, *world(u)[:6], *world(u)[11:13])  # places, roles, manufacturer, device type
    device_type = DeviceType.objects.get(model="X1", manufacturer__name=f"acme-{u}")
    for name in ("eth0", "eth1"):
        InterfaceTemplate.objects.create(device_type=device_type, name=name, type="1000base-t", **template)


def _new_device(u: str) -> Event:
    return up(
        "device",
        {"name": f"sw-{u}", "location__name": f"dc-{u}"},
        device_type__manufacturer__name=f"acme-{u}",
        device_type__model="X1",
        role__name=f"role-{u}",
    )


def test_interfaces_from_device_type_templates_are_adopted(engine: SyncEngine, u: str) -> None:
    _device_type_with_templates(engine, u)
    device = _new_device(u)
    eth0 = up("interface", {"name": "eth0", "device__name": f"sw-{u}"}, type="1000base-t", description="uplink")
    eth1 = up("interface", {"name": "eth1", "device__name": f"sw-{u}"}, type="1000base-t", description="server")
    result = apply(engine, eth0, device, eth1)
    expect(result, (eth0, UPDATED), (device, CREATED), (eth1, UPDATED))
    interfaces = Interface.objects.filter(device__name=f"sw-{u}").order_by("name")
    assert [(i.name, i.type, i.description) for i in interfaces] == [
        ("eth0", "1000base-t", "uplink"),
        ("eth1", "1000base-t", "server"),
    ]


def test_adopting_a_template_interface_keeps_what_the_event_does_not_name(engine: SyncEngine, u: str) -> None:
    _device_type_with_templates(engine, u, mgmt_only=True, label="MGMT")
    eth0 = up("interface", {"name": "eth0", "device__name": f"sw-{u}"}, type="1000base-t", description="oob")
    expect(apply(engine, _new_device(u), eth0), (_new_device(u), CREATED), (eth0, UPDATED))
    interface = Interface.objects.get(device__name=f"sw-{u}", name="eth0")
    assert interface.description == "oob"
    assert (interface.mgmt_only, interface.label) == (True, "MGMT")


# --- tags and custom fields -----------------------------------------------------------------


def test_tags_replace_as_a_set_and_must_be_allowed_on_the_model(engine: SyncEngine, u: str) -> None:
    for name in (f"core-{u}", f"edge-{u}"):
        Tag.objects.create(name=name).content_types.add(ContentType.objects.get_for_model(Location))
    Tag.objects.create(name=f"billing-{u}").content_types.add(ContentType.objects.get_for_model(Tenant))
    apply(engine, *world(u)[:6])
    key = {"name": f"dc-{u}", "parent__name": f"eu-{u}"}

    def tags() -> list[str]:
        return sorted(Location.objects.get(name=f"dc-{u}").tags.values_list("name", flat=True))

    tagged = up("location", key, tags=[{"name": f"edge-{u}"}, {"name": f"core-{u}"}])
    expect(apply(engine, tagged), (tagged, UPDATED))
    assert tags() == [f"core-{u}", f"edge-{u}"]
    same_in_other_order = up("location", key, tags=[{"name": f"core-{u}"}, {"name": f"edge-{u}"}])
    expect(apply(engine, same_in_other_order), (same_in_other_order, UNCHANGED))
    fewer = up("location", key, tags=[{"name": f"edge-{u}"}])
    expect(apply(engine, fewer), (fewer, UPDATED))
    assert tags() == [f"edge-{u}"]
    description_only = up("location", key, description="tags untouched")
    expect(apply(engine, description_only), (description_only, UPDATED))
    assert tags() == [f"edge-{u}"]

    not_for_locations = up("location", key, tags=[{"name": f"billing-{u}"}])
    missing = up("tenant", {"name": f"tenant-{u}"}, tags=[{"name": f"nope-{u}"}])
    result = apply(engine, not_for_locations, missing)
    expect(result, (not_for_locations, FAILED), (missing, FAILED))
    by_key = {o.key: o for o in result.objects}
    assert "not allowed on locations" in by_key[not_for_locations.canonical_key].reason
    assert not by_key[not_for_locations.canonical_key].retryable
    assert by_key[missing.canonical_key].retryable  # the tag may be created later
    assert tags() == [f"edge-{u}"]
    assert not Tenant.objects.get(name=f"tenant-{u}").tags.exists()


CUSTOM_FIELD_KEY = "streamsync_vendor_code"


class VendorModel(NautobotModel):
    """A user's own contrib model with a custom field, used by streamsync as it is."""

    _model = Manufacturer
    _modelname = "vendor"
    _identifiers = ("name",)
    _attributes = ("description", "vendor_code")

    name: str
    description: str = ""
    vendor_code: Annotated[str | None, CustomFieldAnnotation(key=CUSTOM_FIELD_KEY)] = None


def test_a_users_contrib_model_with_a_custom_field_works_unchanged(u: str) -> None:
    field, _ = CustomField.objects.get_or_create(
        key=CUSTOM_FIELD_KEY, defaults={"label": "Vendor code", "type": "text"}
    )
    field.content_types.add(ContentType.objects.get_for_model(Manufacturer))
    engine = SyncEngine(ModelRegistry([VendorModel]), set_up_writer("streamsync", [VendorModel]))
    key = {"name": f"acme-{u}"}

    created = up("vendor", key, vendor_code="AC-1")
    expect(apply(engine, created), (created, CREATED))
    assert Manufacturer.objects.get(name=f"acme-{u}").cf[CUSTOM_FIELD_KEY] == "AC-1"
    described = up("vendor", key, description="tools")
    expect(apply(engine, described), (described, UPDATED))
    manufacturer = Manufacturer.objects.get(name=f"acme-{u}")
    assert (manufacturer.description, manufacturer.cf[CUSTOM_FIELD_KEY]) == ("tools", "AC-1")
    recoded = up("vendor", key, vendor_code="AC-2")
    expect(apply(engine, recoded), (recoded, UPDATED))
    expect(apply(engine, recoded), (recoded, UNCHANGED))
    assert Manufacturer.objects.get(name=f"acme-{u}").cf[CUSTOM_FIELD_KEY] == "AC-2"


# --- an event about a parent leaves children it does not name alone -------------------------


def test_events_about_parents_never_touch_their_children(engine: SyncEngine, u: str) -> None:
    apply(engine, *world(u), up("interface", {"name": "eth1", "device__name": f"sw-{u}"}, type="1000base-t"))
    parents = [
        up("device", {"name": f"sw-{u}", "location__name": f"dc-{u}"}, serial="S9"),
        up("location", {"name": f"eu-{u}", "parent__name": None}, description="Europe"),
        up("vlangroup", {"name": f"vg-{u}"}, description="all of them"),
        up("namespace", {"name": f"ns-{u}"}, description="ours"),
    ]
    all_are(apply(engine, *parents), UPDATED, parents)
    device = Device.objects.get(name=f"sw-{u}")
    assert device.serial == "S9"
    assert sorted(Interface.objects.filter(device=device).values_list("name", flat=True)) == ["eth0", "eth1"]
    assert Location.objects.get(name=f"dc-{u}").parent.name == f"eu-{u}"
    assert VLAN.objects.filter(vlan_group__name=f"vg-{u}", vid=100).exists()
    assert IPAddress.objects.get(host="10.1.2.3", parent__namespace__name=f"ns-{u}").parent.prefix_length == 16


# --- identifiers that match more than one row -----------------------------------------------


def test_identifiers_matching_two_rows_fail_that_object_alone(engine: SyncEngine, u: str) -> None:
    # Nautobot allows two devices of one name in different locations; interface keys name the device by name.
    apply(engine, *world(u))
    first = Device.objects.get(name=f"sw-{u}")
    active = Status.objects.get(name="Active")
    dc2 = Location.objects.create(
        name=f"dc2-{u}", parent=first.location.parent, location_type=first.location.location_type, status=active
    )
    twin = Device.objects.create(
        name=f"sw-{u}", location=dc2, device_type=first.device_type, role=first.role, status=active
    )
    Interface.objects.create(device=twin, name="eth0", type="1000base-t", status=active)

    ambiguous = up("interface", {"name": "eth0", "device__name": f"sw-{u}"}, description="which one?")
    unrelated = up("manufacturer", {"name": f"acme-{u}"}, description="applied anyway")
    result = apply(engine, ambiguous, unrelated)
    expect(result, (ambiguous, FAILED), (unrelated, UPDATED))
    assert Manufacturer.objects.get(name=f"acme-{u}").description == "applied anyway"


def test_an_address_spelled_differently_is_still_the_same_address(engine: SyncEngine, u: str) -> None:
    events = [
        up("namespace", {"name": f"ns-{u}"}),
        up("prefix", {"network": "2001:db8::", "prefix_length": 32, "namespace__name": f"ns-{u}"}),
        up("ipaddress", {"host": "2001:db8::1", "mask_length": 64, "parent__namespace__name": f"ns-{u}"}),
    ]
    all_are(apply(engine, *events), CREATED, events)
    deleted = rm("ipaddress", {"host": "2001:DB8::1", "mask_length": 64, "parent__namespace__name": f"ns-{u}"})
    result = apply(engine, deleted)
    # Results name the object by its normalised key, the one Nautobot's row has.
    assert outcomes(result) == {events[2].canonical_key: DELETED}, {o.key: o.reason for o in result.failed}
    assert not IPAddress.objects.filter(parent__namespace__name=f"ns-{u}").exists()
