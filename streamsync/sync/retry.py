"""Failures that may pass later: parked, then retried with back-off, in order per key, across workers.

A batch's events whose object failed retryably (typically a foreign key whose object has not
arrived yet) are parked in `ParkedEvent` rows, in the same transaction as the rest of the batch
(`apply_source`). The next batches of the partition carry the parked queues and apply them as
soon as they may pass (`take_parked`); newer events for a parked key join its queue. A timer in
every worker re-applies the due keys' queues (`retry_due`); a key that keeps failing is
dead-lettered after `max_attempts`. Everything here runs on the database thread.

Why a key's events are applied in order, however many workers retry:

- A retry, and a batch carrying parked queues, takes whole keys, each under a transaction-scoped
  advisory lock on (source, key) tried without waiting (`take_due`, `take_parked`): one key's
  queue is applied by one worker at a time, all of it, in `id` order, and every row of it
  removed, rescheduled, dead-lettered or left as it was before the commit frees the key.
- Parked rows of a key are inserted only by batches of the key's partition, which its position
  lock serialises (streamsync/sync/positions.py). A batch that finds no parked rows for a key therefore
  knows none exist: no retry of it can be running (a running one's rows are still there, its
  deletes uncommitted) and none can start before the batch commits. A batch that finds rows
  carries the queue if it gets the key's lock, and parks behind the rows if a retry holds it; a
  retry in flight removes only the rows it read, so the new row is neither applied before them
  nor lost: the queue's next retry takes it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from streamsync.contract.deadletter import APPLY_FAILED, DEPENDENCY_MISSING, UNEXPECTED_ERROR, DeadLetter
from streamsync.contract.envelope import EnvelopeError, Event, decode
from streamsync.contract.records import Origin, OutRecord
from streamsync.sync import awaits, lastapplied
from streamsync.sync.batch import BatchResult, ObjectResult, Outcome, Parked
from streamsync.sync.engine import SyncEngine
from streamsync.sync.faults import is_transient, trace
from streamsync.sync.settle import Applied, Incoming, Wire
from streamsync.sync.state import merge as merge_state

if TYPE_CHECKING:
    from streamsync.models.bookkeeping import ParkedEvent
    from streamsync.settings import RetryPolicy

log = structlog.get_logger(__name__)

# First half of every advisory lock a retry takes: an arbitrary constant of streamsync's. The
# two-int form keeps these locks apart from anyone's one-bigint advisory locks.
LOCK_NAMESPACE = 0x5E7A_9A4C

# Rows of parked queues a batch carries at most, besides those of the keys it names: past it, the
# retry timer alone goes on with the rest, and batch boundaries may matter (docs/architecture.md).
PARKED_PER_BATCH = 1000


def _now() -> datetime:
    from django.utils import timezone

    return timezone.now()


def apply_source(
    engine: SyncEngine,
    source: str,
    incoming: Sequence[Incoming],
    policy: RetryPolicy,
    state_topic: str,
    limit: int = PARKED_PER_BATCH,
) -> Applied:
    """Apply a source's events in the caller's transaction; park retryable failures and what queues behind them.

    The keys parked by earlier batches of the same partitions take part (`take_parked`): they wait
    in the batch, and go on as soon as it lets them, so where batch boundaries fall does not change
    what is applied (docs/architecture.md, "Batches"). A key another worker is retrying is left to
    it: the batch's events for it are parked behind its queue. Parked events are not dead-lettered;
    rejected events and failures that cannot pass later are. The touched keys' full states (the
    batch's applied, failed and parked events alike; rejected ones not) are merged into the state
    table here and returned as state-topic records. Where each key's latest applied event is goes to
    `LastApplied` (streamsync/sync/lastapplied.py), for dead letters it supersedes.
    """
    from django.db.models import Min

    from streamsync.models.bookkeeping import KEY_LENGTH, ParkedEvent

    origins = {id(i.event): i.origin for i in incoming}
    events = [i.event for i in incoming]
    keys = {event.canonical_key for event in events}
    schedule = {
        row["key"]: row["at"]
        for row in ParkedEvent.objects.filter(source=source, key__in=keys)
        .values("key")
        .annotate(at=Min("next_attempt_at"))
        .order_by()
    }
    partitions = {(i.origin.topic, i.origin.partition) for i in incoming}
    taken = take_parked(source, partitions, keys, limit) if events else []
    row_of = {id(event): row for queue in taken for row, event in queue}
    origins.update((id(event), _origin(row)) for queue in taken for row, event in queue)
    seeded = {queue[0][0].key for queue in taken}
    behind = [e for e in events if e.canonical_key in schedule and e.canonical_key not in seeded]
    waits = {id(e) for e in behind}
    parked = [
        Parked([event for _, event in queue], queue[0][0].last_reason, awaits.from_json(queue[0][0].awaits))
        for queue in taken
    ]
    result = engine.apply([e for e in events if id(e) not in waits], source=source, parked=parked)

    def _behind(event: Event, at: datetime, waits_for: list[Any] | None = None) -> ParkedEvent:
        """A row for an event queued behind its key's parked events, due with them."""
        return _row(source, event, origins[id(event)], 0, at, "queued behind an earlier event", waits_for)

    rows = [_behind(e, schedule[e.canonical_key]) for e in behind]

    def _letter(event: Event, code: str, why: str) -> DeadLetter:
        row = row_of.get(id(event))
        attempts = row.attempts + 1 if row is not None else 1
        return DeadLetter.of(origins[id(event)], code, why, source=source, attempts=attempts)

    letters = [(origins[id(r.event)], _letter(r.event, r.code, r.reason)) for r in result.rejected]
    kept: set[int] = set()  # parked rows that stay parked

    for failure in result.failed:
        # A key too long for the table would fail this transaction on every redelivery: dead-letter it.
        parkable = all(len(e.canonical_key) <= KEY_LENGTH for e in failure.events)
        if failure.retryable and policy.max_attempts > 1 and parkable:
            earlier = [row_of[id(e)] for e in failure.events if id(e) in row_of]
            kept.update(row.id for row in earlier)
            new = [e for e in failure.events if id(e) not in row_of]
            waits_for = awaits.to_json(failure.awaits)
            if earlier:  # behind the key's parked events, on their schedule
                at = min(row.next_attempt_at for row in earlier)
                rows += [_behind(e, at, waits_for) for e in new]
                if earlier[0].awaits != waits_for:  # tried again, it now waits for something else
                    ParkedEvent.objects.filter(id__in=[row.id for row in earlier]).update(awaits=waits_for)
            else:
                retry_at = _now() + policy.delay(1)
                rows += [_row(source, e, origins[id(e)], 1, retry_at, failure.reason, waits_for) for e in new]
            continue
        code = DEPENDENCY_MISSING if failure.retryable else APPLY_FAILED
        letters += [(origins[id(e)], _letter(e, code, failure.reason)) for e in failure.events]
    # Parked rows the batch settled (applied, rejected, dead-lettered) go; untouched ones stay.
    reported = {id(e) for o in result.objects for e in o.events} | {id(r.event) for r in result.rejected}
    gone = [row.id for key, row in row_of.items() if key in reported and row.id not in kept]
    ParkedEvent.objects.filter(id__in=gone).delete()
    ParkedEvent.objects.bulk_create(rows)
    wake(source, result.wrote)
    in_log_order = [event for queue in taken for _, event in queue] + events
    _remember(source, result, [(event, origins[id(event)]) for event in in_log_order])
    rejected = {id(r.event) for r in result.rejected}
    state = merge_state(source, engine.registry, [e for e in events if id(e) not in rejected])
    records = [OutRecord(state_topic, *record.kafka()) for record in state]
    return Applied(result, letters, records, parked=len(rows), retried=len(gone))


def wake(source: str, lookups: Sequence[Any]) -> int:
    """Make due now the parked keys of `source` whose create waits for an object `lookups` name (`BatchResult.wrote`).

    A batch tries the parked keys it carries as soon as it writes what they wait for; keys of other
    partitions, or past what a batch carries, are the retry timer's: due now, they need not wait out
    their back-off. Rows another transaction holds (a retry of the key under way) are left to it.
    Returns how many rows were made due.
    """
    from django.db.models import Q

    from streamsync.models.bookkeeping import ParkedEvent

    now = _now()
    woken = 0
    for start in range(0, len(lookups), WAKE_CHUNK):
        match = Q()
        for entry in lookups[start : start + WAKE_CHUNK]:
            match |= Q(awaits__contains=[entry])
        waiting = ParkedEvent.objects.filter(match, source=source, next_attempt_at__gt=now)
        ids = waiting.select_for_update(skip_locked=True).values("id")
        woken += ParkedEvent.objects.filter(id__in=ids).update(next_attempt_at=now)
    return woken


# Lookups matched per statement by `wake`; due keys locked and read per statement by `take_due`.
WAKE_CHUNK = 200
TAKE_CHUNK = 200


def take_parked(
    source: str, partitions: set[tuple[str, int]], named: set[str], limit: int
) -> list[list[tuple[ParkedEvent, Event]]]:
    """Lock and read whole queues of keys parked by earlier batches of `partitions`, for a batch to carry.

    The keys `named` by the batch first, then the others, oldest first, until the queues hold
    `limit` rows (the named keys' queues whatever their length). Each key under the advisory lock a
    retry takes (`take_due`), tried without waiting: a key another worker is retrying is left to
    it. A queue holding a record this version cannot read is left to the retry timer, which
    dead-letters it in its turn. Runs inside the caller's transaction, which holds the locks.
    """
    from django.db.models import Count, Min, Q

    from streamsync.models.bookkeeping import ParkedEvent

    if not partitions:
        return []
    where = Q()
    for topic, partition in partitions:
        where |= Q(original_topic=topic, original_partition=partition)
    found = list(
        ParkedEvent.objects.filter(where, source=source)
        .values("key")
        .annotate(first=Min("id"), rows=Count("id"))
        .order_by("first")
    )
    found.sort(key=lambda queue: queue["key"] not in named)  # stable: oldest first within each
    wanted: list[str] = []
    total = 0
    for queue in found:
        if queue["key"] not in named and total + queue["rows"] > limit:
            break
        wanted.append(queue["key"])
        total += queue["rows"]
    if not wanted:
        return []
    locked = try_locks(source, wanted)
    queues: dict[str, list[tuple[ParkedEvent, Event]]] = {}
    unreadable: set[str] = set()
    # Read after the locks are granted: everything a previous holder committed (see `take_due`).
    for row in ParkedEvent.objects.filter(source=source, key__in=locked).order_by("id"):
        event = _read(row)
        if isinstance(event, EnvelopeError):
            unreadable.add(row.key)
        else:
            queues.setdefault(row.key, []).append((row, event))
    return [queue for key, queue in queues.items() if key not in unreadable]


def _remember(source: str, result: BatchResult, batch: Sequence[tuple[Event, Origin]]) -> None:
    """Record where the latest applied event of each key is (`batch` in log order); timed as `last_applied`."""
    from streamsync.sync.positions import sync_agent  # it imports streamsync's tables, and settings import this module

    started = time.perf_counter()
    applied = {id(e) for e in lastapplied.applied_events(result)}
    lastapplied.remember(sync_agent(source), ((o, e.canonical_key) for e, o in batch if id(e) in applied))
    result.add_time("last_applied", time.perf_counter() - started)


def _row(
    source: str,
    event: Event,
    origin: Origin,
    attempts: int,
    retry_at: datetime,
    reason: str,
    waits_for: list[Any] | None = None,
) -> ParkedEvent:
    from streamsync.models.bookkeeping import ParkedEvent

    return ParkedEvent(
        source=source,
        key=event.canonical_key,
        message_key=origin.message_key,
        value=origin.value,
        original_topic=origin.topic,
        original_partition=origin.partition,
        original_offset=origin.offset,
        attempts=attempts,
        next_attempt_at=retry_at,
        last_reason=reason,
        awaits=waits_for,
    )


@dataclass(frozen=True)
class Retrying:
    """How one source's parked events are retried, and where their dead letters go."""

    source: str
    policy: RetryPolicy
    dlq_topic: str
    max_bytes: int
    # Rows one retry takes at most; a key's queue is never cut, so the last key may take it past this.
    limit: int = 500


@dataclass
class Retried:
    """What one retry did: the engine's results, and the dead letters Kafka acknowledged before its commit."""

    results: list[BatchResult] = field(default_factory=list)
    letters: list[tuple[Origin, DeadLetter]] = field(default_factory=list)
    keys: int = 0


def take_due(source: str, now: datetime, limit: int) -> list[list[ParkedEvent]]:
    """Lock and read whole queues of due keys, oldest-due first, until they hold `limit` rows.

    Runs inside the caller's transaction, which holds the keys' locks until it ends. A key is taken
    only under a transaction-scoped advisory lock on (source, key), tried without waiting: a key
    another worker holds is skipped whole. Its rows are read after the lock is granted, in a
    statement of their own, so they are everything the previous holder committed (PostgreSQL makes
    a commit visible before it releases the transaction's locks): never half a queue, never one a
    worker is still applying. A key found not due any more (another worker retried it since the
    look for due keys) is left alone. The lock is on the key, not on its rows, so a row parked
    behind the queue while it is held cannot be taken on its own by another worker either. Keys
    are locked, then read, TAKE_CHUNK at a time (a statement each, not two per key).
    """
    from django.db.models import Count, Min

    from streamsync.models.bookkeeping import ParkedEvent

    due = (
        ParkedEvent.objects.filter(source=source)
        .values("key")
        .annotate(due=Min("next_attempt_at"), first=Min("id"), rows=Count("id"))
        .filter(due__lte=now)
        .order_by("due", "first")
    )
    queues: list[list[ParkedEvent]] = []
    taken = 0
    candidates = due.iterator(chunk_size=TAKE_CHUNK)
    while taken < limit:
        # Keys whose rows (as counted before the locks) fill what is left, locked and read together.
        wanted: list[str] = []
        for candidate in candidates:
            wanted.append(candidate["key"])
            taken += candidate["rows"]
            if taken >= limit or len(wanted) == TAKE_CHUNK:
                break
        if not wanted:
            break
        locked = try_locks(source, wanted)  # a key another worker is retrying is skipped
        read: dict[str, list[ParkedEvent]] = {key: [] for key in locked}
        for row in ParkedEvent.objects.filter(source=source, key__in=locked).order_by("id"):
            read[row.key].append(row)
        for key in wanted:
            queue = read.get(key)
            if queue and min(row.next_attempt_at for row in queue) <= now:
                queues.append(queue)
    return queues


def try_locks(source: str, keys: Sequence[str]) -> list[str]:
    """The `keys` whose advisory lock on (source, key) this transaction got, each tried without waiting."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_xact_lock(%s, h) FROM unnest(%s::integer[]) WITH ORDINALITY AS t(h, n) ORDER BY n",
            [LOCK_NAMESPACE, [lock_id(source, key) for key in keys]],
        )
        return [key for key, (granted,) in zip(keys, cursor.fetchall(), strict=True) if granted]


def lock_id(source: str, key: str) -> int:
    """The advisory lock's second half for (source, key): a stable 32-bit hash.

    Two keys that share one only make each other wait for the next look: never wrong, rarely slower.
    """
    digest = hashlib.blake2b(f"{source}\0{key}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def retry_due(engine: SyncEngine, how: Retrying, wire: Wire) -> Retried:
    """Re-apply the queues of due keys in one transaction; each parked event is settled by its own outcome.

    A queue is applied in `id` order (the order its events came in), as the engine applies a batch:
    each event ends as it would have in a batch of its own (docs/architecture.md, "Batches").
    Applied: its row goes. Rejected, unreadable or failed for good: dead-lettered. Failed in a way
    that may pass later (it, and the key's events queued behind it), with attempts left: the rows
    stay, with the attempt counted and the next one backed off; out of attempts, they are
    dead-lettered. Dead letters are published in the queue's order (and acknowledged) inside the
    transaction, as a batch's are (streamsync/sync/settle.py): the rows go with their letters or
    not at all.

    An engine run that raises for no infrastructure reason is run again key by key, so one key's
    error fails that key alone (an attempt, then its dead letters as `unexpected_error`); an
    infrastructure fault is raised, undoing the whole retry, for the caller to try again later.
    """
    from django.db import transaction

    from streamsync.models.bookkeeping import ParkedEvent

    with transaction.atomic():
        now = _now()
        queues = take_due(how.source, now, how.limit)
        if not queues:
            return Retried()
        taken = len(queues)
        queues = _postpone_missing(how, queues, now)
        if not queues:
            return Retried(keys=taken)
        read = [[_read(row) for row in queue] for queue in queues]
        results, errors = _apply(engine, how.source, [[e for e in q if isinstance(e, Event)] for q in read])
        rows = [(row, e) for q, es in zip(queues, read, strict=True) for row, e in zip(q, es, strict=True)]
        for result in results:
            _remember(how.source, result, [(e, _origin(row)) for row, e in rows if isinstance(e, Event)])
            wake(how.source, result.wrote)
        outcome_of = {id(e): o for result in results for o in result.objects for e in o.events}
        rejected = {id(r.event): (str(r.code), r.reason) for result in results for r in result.rejected}
        letters: list[tuple[Origin, DeadLetter]] = []
        gone: list[int] = []
        for queue, events, error in zip(queues, read, errors, strict=True):
            attempts, next_at = _next_attempt(how, queue, now)
            failures = [_failure(event, error, outcome_of, rejected) for event in events]
            waiting = [f for f in failures if f is not None and f.retryable]
            wait = bool(waiting) and next_at is not None
            settled: list[int] = []
            for row, failure in zip(queue, failures, strict=True):
                if wait and failure is not None and failure.retryable:
                    continue
                settled.append(row.id)
                if failure is not None:
                    origin = _origin(row)
                    letter = DeadLetter.of(origin, failure.code, failure.reason, source=how.source, attempts=attempts)
                    letters.append((origin, letter))
            if wait:
                # The key's rows still waiting, those parked behind it since it was read included: one schedule.
                first = next(e for e, f in zip(events, failures, strict=True) if f is not None and f.retryable)
                waits_for = outcome_of[id(first)].awaits if id(first) in outcome_of else None
                ParkedEvent.objects.filter(source=how.source, key=queue[0].key).exclude(id__in=settled).update(
                    attempts=attempts,
                    next_attempt_at=next_at,
                    last_reason=waiting[0].reason,
                    awaits=awaits.to_json(waits_for),
                )
            gone += settled
        ParkedEvent.objects.filter(id__in=gone).delete()
        wire.publish([letter.record(how.dlq_topic, origin, how.max_bytes) for origin, letter in letters])
    return Retried(results, letters, keys=taken)


def _postpone_missing(how: Retrying, queues: list[list[ParkedEvent]], now: datetime) -> list[list[ParkedEvent]]:
    """The queues to apply: those whose create waits for an object still missing are put off, the attempt counted.

    Trying such a key is a create that fails again (about 10 ms; a few queries to tell). Its last
    attempt is made for real, so that a key dead-lettered for waiting too long is so by its own failure.
    """
    from streamsync.models.bookkeeping import ParkedEvent

    due: list[list[ParkedEvent]] = []
    later: list[ParkedEvent] = []
    for queue in queues:
        attempts, next_at = _next_attempt(how, queue, now)
        waits_for = awaits.from_json(queue[0].awaits)
        if waits_for and next_at is not None and awaits.still_missing(waits_for):
            for row in queue:
                row.attempts, row.next_attempt_at = attempts, next_at
            later += queue
        else:
            due.append(queue)
    ParkedEvent.objects.bulk_update(later, ["attempts", "next_attempt_at"], batch_size=500)
    return due


def _next_attempt(how: Retrying, queue: Sequence[ParkedEvent], now: datetime) -> tuple[int, datetime | None]:
    """The attempt a look at a key's queue counts, and when the one after it is due (None: this one is its last)."""
    attempts = max(row.attempts for row in queue) + 1
    return attempts, now + how.policy.delay(attempts) if attempts < how.policy.max_attempts else None


@dataclass(frozen=True)
class _Failure:
    code: str
    reason: str
    retryable: bool


def _failure(
    event: Event | EnvelopeError,
    error: BaseException | None,
    outcome_of: dict[int, ObjectResult],
    rejected: dict[int, tuple[str, str]],
) -> _Failure | None:
    """Why a parked event failed, if it did: unreadable, rejected, its queue's run raised, or its object failed."""
    if isinstance(event, EnvelopeError):
        return _Failure(event.code, event.reason, retryable=False)
    if id(event) in rejected:
        return _Failure(*rejected[id(event)], retryable=False)
    if error is not None:
        return _Failure(UNEXPECTED_ERROR, trace(error), retryable=True)
    outcome = outcome_of.get(id(event))
    if outcome is None or outcome.outcome is not Outcome.FAILED:
        return None
    return _Failure(DEPENDENCY_MISSING if outcome.retryable else APPLY_FAILED, outcome.reason, outcome.retryable)


def _read(row: ParkedEvent) -> Event | EnvelopeError:
    try:
        return decode(bytes(row.value))
    except EnvelopeError as error:  # parked by a version that read it otherwise: dead-letter it in its turn
        return error


def _apply(
    engine: SyncEngine, source: str, queues: Sequence[Sequence[Event]]
) -> tuple[list[BatchResult], list[BaseException | None]]:
    """Apply the queues in one engine run; if it raises for no infrastructure reason, each queue in a run of its own.

    Each run is in a savepoint, so a failed one leaves the retry's transaction usable. Returns the
    results, and per queue the error its run raised (None if it did not).
    """
    from django.db import transaction

    def run(events: Sequence[Event]) -> BatchResult:
        with transaction.atomic():
            return engine.apply(events, source=source)

    try:
        return [run([e for queue in queues for e in queue])], [None] * len(queues)
    except Exception as error:
        if is_transient(error):
            raise
        if len(queues) == 1:
            return [], [error]
        log.warning("retry failed: applying its keys one by one", source=source, keys=len(queues), error=repr(error))
    results: list[BatchResult] = []
    errors: list[BaseException | None] = []
    for queue in queues:
        try:
            results.append(run(queue))
            errors.append(None)
        except Exception as error:
            if is_transient(error):
                raise
            errors.append(error)
    return results, errors


def _origin(row: ParkedEvent) -> Origin:
    key = bytes(row.message_key) if row.message_key is not None else None
    return Origin(key, bytes(row.value), row.original_topic, row.original_partition, row.original_offset)
