"""Two workers retrying one source's parked events: each key's events are applied in order, none lost.

More than a retry's worth of due parked rows (500) over a few keys: every event of a key needs a
VLAN group that arrives only once they are all parked. Then the group is created, and newer events
keep coming for the same keys while both workers' timers retry them, so batches park behind queues
that are being retried. The end state is compared exactly with the event log folded per key, and
Nautobot's change log for each VLAN must show its updates in the order they were published.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.conftest import Stream, wait_for
from tests.integration.state_helpers import own_source, vlan_event
from tests.integration.test_resilience import STATUSES, expected_state, log_records, nautobot_state, report
from tests.integration.wire_helpers import letters, raw

pytestmark = pytest.mark.integration

KEYS = 6
PARKED_PER_KEY = 100  # 600 parked rows: more than one retry takes (500)
LATER_PER_KEY = 20  # published while the parked ones are retried
SEQUENCE = re.compile(r"^vid (\d+) seq (\d+)$")


def _events(source: str, group: str, vids: Sequence[int], seqs: range) -> list[dict[str, Any]]:
    """Events `seqs` of every key, keys interleaved: each names the whole VLAN, its number in the description."""
    return [
        vlan_event(
            "upsert",
            vid,
            group,
            source,
            name=f"v{vid}-{seq}",
            status__name=STATUSES[seq % len(STATUSES)],
            description=f"vid {vid} seq {seq}",
        )
        for seq in seqs
        for vid in vids
    ]


def _send(bootstrap: str, topic: str, events: Sequence[dict[str, Any]]) -> None:
    """Produce `events` keyed by their canonical keys (so a key stays on one partition), in order."""

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            sent = [await producer.send(topic, value, key=key) for key, value in map(raw, events)]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(run())


def _parked(source: str) -> int:
    from streamsync.models.state import ParkedEvent

    return ParkedEvent.objects.filter(source=source).count()


def _changelog(group: str) -> dict[int, list[int]]:
    """Per VLAN of `group`, the sequence numbers its change log records, in the order the changes were made."""
    from django.contrib.contenttypes.models import ContentType
    from nautobot.extras.models import ObjectChange
    from nautobot.ipam.models import VLAN

    vids = dict(VLAN.objects.filter(vlan_group__name=group).values_list("pk", "vid"))
    changes = ObjectChange.objects.filter(
        changed_object_type=ContentType.objects.get_for_model(VLAN), changed_object_id__in=list(vids)
    ).order_by("time")
    logged: dict[int, list[int]] = {}
    for change in changes:
        match = SEQUENCE.match(change.object_data.get("description", ""))
        assert match, f"unexpected change {change.action} {change.object_data}"
        vid, seq = int(match[1]), int(match[2])
        assert vid == vids[change.changed_object_id]
        logged.setdefault(vid, []).append(seq)
    return logged


def test_two_workers_retry_more_than_a_retrys_worth_of_parked_events_in_order_per_key(
    stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    from nautobot.ipam.models import VLANGroup

    from streamsync.kafka import TopicSpec, ensure_topics
    from streamsync.topics import events_topic

    on, source = own_source(
        stream, tmp_path, retry={"backoff": 0.2, "backoff_max": 1.0, "max_attempts": 10_000}, retry_interval=0.1
    )
    topic = events_topic(source, stream.prefix)
    asyncio.run(ensure_topics(stream.bootstrap, [TopicSpec(topic, 3)]))
    group = f"later-{uuid.uuid4().hex[:8]}"
    vids = list(range(200, 200 + KEYS))
    parked = _events(source, group, vids, range(1, PARKED_PER_KEY + 1))
    later = _events(source, group, vids, range(PARKED_PER_KEY + 1, PARKED_PER_KEY + LATER_PER_KEY + 1))
    args = ("--source", source, "--batch-size", "100", "--batch-timeout", "0.1")
    workers = [start_worker(*args, on=on) for _ in range(2)]

    _send(stream.bootstrap, topic, parked)
    wait_for(lambda: _parked(source) == len(parked), 240, "every event parked, waiting for the group", workers[0])
    for worker in workers:  # both retry timers running (their retries fail for now)
        wait_for(lambda w=worker: bool(log_records(w, "retry batch")), 120, "the worker retrying", worker)

    VLANGroup.objects.create(name=group)
    started = time.monotonic()
    for wave in range(LATER_PER_KEY):  # one newer event per key at a time, while the queues are retried
        _send(stream.bootstrap, topic, later[wave * KEYS : (wave + 1) * KEYS])
        time.sleep(0.1)
    events = [*parked, *later]
    expected = expected_state(events)

    def settled() -> bool:
        workers[1].assert_alive()
        return _parked(source) == 0 and nautobot_state(group) == expected

    wait_for(settled, 240, "every key on its last event, nothing parked", workers[0])
    report(f"all applied {time.monotonic() - started:.1f}s after the group was created")
    for worker in workers:
        worker.assert_alive()
        wrote = [r for r in log_records(worker, "retry batch") if r["created"] or r["updated"]]
        summary = [(r.get("keys"), r["received"], r["created"] + r["updated"]) for r in wrote]
        report(f"worker pid {worker.proc.pid}: retries that wrote (keys, events, objects written): {summary}")

    assert nautobot_state(group) == expected
    assert {vid: vlan.description for vid, vlan in nautobot_state(group).items()} == {
        vid: f"vid {vid} seq {PARKED_PER_KEY + LATER_PER_KEY}" for vid in vids
    }
    assert letters(on, system=source) == {}, "nothing dead-lettered"
    logged = _changelog(group)
    backwards = {vid: seqs for vid, seqs in logged.items() if seqs != sorted(seqs)}
    assert not backwards, f"changes applied out of order (sequence numbers per VLAN, by time): {backwards}"
    assert {vid: seqs[-1] for vid, seqs in logged.items()} == {vid: PARKED_PER_KEY + LATER_PER_KEY for vid in vids}
