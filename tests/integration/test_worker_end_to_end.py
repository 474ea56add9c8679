"""One change event at a time, from a file through Kafka and a running worker into Nautobot."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stream, wait_for

pytestmark = pytest.mark.integration


def _event(op: str, vid: int, group: str, **attrs: Any) -> dict[str, Any]:
    return {
        "schema": "streamsync.event/v1",
        "id": str(uuid.uuid4()),
        "source": "ipam",
        "model": "vlan",
        "op": op,
        "key": {"vid": vid, "vlan_group__name": group},
        "attrs": attrs,
        "ts": "2026-11-25T17:00:00.123Z",
    }


def _publish(stream: Stream, tmp_path: Path, *events: dict[str, Any]) -> None:
    path = tmp_path / f"events-{uuid.uuid4().hex[:6]}.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    result = stream.cli("publish", "ipam", str(path))
    assert result.returncode == 0, result.stderr
    assert f"published {len(events)} event(s)" in result.stdout


def _vlans(group: str) -> dict[int, tuple[str, str, str]]:
    from nautobot.ipam.models import VLAN

    return {
        v.vid: (v.name, v.status.name, v.description)
        for v in VLAN.objects.filter(vlan_group__name=group).select_related("status")
    }


def test_upsert_then_update_then_delete_reach_nautobot(stream: Stream, start_worker: Any, tmp_path: Path) -> None:
    from nautobot.extras.models import ObjectChange
    from nautobot.ipam.models import VLAN, VLANGroup

    group = f"dc-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    worker = start_worker("--source", "ipam", "--batch-timeout", "0.2")

    _publish(
        stream,
        tmp_path,
        _event("upsert", 100, group, name="users", description="floor 3"),
        _event("upsert", 200, group, name="voice", status__name="Reserved"),
    )
    expected = {100: ("users", "Active", "floor 3"), 200: ("voice", "Reserved", "")}
    wait_for(lambda: _vlans(group) == expected, 120, f"VLANs {expected}", worker)
    vlan_ids = list(VLAN.objects.filter(vlan_group__name=group).values_list("pk", flat=True))

    # An update naming one attribute leaves the others as they are.
    _publish(stream, tmp_path, _event("upsert", 100, group, description="floor 4"))
    expected[100] = ("users", "Active", "floor 4")
    wait_for(lambda: _vlans(group) == expected, 60, "VLAN 100's new description", worker)

    _publish(stream, tmp_path, _event("delete", 200, group))
    del expected[200]
    wait_for(lambda: _vlans(group) == expected, 60, "VLAN 200 deleted", worker)

    # The change log says who made these changes.
    changes = ObjectChange.objects.filter(changed_object_id__in=vlan_ids)
    assert sorted(changes.values_list("action", flat=True)) == ["create", "create", "delete", "update"]
    assert set(changes.values_list("user_name", flat=True)) == {"streamsync"}

    # Everything consumed is committed: no lag. Events published while no worker runs are lag.
    assert worker.stop() == 0
    assert _lag(stream) == {"committed": 4, "lag": 0}
    _publish(stream, tmp_path, _event("upsert", 300, group, name="guest"), _event("delete", 100, group))
    assert _lag(stream) == {"committed": 4, "lag": 2}


def test_an_event_at_an_idle_worker_is_applied_on_arrival_not_after_the_batch_timeout(
    stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    """batch_timeout caps how long a batch takes in what is already queued; an idle worker never waits it out."""
    from nautobot.ipam.models import VLANGroup

    from tests.integration.test_resilience import log_records

    group = f"dc-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    # 30 s: a fixed window would hold each lone event about that long before applying it.
    worker = start_worker("--source", "ipam", "--batch-timeout", "30")
    _publish(stream, tmp_path, _event("upsert", 10, group, name="first"))
    wait_for(lambda: _vlans(group) == {10: ("first", "Active", "")}, 120, "the first event", worker)
    # The worker is idle now: each of these is a batch of its own, applied and committed well
    # inside the 30 s.
    _publish(stream, tmp_path, _event("upsert", 10, group, description="second"))
    wait_for(lambda: _vlans(group) == {10: ("first", "Active", "second")}, 15, "the second event, on arrival", worker)
    _publish(stream, tmp_path, _event("delete", 10, group))
    wait_for(lambda: _vlans(group) == {}, 15, "the third event, on arrival", worker)
    wait_for(lambda: _lag(stream) == {"committed": 3, "lag": 0}, 15, "the three committed", worker)
    assert [r["received"] for r in log_records(worker, "batch committed")] == [1, 1, 1]


def _lag(stream: Stream) -> dict[str, int]:
    result = stream.cli("lag", "--json", "--group", stream.group)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["topic"] for r in rows} == {f"{stream.prefix}.ipam.events"}
    assert sorted(r["partition"] for r in rows) == [0, 1, 2]
    return {"committed": sum(r["current_offset"] or 0 for r in rows), "lag": sum(r["lag"] for r in rows)}


def test_worker_refuses_to_start_on_an_unknown_source(stream: Stream) -> None:
    result = stream.cli("worker", "--source", "nope")
    assert result.returncode != 0
    assert "unknown source 'nope'; configured sources: ['ipam']" in result.stderr


def test_worker_and_publish_say_when_kafka_is_unreachable(stream: Stream, tmp_path: Path) -> None:
    unreachable = Stream(bootstrap="127.0.0.1:1", prefix=stream.prefix, group=stream.group)
    worker = unreachable.cli("worker", timeout=90)
    assert worker.returncode != 0
    assert "cannot reach Kafka at 127.0.0.1:1" in worker.stderr

    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(_event("upsert", 1, "g", name="x")) + "\n")
    publish = unreachable.cli("publish", "ipam", str(path))
    assert publish.returncode != 0
    assert "cannot reach Kafka at 127.0.0.1:1" in publish.stderr


def test_publish_checks_every_line_and_sends_nothing_if_one_is_bad(stream: Stream, tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    good = _event("upsert", 1, "g", name="x")
    path.write_text(json.dumps(good) + "\n{oops\n" + json.dumps({**good, "source": "cmdb"}) + "\n")
    result = stream.cli("publish", "ipam", str(path))
    assert result.returncode != 0
    assert f"{path}:2: not JSON" in result.stderr
    assert f"{path}:3: event source 'cmdb' does not match 'ipam'" in result.stderr
    assert "2 invalid line(s)" in result.stderr
    assert f"{stream.prefix}.ipam.events" not in _topics(stream)  # not even created


def _topics(stream: Stream) -> set[str]:
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def names() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=stream.bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(names())
