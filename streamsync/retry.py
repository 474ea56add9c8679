"""Retries with back-off for failures that may pass later, in order per key, without blocking other keys.

A batch's events whose object failed retryably (typically a foreign key whose object has not
arrived yet) are parked in `ParkedEvent` rows, in the same transaction as the rest of the batch.
While a key has parked events, newer events for it are parked behind them. A timer re-applies the
due keys' queues through the engine; a key that keeps failing is dead-lettered after
`max_attempts`. Everything here runs on the database thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from streamsync.deadletter import APPLY_FAILED, DEPENDENCY_MISSING, DeadLetter
from streamsync.engine import BatchResult, ObjectResult, Outcome, SyncEngine
from streamsync.envelope import Event, decode
from streamsync.records import Origin, OutRecord
from streamsync.settle import Applied, Incoming
from streamsync.state import merge as merge_state

if TYPE_CHECKING:
    from streamsync.models.state import ParkedEvent


class RetryPolicy(BaseModel):
    """How often and how long to retry a failure that may pass later."""

    max_attempts: int = Field(default=8, ge=1)
    backoff: float = Field(default=1.0, gt=0, description="seconds before the first retry; doubles each attempt")
    backoff_max: float = Field(default=300.0, gt=0)

    def delay(self, attempts: int) -> timedelta:
        """Wait before the next attempt, after `attempts` failed ones."""
        return timedelta(seconds=min(self.backoff_max, self.backoff * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class Doomed:
    """A parked event to dead-letter, and why."""

    row_id: int | None
    origin: Origin
    code: str
    reason: str
    attempts: int


def _now() -> datetime:
    from django.utils import timezone

    return timezone.now()


def apply_source(
    engine: SyncEngine, source: str, incoming: Sequence[Incoming], policy: RetryPolicy, state_topic: str
) -> Applied:
    """Apply a source's events in the caller's transaction; park retryable failures and what queues behind them.

    Parked events are not dead-lettered; rejected events and failures that cannot pass later are.
    The touched keys' full states (applied, failed and parked events alike; rejected ones not) are
    merged into the state table here and returned as state-topic records.
    """
    from django.db.models import Min

    from streamsync.models.state import KEY_LENGTH, ParkedEvent

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
    rejected = {id(r.event) for r in result.rejected}
    state = merge_state(source, engine.registry, [e for e in events if id(e) not in rejected])
    records = [OutRecord(state_topic, *record.kafka()) for record in state]
    return Applied(result, letters, records, parked=len(rows))


def _row(source: str, event: Event, origin: Origin, attempts: int, retry_at: datetime, reason: str) -> ParkedEvent:
    from streamsync.models.state import ParkedEvent

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


def retry_due(
    engine: SyncEngine, source: str, policy: RetryPolicy, limit: int = 500
) -> tuple[BatchResult | None, list[Doomed]]:
    """Re-apply the queues of keys whose retry is due; returns what to dead-letter (rows not yet deleted).

    Rows to dead-letter get a lease (their next attempt moves 5 minutes ahead) so another worker
    does not pick them up meanwhile; the caller deletes them once the dead letters are written.
    """
    from django.db import transaction

    from streamsync.models.state import ParkedEvent

    with transaction.atomic():
        now = _now()
        due_keys = list(
            ParkedEvent.objects.select_for_update(skip_locked=True)
            .filter(source=source, next_attempt_at__lte=now)
            .values_list("key", flat=True)[:limit]
        )
        if not due_keys:
            return None, []
        rows = list(
            ParkedEvent.objects.select_for_update(skip_locked=True)
            .filter(source=source, key__in=set(due_keys))
            .order_by("id")
        )
        by_key: dict[str, list[ParkedEvent]] = {}
        for row in rows:
            by_key.setdefault(row.key, []).append(row)
        events: dict[int, Event] = {}
        for row in rows:
            events[row.id] = decode(bytes(row.value))
        result = engine.apply(list(events.values()), source=source)

        outcome_of = {id(e): o for o in result.objects for e in o.events}
        rejected = {id(r.event): r for r in result.rejected}
        doomed: list[Doomed] = []
        done: list[int] = []
        for queue in by_key.values():
            # Each event has its own outcome: one applied is done, one that failed for good is dead-lettered,
            # and the rest (the failure that may pass later and what queues behind it) waits again.
            attempts = max(row.attempts for row in queue) + 1
            waiting: list[tuple[ParkedEvent, ObjectResult]] = []
            for row in queue:
                event = events[row.id]
                outcome = outcome_of.get(id(event))
                if id(event) in rejected:
                    r = rejected[id(event)]
                    doomed.append(Doomed(row.id, _origin(row), r.code, r.reason, attempts))
                elif outcome is not None and outcome.outcome is Outcome.FAILED and outcome.retryable:
                    waiting.append((row, outcome))
                elif outcome is not None and outcome.outcome is Outcome.FAILED:
                    doomed.append(Doomed(row.id, _origin(row), APPLY_FAILED, outcome.reason, attempts))
                else:
                    done.append(row.id)
            if waiting and attempts < policy.max_attempts:
                ParkedEvent.objects.filter(id__in=[row.id for row, _ in waiting]).update(
                    attempts=attempts, next_attempt_at=now + policy.delay(attempts), last_reason=waiting[0][1].reason
                )
            else:
                doomed += [
                    Doomed(row.id, _origin(row), DEPENDENCY_MISSING, outcome.reason, attempts)
                    for row, outcome in waiting
                ]
        ParkedEvent.objects.filter(id__in=done).delete()
        ParkedEvent.objects.filter(id__in=[d.row_id for d in doomed]).update(next_attempt_at=now + timedelta(minutes=5))
    return result, doomed


def forget(row_ids: Sequence[int]) -> None:
    """Delete parked rows once their dead letters are written."""
    from streamsync.models.state import ParkedEvent

    ParkedEvent.objects.filter(id__in=list(row_ids)).delete()


def _origin(row: ParkedEvent) -> Origin:
    key = bytes(row.message_key) if row.message_key is not None else None
    return Origin(key, bytes(row.value), row.original_topic, row.original_partition, row.original_offset)
