"""Recent batches: a compact summary of each committed batch, kept in a capped Redis list per consumer group.

Workers push through Django's cache Redis connection (Nautobot's Redis, which every worker and
the web app already share); the health page reads the list. No database table: the list is a
window on recent activity, not a record: at most KEEP entries per group, newest first.

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
    """Pushes summaries in order on one daemon thread; drops them when Redis falls far behind.

    A daemon thread, so that a Redis that hangs (no socket timeout in Nautobot's cache settings)
    never keeps a stopping worker alive.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[BatchSummary] = queue.Queue(maxsize=MAX_PENDING)
        self._failing = False
        threading.Thread(target=self._run, name="streamsync-batchlog", daemon=True).start()

    def record(self, summary: BatchSummary) -> None:
        """Queue `summary` for Redis; returns at once."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(summary)

    def _run(self) -> None:
        while True:
            summary = self._queue.get()
            try:
                push(summary)
            except Exception as error:  # Redis away: say so once, keep syncing
                if not self._failing:
                    log.warning("cannot record batch summary in Redis", error=repr(error))
                self._failing = True
            else:
                if self._failing:
                    log.info("recording batch summaries in Redis again")
                self._failing = False
