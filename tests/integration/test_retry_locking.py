"""The retry's locking rule on the real database, with two connections: whole keys, one worker at a time, in order.

Each test works on parked rows of a source of its own (a name no worker runs), and plays two
workers with two threads: Django gives each thread a connection of its own.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import OperationalError, connection, transaction

from streamsync.contract.envelope import Event, Op, canonical_key, decode
from streamsync.contract.records import Origin, OutRecord
from streamsync.settings import RetryPolicy
from streamsync.sync.batch import BatchResult, Parked
from streamsync.sync.engine import SyncEngine
from streamsync.sync.permissions import set_up_writer
from streamsync.sync.registry import ModelRegistry
from streamsync.sync.retry import Retrying, apply_source, retry_due, take_due
from streamsync.sync.settle import Incoming

pytestmark = pytest.mark.integration

WAIT = 60  # seconds a thread may take to reach the point the test waits for


class Wire:
    """Kafka as retry_due needs it: records published are kept, in order."""

    def __init__(self) -> None:
        self.published: list[OutRecord] = []

    def publish(self, records: Sequence[OutRecord]) -> None:
        self.published.extend(records)

    def first_offset(self, topic: str, partition: int, offset: int) -> int:
        return offset


@pytest.fixture
def source() -> str:
    return f"s{uuid.uuid4().hex[:8]}"


@pytest.fixture
def engine() -> SyncEngine:
    from streamsync.models.ipam import VLANModel

    return SyncEngine(ModelRegistry([VLANModel]), set_up_writer("streamsync", [VLANModel]))


def _now() -> datetime:
    from django.utils import timezone

    return timezone.now()


def _vlan(source: str, group: str, vid: int, **attrs: Any) -> Event:
    return Event(source=source, model="vlan", op=Op.UPSERT, key={"vid": vid, "vlan_group__name": group}, attrs=attrs)


_offsets = iter(range(1, 1_000_000))


def _park(source: str, event: Event, due: datetime, attempts: int = 1) -> int:
    """A parked row for `event`, as a batch writes it; its id."""
    from streamsync.models.bookkeeping import ParkedEvent

    row = ParkedEvent.objects.create(
        source=source,
        key=event.canonical_key,
        message_key=event.canonical_key.encode(),
        value=event.to_bytes(),
        original_topic=f"{source}.events",
        original_partition=0,
        original_offset=next(_offsets),
        attempts=attempts,
        next_attempt_at=due,
        last_reason="waiting",
    )
    return row.id


def _queues(queues: Sequence[Sequence[Any]]) -> list[list[int]]:
    return [[row.id for row in queue] for queue in queues]


def _rows(source: str) -> dict[str, list[tuple[int, int]]]:
    """Parked rows of `source` per key: (id, attempts), in id order."""
    from streamsync.models.bookkeeping import ParkedEvent

    rows: dict[str, list[tuple[int, int]]] = {}
    for row in ParkedEvent.objects.filter(source=source).order_by("id"):
        rows.setdefault(row.key, []).append((row.id, row.attempts))
    return rows


def _description(group: str, vid: int) -> str | None:
    from nautobot.ipam.models import VLAN

    vlan = VLAN.objects.filter(vlan_group__name=group, vid=vid).first()
    return vlan.description if vlan else None


class Worker(threading.Thread):
    """Another worker: runs `work` on a connection of its own; `result` or `error` when it is done."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as error:  # handed to the test
            self.error = error
        finally:
            connection.close()

    def outcome(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive(), "the other worker did not finish"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def other() -> Iterator[list[threading.Event]]:
    """Events the test sets to let paused workers go on: all set at the end, so no thread is left waiting."""
    gates: list[threading.Event] = []
    yield gates
    for gate in gates:
        gate.set()


def _hold(source: str, limit: int, gates: list[threading.Event]) -> tuple[Worker, threading.Event, threading.Event]:
    """A worker that takes due keys (`take_due`) and keeps them until the test lets it commit."""
    taken, release = threading.Event(), threading.Event()
    gates.append(release)

    def work() -> list[list[int]]:
        with transaction.atomic():
            queues = take_due(source, _now(), limit)
            taken.set()
            assert release.wait(WAIT)
        return _queues(queues)

    worker = Worker(work)
    worker.start()
    assert taken.wait(WAIT), "the holding worker did not take its keys"
    return worker, taken, release


def test_a_key_one_worker_retries_is_skipped_whole_by_another_even_what_was_parked_behind_it(
    source: str, other: list[threading.Event]
) -> None:
    group = "never"
    now = _now()
    k = [_park(source, _vlan(source, group, 1, description=f"k {n}"), now - timedelta(seconds=20)) for n in (1, 2)]
    (m,) = [_park(source, _vlan(source, group, 2, description="m 1"), now - timedelta(seconds=10))]

    holder, _, release = _hold(source, limit=1, gates=other)  # takes the oldest-due key, K, and keeps it
    # A batch parks a newer event for K meanwhile (committed): due, and not locked by anyone's row lock.
    behind = _park(source, _vlan(source, group, 1, description="k 3"), now - timedelta(seconds=30), attempts=0)

    with transaction.atomic():
        assert _queues(take_due(source, _now(), 500)) == [[m]], "K is held elsewhere: skipped whole, M taken"
    release.set()
    assert holder.outcome() == [k]

    with transaction.atomic():  # K is free again: its whole queue, in id order
        assert _queues(take_due(source, _now(), 500)) == [[*k, behind], [m]]


def test_due_keys_are_taken_oldest_due_first_and_the_limit_never_cuts_a_queue(source: str) -> None:
    now = _now()
    a = [_park(source, _vlan(source, "g", 1, description=str(n)), now - timedelta(seconds=10)) for n in range(3)]
    b = [_park(source, _vlan(source, "g", 2, description=str(n)), now - timedelta(seconds=20)) for n in range(2)]
    # C's first row is due, its later one not yet: the key is due, and taken whole.
    c = [
        _park(source, _vlan(source, "g", 3, description="0"), now - timedelta(seconds=5)),
        _park(source, _vlan(source, "g", 3, description="1"), now + timedelta(minutes=5)),
    ]
    _park(source, _vlan(source, "g", 4, description="0"), now + timedelta(minutes=5))  # not due

    with transaction.atomic():
        assert _queues(take_due(source, now, 3)) == [b, a], "B (oldest due), then A whole although past the limit"
    with transaction.atomic():
        assert _queues(take_due(source, now, 1)) == [b]
    with transaction.atomic():
        assert _queues(take_due(source, now, 500)) == [b, a, c]


def test_a_batch_parks_behind_a_key_being_retried_and_the_newer_event_is_neither_applied_first_nor_lost(
    source: str, engine: SyncEngine, group: str, other: list[threading.Event]
) -> None:
    first = _vlan(source, group, 30, name="v30", description="first")
    _park(source, first, _now() - timedelta(seconds=1))
    applied, release = threading.Event(), threading.Event()
    other.append(release)

    class Pausing(SyncEngine):
        """The engine of a worker that has applied the queue and not committed yet."""

        def apply(self, events: Sequence[Event], *, source: str = "", parked: Sequence[Parked] = ()) -> BatchResult:
            result = super().apply(events, source=source, parked=parked)
            applied.set()
            assert release.wait(WAIT)
            return result

    policy = RetryPolicy(max_attempts=5)
    how = Retrying(source, policy, "dlq", 1_000_000)
    retrier = Worker(lambda: retry_due(Pausing(engine.registry, engine.writer), how, Wire()))
    retrier.start()
    assert applied.wait(WAIT), "the retrying worker did not apply the queue"

    # The key's batch, meanwhile: a newer event for the key, in the batch's own transaction.
    second = _vlan(source, group, 30, description="second")
    origin = Origin(second.canonical_key.encode(), second.to_bytes(), f"{source}.events", 0, 99)
    with transaction.atomic():
        outcome = apply_source(engine, source, [Incoming(decode(second.to_bytes()), origin)], policy, "state")
    assert (outcome.parked, outcome.result.objects) == (1, []), "parked behind the queue, not applied"

    release.set()
    retried = retrier.outcome()
    assert retried.keys == 1 and not retried.letters
    assert _description(group, 30) == "first"
    key = canonical_key("vlan", {"vid": 30, "vlan_group__name": group})
    assert [a for _, a in _rows(source).get(key, [])] == [0], "the newer event is still parked: not lost"

    retry_due(engine, how, Wire())
    assert _description(group, 30) == "second"
    assert _rows(source) == {}


def test_an_engine_error_fails_its_key_alone_and_dead_letters_its_queue_in_order_after_the_attempts(
    source: str, engine: SyncEngine, group: str
) -> None:
    from streamsync.contract.deadletter import DeadLetter

    now = _now() - timedelta(seconds=1)
    broken = [_vlan(source, group, 40, name="v40", description=f"{n}") for n in range(3)]
    for event in broken:
        _park(source, event, now, attempts=0)
    _park(source, _vlan(source, group, 41, name="v41", description="fine"), now, attempts=0)
    broken_key = broken[0].canonical_key

    class Faulty(SyncEngine):
        """An engine with a defect that one key's events bring out: a statement the database refuses.

        It fails the transaction it runs in, as such an error does: the other keys must still go on.
        """

        def apply(self, events: Sequence[Event], *, source: str = "", parked: Sequence[Parked] = ()) -> BatchResult:
            if any(e.canonical_key == broken_key for e in events):
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1 / 0")  # a defect no code foresaw
            return super().apply(events, source=source, parked=parked)

    how = Retrying(source, RetryPolicy(max_attempts=2, backoff=60), "dlq", 1_000_000)
    wire = Wire()
    retried = retry_due(Faulty(engine.registry, engine.writer), how, wire)
    assert (retried.keys, retried.letters, wire.published) == (2, [], [])
    assert _description(group, 41) == "fine", "the other key went on"
    assert [a for _, a in _rows(source)[broken_key]] == [1, 1, 1], "the failing key kept whole, attempt counted"

    from streamsync.models.bookkeeping import ParkedEvent

    parked = ParkedEvent.objects.filter(source=source)
    reasons = parked.values_list("last_reason", flat=True)
    assert all("DataError: division by zero" in reason for reason in reasons), reasons
    parked.update(next_attempt_at=now)  # due again: the last attempt
    retried = retry_due(Faulty(engine.registry, engine.writer), how, wire)
    letters = [DeadLetter.from_headers(list(record.headers)) for record in wire.published]
    assert [(letter.code, letter.attempts) for letter in letters] == [("unexpected_error", 2)] * 3
    assert [letter.original_offset for letter in letters] == sorted(letter.original_offset for letter in letters)
    assert [record.value for record in wire.published] == [e.to_bytes() for e in broken], "in the queue's order"
    assert "division by zero" in letters[0].reason
    assert _rows(source) == {}


def test_a_queue_out_of_attempts_is_dead_lettered_in_order_rejected_events_in_their_place(
    source: str, engine: SyncEngine
) -> None:
    from streamsync.contract.deadletter import DeadLetter

    now = _now() - timedelta(seconds=1)
    queue = [
        _vlan(source, "missing", 50, name="v50", description="one"),
        _vlan(source, "missing", 50, description="two", colour="red"),  # not an attribute: rejected
        _vlan(source, "missing", 50, description="three"),
    ]
    for event in queue:
        _park(source, event, now, attempts=1)
    wire = Wire()
    retry_due(engine, Retrying(source, RetryPolicy(max_attempts=2), "dlq", 1_000_000), wire)
    letters = [DeadLetter.from_headers(list(record.headers)) for record in wire.published]
    assert [record.value for record in wire.published] == [e.to_bytes() for e in queue]
    assert [letter.code for letter in letters] == ["dependency_missing", "undeclared_attribute", "dependency_missing"]
    assert _rows(source) == {}


def test_an_infrastructure_fault_undoes_the_whole_retry(source: str, engine: SyncEngine, group: str) -> None:
    now = _now() - timedelta(seconds=1)
    _park(source, _vlan(source, group, 60, name="v60", description="a"), now)
    _park(source, _vlan(source, group, 61, name="v61", description="b"), now)
    before = _rows(source)

    class Flaky(SyncEngine):
        """A defect in the run of both keys; applied one by one, the first goes in, then the database goes away."""

        def apply(self, events: Sequence[Event], *, source: str = "", parked: Sequence[Parked] = ()) -> BatchResult:
            vids = {e.key["vid"] for e in events}
            if len(vids) > 1:
                raise RuntimeError("a defect no code foresaw")
            if vids == {61}:
                raise OperationalError("server closed the connection unexpectedly")
            return super().apply(events, source=source, parked=parked)

    with pytest.raises(OperationalError):
        retry_due(Flaky(engine.registry, engine.writer), Retrying(source, RetryPolicy(), "dlq", 1_000_000), Wire())
    assert _rows(source) == before, "nothing counted, nothing removed"
    assert _description(group, 60) is None, "the key applied before the fault is undone with the rest"
