"""Models derived from Nautobot's metadata, through Kafka and a running worker into Nautobot.

A source names Nautobot models as `app_label.model`; none of them has a built-in model. Three rounds
of events (create with children before parents, update, delete); after each, every object the
test made is read back from Nautobot, every identifier and attribute its model syncs, and compared
whole with the end state the events describe.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import uuid
from pathlib import Path
from typing import Any, get_args, get_type_hints

import pytest

from tests.integration.conftest import Stream, wait_for
from tests.integration.state_helpers import own_source, publish

pytestmark = pytest.mark.integration

MODELS = [
    "tenant",
    "dcim.rackgroup",
    "dcim.rack",
    "circuits.provider",
    "circuits.circuittype",
    "circuits.circuit",
    "virtualization.clustertype",
    "virtualization.cluster",
    "virtualization.virtualmachine",
    "ipam.routetarget",
    "ipam.vrf",
    "circuits.circuittermination",
    "dcim.powerpanel",
    "virtualization.vminterface",  # names VLANs as the built-in `vlan` keys them: Nautobot's key is a pk
]


def _event(source: str, op: str, model: str, key: dict[str, Any], **attrs: Any) -> dict[str, Any]:
    return {"schema": "streamsync.event/v1", "source": source, "model": model, "op": op, "key": key, "attrs": attrs}


def _places(u: str) -> None:
    """What the test does not stream: a location whose type takes what is placed there, and global VLANs."""
    from django.contrib.contenttypes.models import ContentType
    from nautobot.circuits.models import CircuitTermination
    from nautobot.dcim.models import Location, LocationType, PowerPanel, Rack, RackGroup
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup
    from nautobot.virtualization.models import Cluster

    placed = (Rack, RackGroup, Cluster, CircuitTermination, PowerPanel)
    site = LocationType.objects.create(name=f"site-{u}")
    site.content_types.add(*(ContentType.objects.get_for_model(m) for m in placed))
    active = Status.objects.get(name="Active")
    Location.objects.create(name=f"dc-{u}", location_type=site, status=active)
    group = VLANGroup.objects.create(name=f"vg-{u}")
    for vid in (100, 200, 300):
        VLAN.objects.create(vid=vid, name=f"v{vid}", vlan_group=group, status=active)


def _value(obj: Any, name: str, model: Any) -> Any:
    """`name` of a Nautobot object as events spell it, read with plain attribute access."""
    value = obj
    for part in name.split("__"):
        value = getattr(value, part, None) if value is not None else None
    if hasattr(value, "all"):  # many-to-many: the related objects by the fields its events name them by
        keys = _item_keys(model, name)
        return _items([{key: _value(related, key, None) for key in keys} for related in value.all()], keys)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def _item_keys(model: Any, name: str) -> list[str]:
    """The fields of one item of a many-to-many attribute, as its model declares them."""
    return list(get_type_hints(get_args(get_type_hints(model)[name])[0]))


def _items(items: list[dict[str, Any]], keys: list[str]) -> list[list[Any]]:
    """Many-to-many items compared as a set."""
    return sorted(([item[key] for key in keys] for item in items), key=json.dumps)


def _state(u: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Per model, every object of this test, keyed by its event key's JSON, with every synced field."""
    from streamsync.settings import resolve_model

    state: dict[str, dict[str, dict[str, Any]]] = {}
    for name in MODELS[1:]:
        model = resolve_model(name)
        orm = model._model  # type: ignore[attr-defined]
        fields = [*model._identifiers, *model._attributes]
        mine = [o for o in orm.objects.all() if any(u in str(_value(o, f, model)) for f in model._identifiers)]
        for obj in mine:
            values = {field: _value(obj, field, model) for field in fields}
            key = json.dumps({field: values[field] for field in model._identifiers}, sort_keys=True)
            state.setdefault(model.get_type(), {})[key] = values
    return state


def _expected(events: list[dict[str, Any]], before: dict[str, Any] | None = None) -> dict[str, Any]:
    """The end state `events` describe: each object's synced fields, the model's defaults where an event is silent."""
    from streamsync.settings import resolve_model

    by_name = {resolve_model(name).get_type(): resolve_model(name) for name in MODELS}
    state = json.loads(json.dumps(before or {}))
    for event in events:
        model = by_name[event["model"]]
        if model.get_type() == "tenant":
            continue
        key = json.dumps(event["key"], sort_keys=True)
        objects = state.setdefault(event["model"], {})
        if event["op"] == "delete":
            objects.pop(key, None)
            continue
        if key not in objects:
            objects[key] = {
                name: field.get_default(call_default_factory=True)
                for name, field in model.model_fields.items()
                if name in model._attributes and not field.is_required()
            }
            objects[key].update(event["key"])
        for name, value in event["attrs"].items():
            is_list = isinstance(value, list) and name != "local_config_context_data"
            objects[key][name] = _items(value, _item_keys(model, name)) if is_list else value
    return {model: objects for model, objects in state.items() if objects}


def test_derived_models_round_trip_through_a_worker(stream: Stream, start_worker: Any, tmp_path: Path) -> None:
    u = uuid.uuid4().hex[:8]
    stream, source = own_source(stream, tmp_path, MODELS, user=f"streamsync-{u}")
    _places(u)
    dc, tenant = f"dc-{u}", f"t-{u}"
    rg, rg_child, provider, cl = f"rg-{u}", f"rgc-{u}", f"prov-{u}", f"cl-{u}"

    def up(model: str, key: dict[str, Any], **attrs: Any) -> dict[str, Any]:
        return _event(source, "upsert", model, key, **attrs)

    def rm(model: str, key: dict[str, Any]) -> dict[str, Any]:
        return _event(source, "delete", model, key)

    rack_key = {"name": f"r1-{u}", "rack_group__name": rg_child, "rack_group__location__name": dc}
    loose_rack = {"name": f"r2-{u}", "rack_group__name": None, "rack_group__location__name": None}
    circuit_key = {"provider__name": provider, "cid": f"C-{u}"}
    vm_key = {"cluster__name": cl, "tenant__name": None, "name": f"vm1-{u}"}
    tenant_vm = {"cluster__name": cl, "tenant__name": tenant, "name": f"vm2-{u}"}
    vrf_key = {"namespace__name": "Global", "rd": f"rd-{u}"}
    term_key = {"circuit__provider__name": provider, "circuit__cid": f"C-{u}", "term_side": "A"}
    eth0 = {**{f"virtual_machine__{k}": v for k, v in vm_key.items()}, "name": "eth0"}
    created = [
        up("tenant", {"name": tenant}),
        up("rackgroup", {"name": rg, "location__name": dc}, description="row A"),
        up("rackgroup", {"name": rg_child, "location__name": dc}, parent__name=rg, parent__location__name=dc),
        up(
            "rack",
            rack_key,
            location__name=dc,
            tenant__name=tenant,
            u_height=48,
            type="4-post-cabinet",
            serial="S-1",
            asset_tag=f"A-{u}",
            facility_id=f"F-{u}",
            desc_units=True,
            outer_width=600,
            outer_unit="mm",
            comments="first rack",
        ),
        up("rack", loose_rack, location__name=dc, width=23),
        up("provider", {"name": provider}, asn=65001, account="acct-1", portal_url="https://example.net/portal"),
        up("circuittype", {"name": f"ct-{u}"}, description="transit"),
        up(
            "circuit",
            circuit_key,
            circuit_type__name=f"ct-{u}",
            tenant__name=tenant,
            install_date="2026-05-01",
            commit_rate=1000,
            description="uplink",
        ),
        up("clustertype", {"name": f"clt-{u}"}),
        up("cluster", {"name": cl}, cluster_type__name=f"clt-{u}", location__name=dc, comments="hosts"),
        up("virtualmachine", vm_key, vcpus=4, memory=8192, disk=100, comments="web"),
        up("virtualmachine", tenant_vm, vcpus=2),
        up("routetarget", {"name": f"rt1-{u}"}, description="import"),
        up("routetarget", {"name": f"rt2-{u}"}, tenant__name=tenant),
        up("vrf", vrf_key, name=f"vrf-{u}", tenant__name=tenant, import_targets=[{"name": f"rt1-{u}"}]),
        up("circuittermination", term_key, location__name=dc, port_speed=10_000, xconnect_id="XC-7"),
        up("powerpanel", {"name": f"pp-{u}", "location__name": dc}, rack_group__name=rg, rack_group__location__name=dc),
        up(
            "vminterface",
            eth0,
            mode="tagged",
            untagged_vlan__vid=100,
            untagged_vlan__vlan_group__name=f"vg-{u}",
            tagged_vlans=[{"vid": 300, "vlan_group__name": f"vg-{u}"}, {"vid": 200, "vlan_group__name": f"vg-{u}"}],
            mtu=9000,
        ),
    ]
    worker = start_worker("--source", source, "--batch-timeout", "0.2", on=stream)
    publish(stream, tmp_path, *reversed(created), source=source)  # children before parents
    expected = _expected(created)
    assert set(expected) == {m.split(".")[-1] for m in MODELS[1:]}  # every derived model has objects here
    wait_for(lambda: _state(u) == expected, 240, f"everything created: {expected}", worker)

    updated = [
        up("rack", rack_key, u_height=42, asset_tag=None, comments=""),
        up("provider", {"name": provider}, asn=None),
        up("circuit", circuit_key, commit_rate=2000, install_date=None),
        up("virtualmachine", vm_key, memory=16384, status__name="Offline"),
        up("vrf", vrf_key, import_targets=[], export_targets=[{"name": f"rt1-{u}"}, {"name": f"rt2-{u}"}]),
        up("rackgroup", {"name": rg_child, "location__name": dc}, parent__name=None, parent__location__name=None),
        up("vminterface", eth0, untagged_vlan__vid=None, untagged_vlan__vlan_group__name=None, tagged_vlans=[]),
        up("circuittermination", term_key, port_speed=None, description="moved"),
    ]
    publish(stream, tmp_path, *updated, source=source)
    expected = _expected(updated, expected)
    wait_for(lambda: _state(u) == expected, 120, f"the updates: {expected}", worker)

    deleted = [
        rm("virtualmachine", tenant_vm),
        rm("circuittermination", term_key),
        rm("circuit", circuit_key),
        rm("powerpanel", {"name": f"pp-{u}", "location__name": dc}),
        rm("rack", loose_rack),
        rm("vrf", vrf_key),
        rm("routetarget", {"name": f"rt2-{u}"}),
    ]
    publish(stream, tmp_path, *deleted, source=source)
    expected = _expected(deleted, expected)
    wait_for(lambda: _state(u) == expected, 120, f"the deletes: {expected}", worker)
    assert worker.stop() == 0


def test_nautobots_own_changes_of_a_derived_model_are_events_keyed_by_its_natural_key(
    stream: Stream, alice: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The event broker publishes a rack's and a circuit's changes as any model's: key, attrs, upsert, delete."""
    from nautobot.circuits.models import Circuit, CircuitType, Provider
    from nautobot.dcim.models import Location, Rack
    from nautobot.extras.context_managers import web_request_context
    from nautobot.extras.models import Status

    from streamsync.contract.envelope import canonical_key
    from streamsync.models.bookkeeping import OutboxEvent
    from streamsync.outbox.broker import StreamsyncEventBroker
    from streamsync.settings import StreamsyncSettings

    u = uuid.uuid4().hex[:8]
    _places(u)
    active = Status.objects.get(name="Active")
    (broker,) = [b for b in _event_brokers() if isinstance(b, StreamsyncEventBroker)]
    sources = {"cmdb": {"models": ["dcim.rack", "circuits.circuit"]}}
    broker.configure(StreamsyncSettings.load({"topic_prefix": stream.prefix, "sources": sources}))
    topic = broker.topic
    try:
        with web_request_context(alice):
            rack = Rack.objects.create(name=f"r-{u}", location=Location.objects.get(name=f"dc-{u}"), status=active)
            provider = Provider.objects.create(name=f"prov-{u}")
            kind = CircuitType.objects.create(name=f"ct-{u}")
            circuit = Circuit.objects.create(
                cid=f"C-{u}",
                provider=provider,
                circuit_type=kind,
                status=active,
                install_date=datetime.date(2026, 5, 1),
            )
        with web_request_context(alice):
            rack.u_height = 44
            rack.validated_save()
        with web_request_context(alice):
            circuit.delete()
    finally:
        broker.configure()
    rows = [json.loads(row.value) for row in OutboxEvent.objects.filter(topic=topic).order_by("id")]
    rack_key = {"name": f"r-{u}", "rack_group__name": None, "rack_group__location__name": None}
    circuit_key = {"provider__name": f"prov-{u}", "cid": f"C-{u}"}
    assert [(row["model"], row["op"], row["key"]) for row in rows] == [
        ("rack", "upsert", rack_key),
        ("circuit", "upsert", circuit_key),
        ("rack", "upsert", rack_key),
        ("circuit", "delete", circuit_key),
    ]
    assert rows[2]["attrs"]["u_height"] == 44 and rows[2]["attrs"]["location__name"] == f"dc-{u}"
    assert (rows[1]["attrs"]["circuit_type__name"], rows[1]["attrs"]["install_date"]) == (f"ct-{u}", "2026-05-01")
    assert canonical_key("rack", rack_key) in {row.key for row in OutboxEvent.objects.filter(topic=topic)}
    assert "was not recorded" not in caplog.text


def _event_brokers() -> list[Any]:
    from nautobot.core.events import _EVENT_BROKERS

    return list(_EVENT_BROKERS)


def test_a_worker_refuses_a_model_a_derivation_cannot_guess_at_start_up(stream: Stream, tmp_path: Path) -> None:
    from tests.integration.conftest import write_nautobot_config

    config = write_nautobot_config(tmp_path / "nautobot_config.py", sources={"cmdb": {"models": ["dcim.cable"]}})
    result = dataclasses.replace(stream, extra_env={"NAUTOBOT_CONFIG": str(config)}).cli("worker", timeout=180)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-4000:]
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")] == [
        "Error: model 'dcim.cable': dcim.cable cannot be derived: a cable terminates on two ends, each of several "
        "types (interface, front or rear port, console, power or circuit termination), and Nautobot names a cable "
        "by its primary key alone; no built-in model covers it"
    ]


def test_resync_repairs_drift_of_derived_models_from_the_state_topic(
    stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    """What a worker put on the state topic for derived models is what a resync restores."""
    from nautobot.circuits.models import CircuitType, Provider

    u = uuid.uuid4().hex[:8]
    stream, source = own_source(stream, tmp_path, ["circuits.provider", "circuits.circuittype"], user=f"ss-{u}")
    events = [
        _event(source, "upsert", "provider", {"name": f"p1-{u}"}, asn=65001, account="a1"),
        _event(source, "upsert", "provider", {"name": f"p2-{u}"}, comments="second"),
        _event(source, "upsert", "circuittype", {"name": f"ct-{u}"}, description="transit"),
    ]
    worker = start_worker("--source", source, "--batch-timeout", "0.2", on=stream)
    publish(stream, tmp_path, *events, source=source)

    def providers() -> dict[str, tuple[Any, ...]]:
        return {p.name: (p.asn, p.account, p.comments) for p in Provider.objects.filter(name__endswith=u)}

    streamed = {f"p1-{u}": (65001, "a1", ""), f"p2-{u}": (None, "", "second")}
    wait_for(lambda: providers() == streamed, 120, "the streamed providers", worker)
    wait_for(lambda: CircuitType.objects.filter(name=f"ct-{u}").exists(), 60, "the circuit type", worker)
    assert worker.stop() == 0

    drifted = Provider.objects.get(name=f"p1-{u}")
    drifted.account = "edited by hand"
    drifted.validated_save()
    Provider.objects.get(name=f"p2-{u}").delete()
    CircuitType.objects.filter(name=f"ct-{u}").update(description="edited too")
    applied = stream.cli("resync", source, "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "created 1, updated 2, deleted 0" in applied.stdout, applied.stdout
    assert providers() == streamed
    assert CircuitType.objects.get(name=f"ct-{u}").description == "transit"


def test_a_worker_logs_where_its_models_refer_to_each_other_in_a_cycle(
    stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    stream, source = own_source(stream, tmp_path, ["dcim.modulebay", "dcim.module"])
    worker = start_worker("--source", source, on=stream)

    def logged() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("event") == "models refer to each other in a cycle"]

    wait_for(lambda: bool(logged()), 120, "the cycle logged", worker)
    (line,) = logged()
    assert (line["level"], line["source"], line["child"], line["parent"], line["retried"]) == (
        "warning",
        source,
        "modulebay",
        "module",
        True,
    )
    assert line["why"] == "a modulebay that arrives before its module is retried until the module exists"
    # Stopped once running: a SIGTERM before Faust handles signals ends the process by the signal (-15).
    wait_for(lambda: "outbox relay starting" in worker.output(), 120, "the worker running", worker)
    assert worker.stop() == 0
