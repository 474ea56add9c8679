"""Custom fields of every type and relationships of every kind, through Kafka and a running worker.

Defined in Nautobot before the worker starts (as a user defines them in the UI), then written by
events as `cf_<key>` and `rel_<key>` attributes of built-in models: created children first,
updated, cleared. After each round every tenant's custom field data and every association of the
test's relationships is compared whole. Values Nautobot refuses are dead-lettered with a reason that
names the custom field or relationship.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stream, wait_for
from tests.integration.state_helpers import own_source, publish

pytestmark = pytest.mark.integration

TYPES = ["text", "integer", "boolean", "date", "datetime", "url", "select", "multi-select", "json", "markdown"]
KINDS = ["one-to-one", "one-to-many", "many-to-many", "symmetric-one-to-one", "symmetric-many-to-many"]


@pytest.fixture
def defined() -> Iterator[str]:
    """Custom fields of every type on tenants, and relationships of every kind; removed afterwards.

    Tenants relate to VLANs one-to-one (`<u>_one`), one-to-many (`<u>_many`), many-to-many
    (`<u>_mm`); to tenants symmetrically (`<u>_twin`, `<u>_peers`) and one-to-many (`<u>_parent`,
    a tenant on both ends: `_destinations` and `_sources`).
    """
    from django.contrib.contenttypes.models import ContentType
    from nautobot.extras.models import CustomField, CustomFieldChoice, Relationship
    from nautobot.ipam.models import VLAN
    from nautobot.tenancy.models import Tenant

    u = "x" + uuid.uuid4().hex[:6]
    tenant, vlan = ContentType.objects.get_for_model(Tenant), ContentType.objects.get_for_model(VLAN)
    fields = []
    for kind in TYPES:
        field = CustomField.objects.create(key=f"{u}_{kind.replace('-', '_')}", label=f"{u} {kind}", type=kind)
        field.content_types.add(tenant)
        fields.append(field)
        if kind in ("select", "multi-select"):
            for value in ("red", "green", "blue"):
                CustomFieldChoice.objects.create(custom_field=field, value=value)
    relationships = [
        Relationship.objects.create(
            label=f"{u} {key}", key=f"{u}_{key}", type=kind, source_type=tenant, destination_type=peer
        )
        for key, kind, peer in [
            ("one", "one-to-one", vlan),
            ("many", "one-to-many", vlan),
            ("mm", "many-to-many", vlan),
            ("twin", "symmetric-one-to-one", tenant),
            ("peers", "symmetric-many-to-many", tenant),
            ("parent", "one-to-many", tenant),
        ]
    ]
    try:
        yield u
    finally:  # the run's database is shared: no other test may see these attributes
        for relationship in relationships:
            relationship.delete()
        for field in fields:
            field.delete()


def _event(source: str, op: str, model: str, key: dict[str, Any], **attrs: Any) -> dict[str, Any]:
    return {"schema": "streamsync.event/v1", "source": source, "model": model, "op": op, "key": key, "attrs": attrs}


def _state(u: str) -> dict[str, Any]:
    """Per tenant of the test: its custom field data of the test's fields, and per relationship its peers."""
    from nautobot.extras.models import RelationshipAssociation
    from nautobot.tenancy.models import Tenant

    def name(obj: Any) -> Any:
        return obj.name if isinstance(obj, Tenant) else obj.vid

    state: dict[str, Any] = {}
    for tenant in Tenant.objects.filter(name__startswith=f"{u}-").order_by("name"):
        data = {k: v for k, v in tenant._custom_field_data.items() if k.startswith(u) and v is not None}
        links: dict[str, list[Any]] = {}
        for a in RelationshipAssociation.objects.filter(relationship__key__startswith=u):
            if a.source_id == tenant.pk:
                links.setdefault(a.relationship.key + ">", []).append(name(a.destination))
            if a.destination_id == tenant.pk:
                links.setdefault(a.relationship.key + "<", []).append(name(a.source))
        state[tenant.name] = (data, {k: sorted(v) for k, v in links.items()})
    return state


def test_custom_fields_and_relationships_round_trip_through_a_worker(
    defined: str, stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    u = defined
    retry = {"max_attempts": 3, "backoff": 0.2, "backoff_max": 1.0}  # a missing peer is given up on soon
    stream, source = own_source(stream, tmp_path, ["tenant", "vlangroup", "vlan"], user=f"streamsync-{u}", retry=retry)
    group = f"{u}-g"

    def tenant(name: str, **attrs: Any) -> dict[str, Any]:
        return _event(source, "upsert", "tenant", {"name": f"{u}-{name}"}, **attrs)

    def vlan(vid: int) -> dict[str, Any]:
        return {"vid": vid, "vlan_group__name": group}

    def cf(**values: Any) -> dict[str, Any]:
        return {f"cf_{u}_{kind}": value for kind, value in values.items()}

    def rel(**peers: Any) -> dict[str, Any]:
        return {f"rel_{u}_{name}": value for name, value in peers.items()}

    a, b, c = ({"name": f"{u}-{t}"} for t in "abc")
    every_type = cf(
        text="hello",
        integer=42,
        boolean=True,
        date="2026-12-01",
        datetime="2026-12-01T11:00:00.5+01:00",
        url="https://example.net/a",
        select="red",
        multi_select=["green", "blue"],
        json={"rack": [1, 2], "note": None},
        markdown="**bold**",
    )
    created = [
        # Children first: the tenants name VLANs and tenants that come later; they wait for them.
        tenant("a", **every_type, **rel(one=[vlan(10)], many=[vlan(11), vlan(12)], mm=[vlan(10), vlan(11)])),
        tenant("a", **rel(twin=[b], peers=[b, c], parent_destinations=[b, c])),
        tenant("b", **cf(integer=-1, select="blue", multi_select=[]), **rel(mm=[vlan(10)])),
        tenant("c", **rel(parent_sources=[a])),
        _event(source, "upsert", "vlan", vlan(10), name="ten", status__name="Active"),
        _event(source, "upsert", "vlan", vlan(11), name="eleven", status__name="Active"),
        _event(source, "upsert", "vlan", vlan(12), name="twelve", status__name="Active"),
        _event(source, "upsert", "vlangroup", {"name": group}),
        tenant("c"),
    ]
    worker = start_worker("--source", source, "--batch-timeout", "0.2", on=stream)
    publish(stream, tmp_path, *created, source=source)
    everything = {
        "text": "hello",
        "integer": 42,
        "boolean": True,
        "date": "2026-12-01",
        "datetime": "2026-12-01T10:00:00Z",  # as Nautobot stores it: UTC, whole seconds
        "url": "https://example.net/a",
        "select": "red",
        "multi_select": ["green", "blue"],
        "json": {"rack": [1, 2], "note": None},
        "markdown": "**bold**",
    }
    expected = {
        f"{u}-a": (
            {f"{u}_{k}": v for k, v in everything.items()},
            {
                f"{u}_one>": [10],
                f"{u}_many>": [11, 12],
                f"{u}_mm>": [10, 11],
                f"{u}_twin>": [f"{u}-b"],
                f"{u}_peers>": [f"{u}-b", f"{u}-c"],
                f"{u}_parent>": [f"{u}-b", f"{u}-c"],
            },
        ),
        f"{u}-b": (
            {f"{u}_integer": -1, f"{u}_select": "blue", f"{u}_multi_select": []},
            {f"{u}_mm>": [10], f"{u}_twin<": [f"{u}-a"], f"{u}_peers<": [f"{u}-a"], f"{u}_parent<": [f"{u}-a"]},
        ),
        f"{u}-c": ({}, {f"{u}_peers<": [f"{u}-a"], f"{u}_parent<": [f"{u}-a"]}),
    }
    _converges(u, expected, 40, f"everything created: {expected}", worker)

    # Updates: values change or are cleared (null); peers are replaced, a one-to-one peer moves, lists empty.
    updated = [
        tenant("a", **cf(text=None, integer=7, boolean=False, multi_select=["red"], json=[1])),
        tenant("a", **rel(one=[vlan(12)], many=[vlan(12)], mm=[], twin=[c], peers=[c], parent_destinations=[])),
        tenant("b", **rel(one=[vlan(11)], parent_sources=[c])),
    ]
    publish(stream, tmp_path, *updated, source=source)
    a_fields = {
        **{f"{u}_{k}": v for k, v in everything.items() if k != "text"},
        f"{u}_integer": 7,
        f"{u}_boolean": False,
        f"{u}_multi_select": ["red"],
        f"{u}_json": [1],
    }
    expected = {
        f"{u}-a": (
            a_fields,
            {
                f"{u}_one>": [12],
                f"{u}_many>": [12],
                f"{u}_twin>": [f"{u}-c"],
                f"{u}_peers>": [f"{u}-c"],
            },
        ),
        f"{u}-b": (
            {f"{u}_integer": -1, f"{u}_select": "blue", f"{u}_multi_select": []},
            {f"{u}_mm>": [10], f"{u}_one>": [11], f"{u}_parent<": [f"{u}-c"]},
        ),
        f"{u}-c": ({}, {f"{u}_twin<": [f"{u}-a"], f"{u}_peers<": [f"{u}-a"], f"{u}_parent>": [f"{u}-b"]}),
    }
    _converges(u, expected, 120, f"the updates: {expected}", worker)

    # What Nautobot refuses fails alone, dead-lettered with the custom field's or relationship's name.
    refused = [
        tenant("b", **cf(select="purple")),  # not a choice
        tenant("b", **rel(twin=[a, c])),  # one-to-one: one peer at most
        tenant("c", **rel(mm=[vlan(99)])),  # no such VLAN (waits for it, then gives up)
        tenant("b", **cf(text="still applied")),
    ]
    publish(stream, tmp_path, *refused, source=source)
    expected[f"{u}-b"][0][f"{u}_text"] = "still applied"
    _converges(u, expected, 120, "the last good event", worker)
    wait_for(lambda: len(_letters(stream, source)) >= 3, 120, "the refused events dead-lettered", worker)
    reasons = {_attrs(json.loads(letter["value"])): letter["reason"] for letter in _letters(stream, source)}
    select, twin, missing = (_attrs(event) for event in refused[:3])
    assert reasons.keys() == {select, twin, missing}, reasons
    assert f"{u}_select" in reasons[select] and "purple" in reasons[select], reasons
    assert f"rel_{u}_twin" in reasons[twin], reasons
    assert f"rel_{u}_mm" in reasons[missing], reasons
    assert _state(u) == expected
    assert worker.stop() == 0


def test_the_models_command_lists_custom_fields_and_relationships(defined: str, stream: Stream, tmp_path: Path) -> None:
    u = defined
    stream, source = own_source(stream, tmp_path, ["tenant", "vlan"], user=f"streamsync-{u}")
    result = stream.cli("models", source, "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["model"]: row for row in map(json.loads, result.stdout.splitlines())}
    tenant = {field["name"]: field for field in rows["tenant"]["attrs"]}
    mine = sorted(name for name in tenant if u in name)
    assert mine == sorted(
        [f"cf_{u}_{kind.replace('-', '_')}" for kind in TYPES]
        + [f"rel_{u}_{key}" for key in ("one", "many", "mm", "twin", "peers")]
        + [f"rel_{u}_parent_destinations", f"rel_{u}_parent_sources"]
    )
    assert tenant[f"cf_{u}_integer"]["type"] == "integer or null"
    assert tenant[f"rel_{u}_one"]["type"] == "list of {vid: integer, vlan_group__name: string or null} or null"
    vlan = {field["name"] for field in rows["vlan"]["attrs"]}
    assert {f"rel_{u}_one", f"rel_{u}_many", f"rel_{u}_mm"} <= vlan


def test_relationship_attributes_load_with_the_same_queries_for_few_objects_and_for_many(defined: str) -> None:
    """A batch's load reads every relationship's peers for all its objects at once, as each alone reads them."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from nautobot.extras.models import Relationship, RelationshipAssociation, Status
    from nautobot.ipam.models import VLAN, VLANGroup
    from nautobot.tenancy.models import Tenant

    from streamsync.models.ipam import VLANModel
    from streamsync.models.tenancy import TenantModel
    from streamsync.sync.adapters import adapter_classes
    from streamsync.sync.customdata import extended

    u = defined
    group = VLANGroup.objects.create(name=f"{u}-g")
    active = Status.objects.get(name="Active")
    vlans = [VLAN.objects.create(vid=vid, name=f"v{vid}", vlan_group=group, status=active) for vid in range(1, 41)]
    tenants = [Tenant.objects.create(name=f"{u}-{n:02}") for n in range(30)]
    relationship = {r.key: r for r in Relationship.objects.filter(key__startswith=u)}

    def link(key: str, source: Any, destination: Any) -> None:
        RelationshipAssociation.objects.create(
            relationship=relationship[f"{u}_{key}"],
            source_type=relationship[f"{u}_{key}"].source_type,
            source_id=source.pk,
            destination_type=relationship[f"{u}_{key}"].destination_type,
            destination_id=destination.pk,
        )

    for n, tenant in enumerate(tenants):  # every kind and end, some objects with none
        if n % 3:
            link("one", tenant, vlans[n])
        link("mm", tenant, vlans[(n + 1) % 40])
        link("mm", tenant, vlans[(n + 7) % 40])
        if n % 2 == 0 and n + 1 < len(tenants):
            link("twin", tenant, tenants[n + 1])
        if n % 5 == 0:
            link("peers", tenant, tenants[(n + 3) % 30])
            link("peers", tenants[(n + 4) % 30], tenant)
            link("parent", tenant, tenants[(n + 2) % 30])
    models = extended([TenantModel, VLANModel])
    nautobot_cls, _ = adapter_classes(models)

    def load(names: list[str]) -> tuple[dict[str, dict[str, Any]], int]:
        keys = {"tenant": [{"name": name} for name in names]}
        adapter = nautobot_cls(keys=keys)
        with CaptureQueriesContext(connection) as captured:
            adapter.load()
        loaded = {obj.name: obj.get_attrs() for obj in adapter.get_all("tenant")}
        return loaded, len(captured.captured_queries)

    names = [tenant.name for tenant in tenants]
    load(names[:10])  # warms Django's content type cache
    together, queries = load(names)
    alone = {}
    for name in names:
        alone.update(load([name])[0])
    assert together == alone
    # Ten objects already have peers on every relationship: thirty cost no more queries than they.
    assert load(names[:10])[1] == queries
    rel = {key: value for key, value in together[f"{u}-00"].items() if key.startswith("rel_")}
    assert rel == {
        f"rel_{u}_one": [],
        f"rel_{u}_many": [],
        f"rel_{u}_mm": [{"vid": 2, "vlan_group__name": f"{u}-g"}, {"vid": 8, "vlan_group__name": f"{u}-g"}],
        f"rel_{u}_twin": [{"name": f"{u}-01"}],
        f"rel_{u}_peers": [{"name": f"{u}-03"}, {"name": f"{u}-04"}],
        f"rel_{u}_parent_destinations": [{"name": f"{u}-02"}],
        f"rel_{u}_parent_sources": [],
    }, rel


def _attrs(event: dict[str, Any]) -> str:
    return json.dumps(event["attrs"], sort_keys=True)


def _converges(u: str, expected: dict[str, Any], timeout: float, what: str, worker: Any) -> None:
    """Wait for the expected state; if it never comes, show how the last one differs."""
    try:
        wait_for(lambda: _state(u) == expected, timeout, what, worker)
    except BaseException:
        actual = _state(u)
        differ = {name: (actual.get(name), expected.get(name)) for name in {*actual, *expected}}
        differ = {name: pair for name, pair in differ.items() if pair[0] != pair[1]}
        assert actual == expected, json.dumps(differ, indent=1, default=str)
        raise


def _letters(stream: Stream, source: str) -> list[dict[str, Any]]:
    """Every dead letter of the source (their original offsets repeat across partitions)."""
    result = stream.cli("dlq", "list", source, "--json", "--group", stream.group)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]
