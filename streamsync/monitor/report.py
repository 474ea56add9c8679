"""The health page's figures as one typed report: what the page renders and what the REST API returns.

`streamsync.monitor.health.gather` reads the raw figures; this module decides what they mean for a
person or a monitoring system (a partition's age only where something waits, a worker silent after
three missed reports, a dead letter's origin), once, so the page and the API cannot disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from streamsync.contract.topics import events_topic, nautobot_events_topic
from streamsync.monitor.batchlog import BatchSummary, Stall, WorkerStatus
from streamsync.monitor.health import Health
from streamsync.ops.deadletters import StoredLetter
from streamsync.ops.lag import PartitionLag

# Who may read the report, on the page and through the API: whoever may see streamsync's parked
# events (superusers, or a "view" object permission on streamsync | parked event).
PERMISSION = "streamsync.view_parkedevent"
# A worker that has not reported for this many metrics intervals is shown as silent (stopped or hung).
SILENT_AFTER = 3

WorkerState = Literal["settling", "stalled", "silent"]


class PartitionReport(BaseModel):
    """One partition of a source's events topic, as `streamsync lag` shows it."""

    partition: int
    committed_offset: int | None  # None: the group has committed nothing here yet
    log_end_offset: int
    lag: int
    # Age of the oldest unprocessed record; None when nothing waits or when it could not be read in time.
    oldest_age_seconds: float | None
    age_unknown: bool  # something waits but its record could not be read in time


class TopicReport(BaseModel):
    """One source's events topic: its partitions, their total lag and the oldest age among them."""

    source: str | None  # None: a topic of the group that no configured source names
    topic: str
    lag: int
    oldest_age_seconds: float | None
    partitions: list[PartitionReport]


class OutboxReport(BaseModel):
    """Nautobot's change events waiting in the outbox for the relay."""

    topic: str
    count: int
    oldest_age_seconds: float  # 0.0 when nothing waits
    oldest_created: datetime | None
    max_attempts: int
    last_error: str


class WriterReport(BaseModel):
    """Whether the Nautobot user may write one source's models now, and if not, why."""

    source: str
    writing: bool
    blocked: str  # user_missing, user_inactive, permission_missing; "" while writing
    missing: list[str]
    reason: str


class WorkerReport(BaseModel):
    """One worker of the group and its state."""

    worker: str  # host:pid
    reported_at: datetime
    state: WorkerState
    stalled: list[Stall]


class DeadLetterReport(BaseModel):
    """One recent dead letter: where it sits, why it is there and where its record came from."""

    source: str
    partition: int
    offset: int
    key: str
    replayed: bool
    code: str  # "unknown" when the record carries no readable streamsync headers
    reason: str
    failed_at: datetime | None
    attempts: int | None
    original_topic: str | None
    original_partition: int | None
    original_offset: int | None


class HealthErrors(BaseModel):
    """Why a part of the report is missing; "" where it could be read."""

    kafka: str
    redis: str
    database: str
    writers: str


class HealthReport(BaseModel):
    """Sync health of one consumer group: lag, what waits, the writer, workers, batches and dead letters."""

    generated_at: datetime
    group: str
    topic_prefix: str
    kafka: str
    sources: list[str]
    lag: list[TopicReport]
    outbox: OutboxReport | None
    parked: dict[str, int]  # per configured source, 0 where none waits
    user: str
    writers: list[WriterReport]
    workers: list[WorkerReport]
    batches: list[BatchSummary]
    dead_letters: list[DeadLetterReport]
    errors: HealthErrors


def build(health: Health, metrics_interval: float, *, now: datetime | None = None) -> HealthReport:
    """The report of `health`; `metrics_interval` is how often workers report (for telling silent ones)."""
    now = now or datetime.now(UTC)
    backlog = health.backlog
    outbox = None
    if backlog is not None:
        outbox = OutboxReport(
            topic=nautobot_events_topic(health.prefix),
            count=backlog.count,
            oldest_age_seconds=round(backlog.oldest_age_seconds, 3),
            oldest_created=backlog.oldest_created,
            max_attempts=backlog.max_attempts,
            last_error=backlog.last_error,
        )
    return HealthReport(
        generated_at=now,
        group=health.group,
        topic_prefix=health.prefix,
        kafka=health.kafka,
        sources=health.sources,
        lag=_topics(health),
        outbox=outbox,
        parked={} if health.database_error else {s: health.parked.get(s, 0) for s in health.sources},
        user=health.user,
        writers=[
            WriterReport(source=w.source, writing=not w.blocked, blocked=w.blocked, missing=w.missing, reason=w.reason)
            for w in health.writers
        ],
        workers=[_worker(status, metrics_interval, now) for status in health.workers],
        batches=health.batches,
        dead_letters=[_letter(src, stored) for src, letters in sorted(health.letters.items()) for stored in letters],
        errors=HealthErrors(
            kafka=health.kafka_error,
            redis=health.batches_error,
            database=health.database_error,
            writers=health.writers_error,
        ),
    )


def _topics(health: Health) -> list[TopicReport]:
    names = {events_topic(s, health.prefix): s for s in health.sources}
    rows: dict[str, list[PartitionReport]] = {}
    for row in health.lag:
        rows.setdefault(row.topic, []).append(_partition(row))
    reports = []
    for topic, partitions in sorted(rows.items()):
        ages = [p.oldest_age_seconds for p in partitions if p.oldest_age_seconds is not None]
        reports.append(
            TopicReport(
                source=names.get(topic),
                topic=topic,
                lag=sum(p.lag for p in partitions),
                oldest_age_seconds=max(ages) if ages else None,
                partitions=sorted(partitions, key=lambda p: p.partition),
            )
        )
    return reports


def _partition(row: PartitionLag) -> PartitionReport:
    waiting = row.lag > 0
    age = row.oldest_age_seconds if waiting else None
    return PartitionReport(
        partition=row.partition,
        committed_offset=row.current_offset,
        log_end_offset=row.log_end_offset,
        lag=row.lag,
        oldest_age_seconds=None if age is None else round(age, 3),
        age_unknown=waiting and age is None,
    )


def _worker(status: WorkerStatus, interval: float, now: datetime) -> WorkerReport:
    silent = (now - status.at).total_seconds() > SILENT_AFTER * interval
    state: WorkerState = "silent" if silent else "stalled" if status.stalled else "settling"
    return WorkerReport(worker=status.worker, reported_at=status.at, state=state, stalled=status.stalled)


def _letter(source: str, stored: StoredLetter) -> DeadLetterReport:
    info = stored.letter
    return DeadLetterReport(
        source=source,
        partition=stored.partition,
        offset=stored.offset,
        key=stored.key.decode(errors="replace") if stored.key else "",
        replayed=stored.replayed,
        code=info.code if info else "unknown",
        reason=info.reason if info else "no streamsync headers",
        failed_at=info.failed_at if info else None,
        attempts=info.attempts if info else None,
        original_topic=info.original_topic if info else None,
        original_partition=info.original_partition if info else None,
        original_offset=info.original_offset if info else None,
    )
