"""Failures that may pass later: parked, then retried with back-off, in order per key, across workers.

A batch's events whose object failed retryably (typically a foreign key whose object has not
arrived yet) are parked in `ParkedEvent` rows, in the same transaction as the rest of the batch
(`apply_source`). While a key has parked events, newer events for it are parked behind them. A
timer in every worker re-applies the due keys' queues (`retry_due`); a key that keeps failing is
dead-lettered after `max_attempts`. Everything here runs on the database thread.

Why a key's events are applied in order, however many workers retry:

- A retry takes whole keys, each under a transaction-scoped advisory lock on (source, key) tried
  without waiting (`take_due`): one key's queue is retried by one worker at a time, all of it, in
  `id` order, and every row of it removed, rescheduled or dead-lettered before the commit frees
  the key.
- Parked rows of a key are inserted only by batches of the key's partition, which its position
  lock serialises (streamsync/sync/positions.py). A batch that finds no parked rows for a key therefore
  knows none exist: no retry of it can be running (a running one's rows are still there, its
  deletes uncommitted) and none can start before the batch commits. A batch that finds rows parks
  behind them; a retry in flight removes only the rows it read, so the new row is neither applied
  before them nor lost: the queue's next retry takes it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from streamsync.contract.deadletter import APPLY_FAILED, DEPENDENCY_MISSING, UNEXPECTED_ERROR, DeadLetter
from streamsync.contract.envelope import EnvelopeError, Event, decode
from streamsync.contract.records import Origin, OutRecord
from streamsync.sync import lastapplied
from streamsync.sync.batch import BatchResult, ObjectResult, Outcome
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


def _now() -> datetime:
    from django.utils import timezone

    return timezone.now()


def apply_source(
    engine: SyncEngine, source: str, incoming: Sequence[Incoming], policy: RetryPolicy, state_topic: str
) -> Applied:
    """Apply a source's events in the caller's transaction; park retryable failures and what queues behind them.

    Parked events are not dead-lettered; rejected events and failures that cannot pass later are.
    Whether a key is parked is read without a lock: the module's docstring says why that is safe.
    The touched keys' full states (applied, failed and parked events alike; rejected ones not) are
    merged into the state table here and returned as state-topic records. Where each key's latest
    applied event is goes to `LastApplied` (streamsync/sync/lastapplied.py), for dead letters it supersedes.
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
    behind = [e for e in events if e.canonical_key in schedule]
    result = engine.apply([e for e in events if e.canonical_key not in schedule], source=source)
    rows = [
        _row(source, e, origins[id(e)], 0, schedule[e.canonical_key], "queued behind an earlier event") for e in behind
    ]
    letters = [
        (origins[id(r.event)], DeadLetter.of(origins[id(r.event)], r.code, r.reason, source=source))
        for r in result.rejected
    ]
    for failure in result.failed:
        # A key too long for the table would fail this transaction on every redelivery: dead-letter it.
        parkable = all(len(e.canonical_key) <= KEY_LENGTH for e in failure.events)
        if failure.retryable and policy.max_attempts > 1 and parkable:
            retry_at = _now() + policy.delay(1)
            rows += [_row(source, e, origins[id(e)], 1, retry_at, failure.reason) for e in failure.events]
            continue
        code = DEPENDENCY_MISSING if failure.retryable else APPLY_FAILED
        letters += [
            (origins[id(e)], DeadLetter.of(origins[id(e)], code, failure.reason, source=source)) for e in failure.events
        ]
    ParkedEvent.objects.bulk_create(rows)
    _remember(source, result, [(i.event, i.origin) for i in incoming])
    rejected = {id(r.event) for r in result.rejected}
    state = merge_state(source, engine.registry, [e for e in events if id(e) not in rejected])
    records = [OutRecord(state_topic, *record.kafka()) for record in state]
    return Applied(result, letters, records, parked=len(rows))


def _remember(source: str, result: BatchResult, batch: Sequence[tuple[Event, Origin]]) -> None:
    """Record where the latest applied event of each key is (`batch` in log order); timed as `last_applied`."""
    from streamsync.sync.positions import sync_agent  # it imports streamsync's tables, and settings import this module

    started = time.perf_counter()
    applied = {id(e) for e in lastapplied.applied_events(result)}
    lastapplied.remember(sync_agent(source), ((o, e.canonical_key) for e, o in batch if id(e) in applied))
    result.add_time("last_applied", time.perf_counter() - started)


def _row(source: str, event: Event, origin: Origin, attempts: int, retry_at: datetime, reason: str) -> ParkedEvent:
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
    behind the queue while it is held cannot be taken on its own by another worker either.
    """
    from django.db import connection
    from django.db.models import Min

    from streamsync.models.bookkeeping import ParkedEvent

    due = (
        ParkedEvent.objects.filter(source=source)
        .values("key")
        .annotate(due=Min("next_attempt_at"), first=Min("id"))
        .filter(due__lte=now)
        .order_by("due", "first")
    )
    queues: list[list[ParkedEvent]] = []
    taken = 0
    with connection.cursor() as cursor:
        for candidate in due.iterator(chunk_size=200):
            if taken >= limit:
                break
            key = candidate["key"]
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, lock_id(source, key)])
            if not cursor.fetchone()[0]:
                continue  # another worker is retrying it
            queue = list(ParkedEvent.objects.filter(source=source, key=key).order_by("id"))
            if not queue or min(row.next_attempt_at for row in queue) > now:
                continue
            queues.append(queue)
            taken += len(queue)
    return queues


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
        read = [[_read(row) for row in queue] for queue in queues]
        results, errors = _apply(engine, how.source, [[e for e in q if isinstance(e, Event)] for q in read])
        rows = [(row, e) for q, es in zip(queues, read, strict=True) for row, e in zip(q, es, strict=True)]
        for result in results:
            _remember(how.source, result, [(e, _origin(row)) for row, e in rows if isinstance(e, Event)])
        outcome_of = {id(e): o for result in results for o in result.objects for e in o.events}
        rejected = {id(r.event): (str(r.code), r.reason) for result in results for r in result.rejected}
        letters: list[tuple[Origin, DeadLetter]] = []
        gone: list[int] = []
        for queue, events, error in zip(queues, read, errors, strict=True):
            attempts = max(row.attempts for row in queue) + 1
            failures = [_failure(event, error, outcome_of, rejected) for event in events]
            waiting = [f for f in failures if f is not None and f.retryable]
            wait = bool(waiting) and attempts < how.policy.max_attempts
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
                ParkedEvent.objects.filter(source=how.source, key=queue[0].key).exclude(id__in=settled).update(
                    attempts=attempts, next_attempt_at=now + how.policy.delay(attempts), last_reason=waiting[0].reason
                )
            gone += settled
        ParkedEvent.objects.filter(id__in=gone).delete()
        wire.publish([letter.record(how.dlq_topic, origin, how.max_bytes) for origin, letter in letters])
    return Retried(results, letters, keys=len(queues))


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
