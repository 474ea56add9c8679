"""Positions the database vouches for, under faults caused to real processes.

- Kafka's committed offset moved past records that were never applied (by hand, while the
  worker was stopped): the worker reads them again from the database's position.
- A worker paused (SIGSTOP) inside a batch until its partition moves on and its successor applies
  newer events for the same keys, then resumed: it writes nothing behind its successor.
- An agent that cannot go on: the worker exits non-zero, nothing unsettled is acknowledged, and
  a new worker settles the rest.
"""

from __future__ import annotations

import dataclasses
import signal
import uuid
from collections.abc import Callable

import pytest

from tests.integration.conftest import Stream, WorkerProcess, free_port, wait_for
from tests.integration.prometheus import scrape, value
from tests.integration.test_resilience import log_records
from tests.integration.wire_helpers import (
    AGENT,
    SOURCE,
    commit_offset,
    committed_and_end,
    create_topic,
    letters,
    produce,
    produce_transaction,
    settled_to_end,
    stored_position,
    vlan_records,
    vlan_state,
)

pytestmark = pytest.mark.integration

GAP = "gap: the batch begins past the database's position with records in between; reading again"


def one_partition_topic(stream: Stream) -> str:
    """The source's events topic, created with one partition: every record of the test in one order."""
    topic = f"{stream.prefix}.{SOURCE}.events"
    create_topic(stream.bootstrap, topic, {}, partitions=1)
    return topic


def vlan_group() -> str:
    from nautobot.ipam.models import VLANGroup

    name = f"pos-{uuid.uuid4().hex[:8]}"
    VLANGroup.objects.create(name=name)
    return name


def described(vids: range, description: str) -> dict[int, tuple[str, str, str]]:
    return {vid: (f"v{vid}", "Active", description) for vid in vids}


def test_a_committed_offset_ahead_of_the_database_is_read_again(
    stream: Stream, start_worker: Callable[..., WorkerProcess]
) -> None:
    topic, group, port = one_partition_topic(stream), vlan_group(), free_port()
    on = dataclasses.replace(stream, extra_env={"STREAMSYNC_METRICS_PORT": str(port)})
    produce(stream.bootstrap, topic, vlan_records(group, range(1, 11), "first"))
    first = start_worker("--source", SOURCE, "--batch-timeout", "0.2", on=on)
    wait_for(settled_to_end(stream, AGENT, topic), 120, "the first ten settled", first)
    assert first.stop() == 0

    produce(stream.bootstrap, topic, vlan_records(group, range(11, 21), "second"))
    commit_offset(stream, topic, 0, 20)  # acknowledged by mistake: never applied
    assert committed_and_end(stream, topic) == (20, 20)

    second = start_worker("--source", SOURCE, "--batch-timeout", "0.2", on=on)
    wait_for(lambda: len(vlan_state(group)) == 20, 120, "the ten acknowledged by mistake applied", second)
    assert vlan_state(group) == {**described(range(1, 11), "first"), **described(range(11, 21), "second")}
    wait_for(settled_to_end(stream, AGENT, topic), 60, "the log settled to its end", second)
    rewinds = log_records(second, "committed offset is ahead of the database's position: reading again from it")
    assert [(r["committed"], r["position"]) for r in rewinds] == [(20, 10)], second.output()[-3000:]
    assert value(scrape(port), "streamsync_position_rewinds_total", topic=topic, partition="0") == 1.0


def test_a_committed_offset_behind_the_database_is_moved_up_to_it_with_nothing_new_to_read(
    stream: Stream, start_worker: Callable[..., WorkerProcess]
) -> None:
    """A partition taken over where the database is ahead of Kafka, and no record comes after: no lag is left.

    It happens whenever a worker's batches are in the database but its Kafka commit is not (it was
    killed, or its partition moved in a rebalance before its next commit). The new owner reads
    from the database's position; were its committed offset not moved up, the group would show
    lag for records long applied, for as long as nothing new arrives on the partition.
    """
    topic, group = one_partition_topic(stream), vlan_group()
    produce(stream.bootstrap, topic, vlan_records(group, range(1, 11), "first"))
    first = start_worker("--source", SOURCE, "--batch-timeout", "0.2")
    wait_for(settled_to_end(stream, AGENT, topic), 120, "the ten settled", first)
    assert first.stop() == 0
    commit_offset(stream, topic, 0, 4)  # as if its last commits had never reached Kafka
    assert committed_and_end(stream, topic) == (4, 10)

    second = start_worker("--source", SOURCE, "--batch-timeout", "0.2")
    wait_for(settled_to_end(stream, AGENT, topic), 60, "the committed offset moved up to the position", second)
    assert log_records(second, "batch committed") == []  # nothing read again: it had all been applied
    assert vlan_state(group) == described(range(1, 11), "first")


def _waiting_on(pid: int) -> list[int]:
    """Backends of this database waiting for a lock that backend `pid` holds."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND %s = ANY(pg_blocking_pids(pid))",
            [pid],
        )
        return [row[0] for row in cursor.fetchall()]


def test_a_paused_worker_does_not_write_behind_its_successor(
    stream: Stream, start_worker: Callable[..., WorkerProcess]
) -> None:
    import psycopg2
    from django.conf import settings

    topic, group = one_partition_topic(stream), vlan_group()
    on = dataclasses.replace(
        stream,
        extra_env={
            "STREAMSYNC_SESSION_TIMEOUT": "6",
            "STREAMSYNC_HEARTBEAT_INTERVAL": "1",
            # PostgreSQL ends the paused worker's transaction after this long, freeing its positions.
            "STREAMSYNC_TRANSACTION_IDLE_TIMEOUT": "8",
        },
    )
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    active, vlan_group_ = Status.objects.get(name="Active"), VLANGroup.objects.get(name=group)
    for vid in range(1, 21):
        VLAN.objects.create(vid=vid, name=f"v{vid}", vlan_group=vlan_group_, status=active, description="wave 0")
    produce(stream.bootstrap, topic, vlan_records(group, range(1, 21), "wave 1"))

    # Hold a VLAN's row, so that the first worker's batch waits inside its transaction when it updates it.
    # (Not a row its foreign keys point at: those are checked at COMMIT, when the batch's work is done.)
    db = settings.DATABASES["default"]
    holder = psycopg2.connect(
        dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"], host=db["HOST"], port=db["PORT"]
    )
    try:
        with holder.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            holder_pid = cursor.fetchone()[0]
            cursor.execute(
                "SELECT id FROM ipam_vlan WHERE vid = 20 AND vlan_group_id = %s FOR UPDATE", [vlan_group_.pk]
            )
        zombie = start_worker("--source", SOURCE, "--batch-timeout", "0.2", on=on)
        wait_for(lambda: bool(_waiting_on(holder_pid)), 120, "the first worker's batch waiting inside", zombie)
        zombie.proc.send_signal(signal.SIGSTOP)
    finally:
        holder.rollback()
        holder.close()

    successor = start_worker("--source", SOURCE, "--batch-timeout", "0.2", on=on)
    wait_for(lambda: vlan_state(group) == described(range(1, 21), "wave 1"), 180, "wave 1 by the successor", successor)
    produce(stream.bootstrap, topic, vlan_records(group, range(1, 21), "wave 2"))
    wait_for(lambda: vlan_state(group) == described(range(1, 21), "wave 2"), 120, "wave 2 by the successor", successor)
    assert stored_position(stream, AGENT, topic) == 40

    # What the paused worker committed before it was stopped (batches are what had arrived: the
    # records may have come in more than one), and the batch it was stopped in.
    before = log_records(zombie, "batch committed")
    in_flight = 20 - sum(r["received"] for r in before)
    assert in_flight > 0, zombie.output()[-4000:]
    zombie.proc.send_signal(signal.SIGCONT)
    # Woken, the paused worker finds its batch's transaction gone, settles it again, and finds
    # every record below the position its successor reached: it writes none of them.
    wait_for(
        # (>=: woken, it may also fetch and skip some of wave 2 before it learns its partition is gone)
        lambda: sum(r["skipped"] for r in log_records(zombie, "batch committed")[len(before) :]) >= in_flight,
        120,
        "the paused worker's batch settled as already applied",
        zombie,
    )
    after = log_records(zombie, "batch committed")[len(before) :]
    assert sum(r["received"] for r in after) == 0, zombie.output()[-4000:]
    wait_for(settled_to_end(stream, AGENT, topic), 60, "the log settled to its end", successor)
    assert vlan_state(group) == described(range(1, 21), "wave 2")


def test_an_agent_that_cannot_go_on_ends_the_worker_and_nothing_unsettled_is_acknowledged(
    stream: Stream, start_worker: Callable[..., WorkerProcess]
) -> None:
    from django.db import connection

    topic, group = one_partition_topic(stream), vlan_group()
    produce(stream.bootstrap, topic, vlan_records(group, range(1, 13), "all"))
    # The database refuses to move this group's position past offset 5: no batch beyond it can settle.
    rule = f"streamsync_test_stop_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(
            f'ALTER TABLE streamsync_position ADD CONSTRAINT {rule} CHECK ("group" <> %s OR next_offset <= 5)',
            [stream.group],
        )
    try:
        worker = start_worker("--source", SOURCE, "--batch-timeout", "0.2")
        wait_for(lambda: worker.proc.poll() is not None, 180, "the worker to exit")
        assert worker.proc.returncode == 70, worker.output()[-4000:]
        assert log_records(
            worker, "agent crashed: exiting so that the worker is started again; nothing unsettled is lost"
        )
        # What could be settled is, and nothing past it is acknowledged or dead-lettered.
        assert vlan_state(group) == described(range(1, 6), "all")
        assert stored_position(stream, AGENT, topic) == 5
        committed, _ = committed_and_end(stream, topic)
        assert committed is None or committed <= 5
        assert letters(stream) == {}
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE streamsync_position DROP CONSTRAINT {rule}")

    again = start_worker("--source", SOURCE, "--batch-timeout", "0.2")
    wait_for(settled_to_end(stream, AGENT, topic), 120, "the rest settled by a new worker", again)
    assert vlan_state(group) == described(range(1, 13), "all")
    assert letters(stream) == {}


def test_admission_skips_what_is_below_refuses_a_gap_and_takes_a_hole_without_records() -> None:
    import threading

    from django.db import OperationalError, connection, transaction

    from streamsync.contract.records import Origin
    from streamsync.sync import positions
    from streamsync.sync.faults import is_transient

    group, agent, topic = f"g-{uuid.uuid4().hex[:8]}", "streamsync.sync.test", "t.test.events"

    def records(*offsets: int) -> list[Origin]:
        return [Origin(b"k", b"v", topic, 0, offset) for offset in offsets]

    def unasked(*where: object) -> int:
        raise AssertionError(f"the log was read at {where} for records that begin at the position")

    def admitted(batch: list[Origin], first_offset: positions.FirstOffset = unasked) -> positions.Admission:
        with transaction.atomic():
            admission = positions.admit(group, agent, batch, first_offset)
            positions.advance(admission)
        return admission

    first = admitted(records(5, 6, 7))  # a partition never settled begins where its records begin
    assert ([r.offset for r in first.fresh], first.ends) == ([5, 6, 7], {(topic, 0): 8})
    again = admitted(records(6, 7, 8, 9))  # delivered again from 6: 6 and 7 are applied already
    assert [r.offset for r in again.skipped] == [6, 7] and [r.offset for r in again.fresh] == [8, 9]
    # Offset 10 holds no record (a transaction marker): the log's first record at or after 10 is 11.
    hole = admitted(records(11, 12), lambda t, p, offset: 11)
    assert [r.offset for r in hole.fresh] == [11, 12] and not hole.refused
    # Records 13 and 14 are in the log, the batch begins at 15: a gap, nothing of it is taken.
    gap = admitted(records(15, 16), lambda t, p, offset: 13)
    assert (gap.fresh, gap.refused, gap.ends) == ([], {(topic, 0): 13}, {})
    assert positions.stored(group, [agent], [(topic, 0)]) == {(agent, (topic, 0)): 13}

    # Another worker's batch holds the row: this one fails at once, and that is a transient fault.
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with transaction.atomic():
            positions.admit(group, agent, records(13), unasked)
            held.set()
            release.wait(30)
        connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        with pytest.raises(OperationalError) as error, transaction.atomic():
            positions.admit(group, agent, records(13, 14), unasked)
        assert is_transient(error.value)
    finally:
        release.set()
        holder.join()


def test_holes_a_transactional_producer_leaves_between_batches_are_not_gaps(
    stream: Stream, start_worker: Callable[..., WorkerProcess]
) -> None:
    topic, group = one_partition_topic(stream), vlan_group()
    worker = start_worker("--source", SOURCE, "--batch-timeout", "0.2")
    producer_id = f"producer-{uuid.uuid4().hex[:8]}"
    last = 0
    for wave in (1, 2, 3):  # each transaction ends with a commit marker: an offset without a record
        last = produce_transaction(
            stream.bootstrap, topic, vlan_records(group, range(1, 6), f"wave {wave}"), producer_id
        )[-1]
        wanted = described(range(1, 6), f"wave {wave}")
        wait_for(lambda: vlan_state(group) == wanted, 120, f"wave {wave}", worker)  # noqa: B023 - waited for here
    wait_for(lambda: stored_position(stream, AGENT, topic) == last + 1, 60, "the position past the last record", worker)
    assert not log_records(
        worker, "gap: the batch begins past the database's position with records in between; reading again"
    )
    assert sum(r["received"] for r in log_records(worker, "batch committed")) == 15


def test_a_database_restored_to_an_earlier_point_gets_what_it_lost_again_from_the_log(
    stream: Stream, start_worker: Callable[..., WorkerProcess]
) -> None:
    """A gap found mid-run: the database's position falls behind what the running worker reads."""
    from nautobot.ipam.models import VLAN

    from streamsync.models.bookkeeping import Position

    topic, group = one_partition_topic(stream), vlan_group()
    worker = start_worker("--source", SOURCE, "--batch-timeout", "0.2")
    produce(stream.bootstrap, topic, vlan_records(group, range(1, 11), "before"))
    wait_for(settled_to_end(stream, AGENT, topic), 120, "the first ten settled", worker)

    # As a restore from a backup taken after the fifth event would leave it: VLANs 6-10 and the
    # position past them are gone, while the worker runs on.
    VLAN.objects.filter(vlan_group__name=group, vid__gt=5).delete()
    Position.objects.filter(group=stream.group, agent=AGENT, topic=topic).update(next_offset=5)
    produce(stream.bootstrap, topic, vlan_records(group, range(11, 16), "after"))

    wait_for(lambda: len(vlan_state(group)) == 15, 120, "what the database lost, applied again", worker)
    assert vlan_state(group) == {**described(range(1, 11), "before"), **described(range(11, 16), "after")}
    wait_for(settled_to_end(stream, AGENT, topic), 60, "the log settled to its end", worker)
    assert [(r["partition"], r["position"]) for r in log_records(worker, GAP)][:1] == [(0, 5)]
