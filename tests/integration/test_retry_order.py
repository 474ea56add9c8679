"""Two workers retrying one source's parked events: each key's events are applied in order, none lost.

More than a retry's worth of due parked rows (500) over a few keys: every event of a key needs a
VLAN group that arrives only once they are all parked. Then the group is created, and newer events
keep coming for the same keys while both workers' timers retry them, so batches park behind queues
that are being retried.

The first retry of the backlog is made slow on purpose, the way a long transaction elsewhere makes
one slow: the test creates the first key's VLAN by hand in a transaction it keeps open, so the retry
that reaches that key waits, holding the queues it took. Meanwhile newer events for the other keys
arrive and are parked behind those queues; the other worker must keep its hands off them. The end
state is compared exactly with the event log folded per key, and Nautobot's change log for each
VLAN must show its updates in the order they were published.
"""

from __future__ import annotations

import asyncio
import functools
import re
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from django.db import connection, transaction

from streamsync.contract.envelope import canonical_key
from tests.integration.conftest import Stream, WorkerProcess, wait_for
from tests.integration.state_helpers import own_source, vlan_event
from tests.integration.test_resilience import (
    STATUSES,
    assert_end_state,
    expected_state,
    last_descriptions,
    log_records,
    nautobot_state,
    report,
    worker_logs,
)
from tests.integration.wire_helpers import letters, raw

pytestmark = pytest.mark.integration

PARTITIONS = 3
KEYS = 6
PARKED_PER_KEY = 100  # 600 parked rows: more than one retry takes (500)
LATER_PER_KEY = 20  # published while the parked ones are retried
# Seconds between two attempts while the group is missing: long enough for the test to set up the
# slow retry between two of them.
BACKOFF = 3.0
SEQUENCE = re.compile(r"^vid (\d+) seq (\d+)$")


def _keys(group: str) -> tuple[int, list[int]]:
    """The first key's VID (it gets no newer events), and the others', spread over every partition.

    Newer events are parked by the worker that owns their partition; with the others on every
    partition, both workers park some, whichever of them is slowed down.
    """
    partition = DefaultPartitioner()
    everywhere = list(range(PARTITIONS))
    by_partition: dict[int, list[int]] = {}
    for vid in range(201, 400):
        key = canonical_key("vlan", {"vid": vid, "vlan_group__name": group}).encode()
        by_partition.setdefault(partition(key, everywhere, everywhere), []).append(vid)
    spread = [vids[0] for vids in by_partition.values()]
    assert len(spread) == PARTITIONS
    rest = [vid for vid in range(201, 400) if vid not in spread]
    return 200, sorted([*spread, *rest[: KEYS - 1 - PARTITIONS]])


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
    from streamsync.models.bookkeeping import ParkedEvent

    return ParkedEvent.objects.filter(source=source).count()


def _next_attempt_in(source: str) -> float:
    """Seconds until the earliest parked row of `source` is due."""
    from django.db.models import Min
    from django.utils import timezone

    from streamsync.models.bookkeeping import ParkedEvent

    due = ParkedEvent.objects.filter(source=source).aggregate(at=Min("next_attempt_at"))["at"]
    return (due - timezone.now()).total_seconds()


class HeldVlan(threading.Thread):
    """A transaction of its own that creates VLAN `vid` of `group` and stays open until `release`; then rolls back.

    A retry that reaches the same VLAN waits for it (the unique index), as it would for anyone's long transaction.
    """

    def __init__(self, group: str, vid: int) -> None:
        super().__init__(daemon=True)
        self.group, self.vid = group, vid
        self.pid: int | None = None
        self.holding = threading.Event()
        self.release = threading.Event()

    def run(self) -> None:
        from nautobot.extras.models import Status
        from nautobot.ipam.models import VLAN, VLANGroup

        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    self.pid = cursor.fetchone()[0]
                group = VLANGroup.objects.get(name=self.group)
                active = Status.objects.get(name="Active")
                VLAN.objects.create(vid=self.vid, name="held", vlan_group=group, status=active)
                self.holding.set()
                self.release.wait(120)
                transaction.set_rollback(True)
        finally:
            connection.close()

    def waiting(self) -> int:
        """Other sessions waiting for this transaction right now."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [self.pid])
            return int(cursor.fetchone()[0])


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


def _retrying(worker: WorkerProcess) -> bool:
    return bool(log_records(worker, "retry batch"))


def _alive(workers: Sequence[WorkerProcess]) -> None:
    for worker in workers:
        worker.assert_alive()


def test_two_workers_retry_more_than_a_retrys_worth_of_parked_events_in_order_per_key(
    stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    from nautobot.ipam.models import VLANGroup

    from streamsync.contract.topics import events_topic
    from streamsync.kafka.admin import TopicSpec, ensure_topics

    on, source = own_source(
        stream, tmp_path, retry={"backoff": BACKOFF, "backoff_max": BACKOFF, "max_attempts": 10_000}, retry_interval=0.1
    )
    topic = events_topic(source, stream.prefix)
    asyncio.run(ensure_topics(stream.bootstrap, [TopicSpec(topic, PARTITIONS)]))
    group = f"later-{uuid.uuid4().hex[:8]}"
    first, others = _keys(group)
    parked = _events(source, group, [first, *others], range(1, PARKED_PER_KEY + 1))
    later = _events(source, group, others, range(PARKED_PER_KEY + 1, PARKED_PER_KEY + LATER_PER_KEY + 1))
    waves = [later[i : i + len(others)] for i in range(0, len(later), len(others))]  # one newer event per key
    args = ("--source", source, "--batch-size", "100", "--batch-timeout", "0.1")
    workers = [start_worker(*args, on=on) for _ in range(2)]

    _send(stream.bootstrap, topic, parked)
    wait_for(lambda: _parked(source) == len(parked), 240, "every event parked, waiting for the group", workers[0])
    for worker in workers:  # both retry timers running (their retries fail for now)
        wait_for(functools.partial(_retrying, worker), 120, "the worker retrying", worker)
    # Right after a failed attempt: the next is seconds away, time to set the slow retry up.
    wait_for(lambda: _next_attempt_in(source) > BACKOFF / 2, 180, "a failed attempt of every key", workers[0])

    VLANGroup.objects.create(name=group)
    started = time.monotonic()
    held = HeldVlan(group, first)
    held.start()
    try:
        assert held.holding.wait(30)
        wait_for(lambda: held.waiting() > 0, 60, "a retry of the backlog waiting for the held VLAN", workers[0])
        for wave in waves[: len(waves) // 2]:  # parked behind the queues that retry holds
            _send(stream.bootstrap, topic, wave)
            time.sleep(0.2)
            _alive(workers)
    finally:
        held.release.set()
        held.join(30)
    for wave in waves[len(waves) // 2 :]:  # and more while the queues drain
        _send(stream.bootstrap, topic, wave)
        time.sleep(0.1)
    events = [*parked, *later]
    expected = expected_state(events)

    deadline = time.monotonic() + 240
    while not (_parked(source) == 0 and nautobot_state(group) == expected):
        _alive(workers)
        if time.monotonic() > deadline:
            assert_end_state(group, events, workers)  # fails naming every VLAN that differs
            pytest.fail(f"{_parked(source)} events still parked" + worker_logs(workers), pytrace=False)
        time.sleep(0.25)
    report(f"all applied {time.monotonic() - started:.1f}s after the group was created")
    for worker in workers:
        wrote = [r for r in log_records(worker, "retry batch") if r["created"] or r["updated"]]
        summary = [(r.get("keys"), r["received"], r["created"] + r["updated"]) for r in wrote]
        report(f"worker pid {worker.proc.pid}: retries that wrote (keys, events, objects written): {summary}")

    assert nautobot_state(group) == expected
    last = last_descriptions(events)
    assert {vid: vlan.description for vid, vlan in nautobot_state(group).items()} == last
    assert letters(on, system=source) == {}, "nothing dead-lettered"
    logged = _changelog(group)
    backwards = {vid: seqs for vid, seqs in logged.items() if seqs != sorted(seqs)}
    assert not backwards, f"changes applied out of order (sequence numbers per VLAN, by time): {backwards}"
    assert {vid: f"vid {vid} seq {seqs[-1]}" for vid, seqs in logged.items()} == last
