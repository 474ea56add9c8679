"""`streamsync replay` shows what the replayed deletes would take with them before it moves anything.

A source created a device (Nautobot made its interfaces from the device type's templates), deleted
it, and created it again; then a user attached things to it. Replaying from before the delete
deletes the device as it is now, with everything Django cascades to: the preview must list exactly
that, change nothing, and be what the replay then really does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from streamsync.contract.topics import events_topic
from streamsync.kafka.admin import TopicSpec, ensure_topics
from streamsync.sync.positions import sync_agent
from tests.integration.conftest import STREAMSYNC, Stream, wait_for, write_nautobot_config
from tests.integration.state_helpers import publish
from tests.integration.wire_helpers import committed_and_end, stored_position

pytestmark = pytest.mark.integration


def database_digest() -> dict[str, str]:
    """Every table of the test database: an md5 of all its rows, in a stable order."""
    from django.db import connection

    digests = {}
    with connection.cursor() as cursor:
        for table in sorted(connection.introspection.table_names(cursor)):
            name = connection.ops.quote_name(table)
            cursor.execute(f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {name} t")  # noqa: S608
            digests[table] = cursor.fetchone()[0]
    return digests


def _event(source: str, op: str, model: str, key: dict[str, Any], **attrs: Any) -> dict[str, Any]:
    return {
        "schema": "streamsync.event/v1",
        "id": str(uuid.uuid4()),
        "source": source,
        "model": model,
        "op": op,
        "key": key,
        "attrs": attrs,
        "ts": "2026-11-25T17:00:00.123Z",
    }


def _places(u: str) -> None:
    """A location, a role, and a device type with two interface templates, made by hand."""
    from django.contrib.contenttypes.models import ContentType
    from nautobot.dcim.models import Device, DeviceType, InterfaceTemplate, Location, LocationType, Manufacturer
    from nautobot.extras.models import Role, Status

    active = Status.objects.get(name="Active")
    site = LocationType.objects.create(name=f"site-{u}")
    site.content_types.add(ContentType.objects.get_for_model(Device))
    Location.objects.create(name=f"dc-{u}", location_type=site, status=active)
    Role.objects.create(name=f"role-{u}").content_types.add(ContentType.objects.get_for_model(Device))
    device_type = DeviceType.objects.create(model="X1", manufacturer=Manufacturer.objects.create(name=f"acme-{u}"))
    for name in ("eth0", "eth1"):
        InterfaceTemplate.objects.create(device_type=device_type, name=name, type="1000base-t")


def _device_state(u: str) -> dict[str, Any]:
    """The device and everything hanging off it that the test made, by name."""
    from nautobot.dcim.models import Device, Interface
    from nautobot.extras.models import Note
    from nautobot.ipam.models import IPAddress

    device = Device.objects.filter(name=f"sw-{u}").first()
    address = IPAddress.objects.get(host="10.9.0.1", parent__namespace__name=f"ns-{u}")
    return {
        "device": device.pk if device else None,
        "interfaces": {i.name: i.pk for i in Interface.objects.filter(device__name=f"sw-{u}")},
        "address assigned to": sorted(a.interface.name for a in address.interface_assignments.all()),
        "notes": sorted(n.note for n in Note.objects.filter(assigned_object_id=device.pk)) if device else [],
    }


def test_replay_lists_what_a_replayed_delete_cascades_to_and_changes_nothing_until_told(
    stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    from nautobot.dcim.models import Device, Interface
    from nautobot.extras.models import Note, Status
    from nautobot.ipam.models import IPAddress, IPAddressToInterface, Namespace, Prefix

    u = uuid.uuid4().hex[:8]
    source = f"s{u}"
    config = write_nautobot_config(
        tmp_path / "nautobot_config.py",
        sources={source: {"models": ["device", "interface"]}},
        user=f"streamsync-{u}",
        topic_partitions=1,
        session_timeout=6,
        heartbeat_interval=1,
    )
    stream = dataclasses.replace(stream, extra_env={**stream.extra_env, "NAUTOBOT_CONFIG": str(config)})
    topic = events_topic(source, stream.prefix)
    asyncio.run(ensure_topics(stream.bootstrap, [TopicSpec(topic, partitions=1)]))
    _places(u)
    key = {"name": f"sw-{u}", "location__name": f"dc-{u}"}
    device = {"device_type__manufacturer__name": f"acme-{u}", "device_type__model": "X1", "role__name": f"role-{u}"}

    # Offsets 0, 1, 2: created, deleted, created again; one batch each, as they came in.
    worker = start_worker("--source", source, "--batch-size", "1", "--batch-timeout", "0.2", on=stream)
    publish(
        stream,
        tmp_path,
        _event(source, "upsert", "device", key, **device),
        _event(source, "delete", "device", key),
        _event(source, "upsert", "device", key, **device),
        source=source,
    )
    wait_for(lambda: committed_and_end(stream, topic) == (3, 3), 120, "the three events applied", worker)
    assert worker.stop() == 0

    # A user attaches an interface, an IP address (on eth0) and a note to the device as it is now.
    active = Status.objects.get(name="Active")
    sw = Device.objects.get(name=f"sw-{u}")
    Interface.objects.create(device=sw, name="user9", type="1000base-t", status=active)
    namespace = Namespace.objects.create(name=f"ns-{u}")
    Prefix.objects.create(network="10.9.0.0", prefix_length=24, namespace=namespace, status=active)
    address = IPAddress.objects.create(host="10.9.0.1", mask_length=24, namespace=namespace, status=active)
    IPAddressToInterface.objects.create(ip_address=address, interface=sw.interfaces.get(name="eth0"))
    Note.objects.create(assigned_object=sw, note="racked by alice", user_name="alice")
    before = _device_state(u)
    assert sorted(before["interfaces"]) == ["eth0", "eth1", "user9"]
    assert before["address assigned to"] == ["eth0"] and before["notes"] == ["racked by alice"]

    preview_lines = [
        "read 2 event(s) to reprocess: 1 object key(s) deleted, 0 of them with no object in Nautobot now",
        "MODEL                      DELETE  CASCADE  PROTECTED-BY",
        "dcim.device                     1        0             0",
        "dcim.interface                  0        3             0",
        "extras.note                     0        1             0",
        "ipam.ipaddresstointerface       0        1             0",
        "total                           1        5             0",
        f'device:{{"location__name":"dc-{u}","name":"sw-{u}"}} (partition 0, offset 1): dcim.device sw-{u}',
        "    3 interfaces: eth0, eth1, user9",
        f"    1 note: sw-{u} - {Note.objects.get(assigned_object_id=sw.pk).created.isoformat()}",
        f"    1 IP Address Assignment: {IPAddressToInterface.objects.get(ip_address=address)}",
        "this replay will delete 1 device, cascading to 3 interfaces, 1 note and 1 IP Address Assignment",
    ]
    digest = database_digest()

    dry = stream.cli("replay", source, "--offset", "1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].split() == ["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET", "LOG-END-OFFSET", "REPROCESS"]
    assert lines[1].split() == [topic, "0", "3", "1", "3", "2"]
    assert lines[2:] == [*preview_lines, f"dry run: group {stream.group} would reprocess 2 event(s); nothing changed"]
    assert database_digest() == digest, "a dry run changed the database"
    assert committed_and_end(stream, topic) == (3, 3)

    # Without --yes the question comes after the same list, and names the deletes; "no" changes nothing.
    asked = subprocess.run(
        [STREAMSYNC, "replay", source, "--offset", "1"],
        env=stream.env(),
        input="n\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert asked.returncode == 1, asked.stderr
    lines = asked.stdout.splitlines()
    assert lines[2:-1] == preview_lines
    assert lines[-1] == (
        f"reset group {stream.group} on {topic}: 2 event(s) to reprocess; this replay will delete 1 device, "
        "cascading to 3 interfaces, 1 note and 1 IP Address Assignment? [y/N]: "
    )
    assert database_digest() == digest, "a replay answered no changed the database"
    assert committed_and_end(stream, topic) == (3, 3)

    # Told yes: the replay does exactly what it listed. The device is deleted with its cascade and
    # created again, with its template interfaces only; the address survives, unassigned.
    moved = stream.cli("replay", source, "--offset", "1", "--yes")
    assert moved.returncode == 0, moved.stderr
    assert "this replay" not in moved.stdout  # --yes asks nothing, so nothing is collected for it
    assert stored_position(stream, sync_agent(source), topic) == 1
    worker = start_worker("--source", source, "--batch-size", "1", "--batch-timeout", "0.2", on=stream)
    wait_for(lambda: committed_and_end(stream, topic) == (3, 3), 120, "the replayed events applied", worker)
    assert worker.stop() == 0
    after = _device_state(u)
    assert after["device"] not in (None, before["device"])
    assert sorted(after["interfaces"]) == ["eth0", "eth1"]
    assert not set(after["interfaces"].values()) & set(before["interfaces"].values())
    assert after["address assigned to"] == [] and after["notes"] == []
    assert IPAddress.objects.filter(pk=address.pk).exists()
    assert not Note.objects.filter(note="racked by alice").exists()
