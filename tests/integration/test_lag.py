"""`streamsync lag`: exact lag figures and the age of the oldest unprocessed event, before and after catch-up."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from streamsync.contract.envelope import Event, Op
from streamsync.kafka.admin import TopicSpec, ensure_topics
from streamsync.kafka.clients import producer
from tests.integration.conftest import Stream, wait_for

pytestmark = pytest.mark.integration


def _produce(stream: Stream, by_partition: dict[int, list[Event]]) -> None:
    """Produce each list to its partition, waiting for every acknowledgement."""
    topic = f"{stream.prefix}.ipam.events"

    async def run() -> None:
        await ensure_topics(stream.bootstrap, [TopicSpec(topic, 3)])
        async with producer(stream.bootstrap) as client:
            for partition, events in by_partition.items():
                for event in events:
                    sent = await client.send(
                        topic, event.to_bytes(), key=event.canonical_key.encode(), partition=partition
                    )
                    assert (await sent).partition == partition

    asyncio.run(run())


def _vlans(group: str, *vids: int) -> list[Event]:
    return [
        Event(
            source="ipam",
            model="vlan",
            op=Op.UPSERT,
            key={"vid": v, "vlan_group__name": group},
            attrs={"name": f"v{v}"},
        )
        for v in vids
    ]


def _lag(stream: Stream) -> dict[int, dict[str, Any]]:
    result = stream.cli("lag", "--json", "--group", stream.group)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {(r["group"], r["topic"]) for r in rows} == {(stream.group, f"{stream.prefix}.ipam.events")}
    return {r["partition"]: r for r in rows}


def _figures(rows: dict[int, dict[str, Any]]) -> dict[int, tuple[int | None, int, int]]:
    return {p: (r["current_offset"], r["log_end_offset"], r["lag"]) for p, r in rows.items()}


def _table(stream: Stream) -> dict[int, list[str]]:
    result = stream.cli("lag", "--group", stream.group)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "OLDEST-AGE"]
    return {int(line.split()[2]): line.split()[3:] for line in lines}


def test_lag_and_oldest_age_before_and_after_a_worker_catches_up(
    stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    from nautobot.ipam.models import VLAN, VLANGroup

    group = f"lag-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    applied = lambda: set(VLAN.objects.filter(vlan_group__name=group).values_list("vid", flat=True))  # noqa: E731

    # Two events, all on partition 0: the group commits there and nowhere else.
    _produce(stream, {0: _vlans(group, 1, 2)})
    worker = start_worker("--source", "ipam", "--batch-timeout", "0.2")
    wait_for(lambda: applied() == {1, 2}, 120, "the first two VLANs", worker)
    assert worker.stop() == 0
    caught_up = _lag(stream)
    assert _figures(caught_up) == {0: (2, 2, 0), 1: (None, 0, 0), 2: (None, 0, 0)}
    assert all(r["oldest_age_seconds"] is None and r["oldest_timestamp_ms"] is None for r in caught_up.values())

    # With no worker running: three more on partition 0, two on partition 1 where nothing was ever committed
    # (it counts from the log's start, as a worker starts there).
    before_ms = time.time() * 1000
    _produce(stream, {0: _vlans(group, 3, 4, 5), 1: _vlans(group, 6, 7)})
    after = time.time()
    time.sleep(2.0)
    measured_from = time.time()
    behind = _lag(stream)
    measured_to = time.time()
    assert _figures(behind) == {0: (2, 5, 3), 1: (None, 2, 2), 2: (None, 0, 0)}
    for partition in (0, 1):
        row = behind[partition]
        # The first unprocessed record's Kafka timestamp is its send time; its age grew while we waited.
        assert before_ms - 1 <= row["oldest_timestamp_ms"] <= after * 1000 + 1, row
        assert measured_from - after <= row["oldest_age_seconds"] <= measured_to - before_ms / 1000 + 0.01, row
    assert behind[2]["oldest_age_seconds"] is None
    table = _table(stream)
    assert table[0][:3] == ["2", "5", "3"] and table[0][3].endswith("s"), table
    assert table[1][:3] == ["-", "2", "2"] and table[1][3] != "-", table
    assert table[2] == ["-", "0", "0", "-"], table

    worker = start_worker("--source", "ipam", "--batch-timeout", "0.2")
    wait_for(lambda: applied() == {1, 2, 3, 4, 5, 6, 7}, 120, "the five VLANs produced meanwhile", worker)
    # Offsets are committed shortly after the database commit (faust's commit interval).
    wait_for(lambda: _figures(_lag(stream))[1][0] == 2 and _figures(_lag(stream))[0][0] == 5, 30, "commits", worker)
    after_catch_up = _lag(stream)
    assert _figures(after_catch_up) == {0: (5, 5, 0), 1: (2, 2, 0), 2: (None, 0, 0)}
    assert all(r["oldest_age_seconds"] is None for r in after_catch_up.values())
    assert [cells[3] for cells in _table(stream).values()] == ["-", "-", "-"]
