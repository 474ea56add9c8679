"""Recent batches and the workers' state, kept in Redis for the health page.

A compact summary of each committed batch goes into a capped list per consumer group; each worker
also keeps one entry in a hash per group saying which of its agents are retrying for an
infrastructure reason (since when, why). Workers push through Django's cache Redis connection
(Nautobot's Redis, which every worker and the web app already share); the health page reads them.
No database table: these are a window on recent activity, not a record.

Pushing happens on a thread of its own, never on the event loop, and never holds up a batch: a
slow or absent Redis costs the summaries, not the sync.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from datetime import datetime
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

log = structlog.get_logger(__name__)

KEEP = 200
# Summaries waiting for Redis beyond this are dropped rather than queued without bound.
MAX_PENDING = 1000


class BatchSummary(BaseModel):
    """One committed batch, as the health page lists it."""

    at: datetime
    group: str
    source: str
    worker: str  # host:pid
    batch_id: str
    events: int
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    failed: int = 0
    rejected: int = 0
    # Engine phases (load, diff, save, changelog, total), milliseconds.
    timings_ms: dict[str, float] = {}
    # The largest envelope-`ts`-to-commit delay among the batch's applied events.
    max_end_to_end_s: float | None = None


class Stall(BaseModel):
    """An agent whose batch keeps failing for an infrastructure reason: it waits, nothing is dead-lettered."""

    agent: str
    cause: str  # database, redis, kafka, target, operator, timeout
    since: datetime
    attempts: int
    error: str


class WorkerStatus(BaseModel):
    """One worker as the health page lists it."""

    group: str
    worker: str  # host:pid
    at: datetime  # when the worker said this; an old one means the worker stopped reporting
    stalled: list[Stall] = []


def workers_key(group: str) -> str:
    """The Redis hash holding `group`'s workers' states, by worker."""
    return f"streamsync:{group}:workers"


def report(status: WorkerStatus) -> None:
    """Store one worker's state (synchronous: Redis round trip)."""
    _redis().hset(workers_key(status.group), status.worker, status.model_dump_json())


def workers(group: str) -> list[WorkerStatus]:
    """Every worker state of `group`, most recently reported first; entries that do not parse are skipped."""
    found = []
    for raw in _redis().hvals(workers_key(group)):
        try:
            found.append(WorkerStatus.model_validate_json(raw))
        except ValidationError:
            continue
    return sorted(found, key=lambda status: status.at, reverse=True)


def redis_key(group: str) -> str:
    """The Redis list holding `group`'s recent batches."""
    return f"streamsync:{group}:batches"


def _redis() -> Any:
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def push(summary: BatchSummary) -> None:
    """Prepend one summary and trim the list to KEEP (synchronous: Redis round trip)."""
    key = redis_key(summary.group)
    pipe = _redis().pipeline()
    pipe.lpush(key, summary.model_dump_json())
    pipe.ltrim(key, 0, KEEP - 1)
    pipe.execute()


def recent(group: str, limit: int = 25) -> list[BatchSummary]:
    """The newest `limit` summaries of `group` (synchronous); entries that do not parse are skipped."""
    summaries = []
    for raw in _redis().lrange(redis_key(group), 0, max(0, limit - 1)):
        try:
            summaries.append(BatchSummary.model_validate_json(raw))
        except ValidationError:
            continue
    return summaries


class Recorder:
    """Pushes summaries and worker states in order on one daemon thread; drops them when Redis falls far behind.

    A daemon thread, so that a Redis that hangs (no socket timeout in Nautobot's cache settings)
    never keeps a stopping worker alive.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[BatchSummary | WorkerStatus] = queue.Queue(maxsize=MAX_PENDING)
        self._failing = False
        threading.Thread(target=self._run, name="streamsync-batchlog", daemon=True).start()

    def record(self, item: BatchSummary | WorkerStatus) -> None:
        """Queue a batch summary or a worker state for Redis; returns at once."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(item)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if isinstance(item, WorkerStatus):
                    report(item)
                else:
                    push(item)
            except Exception as error:  # Redis away: say so once, keep syncing
                if not self._failing:
                    log.warning("cannot record batch summary in Redis", error=repr(error))
                self._failing = True
            else:
                if self._failing:
                    log.info("recording batch summaries in Redis again")
                self._failing = False
