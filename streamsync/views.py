"""The streamsync health page: is the group keeping up, what did recent batches do, what was dead-lettered."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views import View
from nautobot.core.views.mixins import ContentTypePermissionRequiredMixin

from streamsync.contract.topics import events_topic
from streamsync.monitor.batchlog import BatchSummary, WorkerStatus
from streamsync.monitor.health import Health, gather
from streamsync.ops.deadletters import StoredLetter
from streamsync.ops.lag import PartitionLag, format_age
from streamsync.settings import ConfigError, StreamsyncSettings
from streamsync.sync.permissions import FIX

# Streamsync's operational state is a view of its parked events and dead letters: whoever may see
# parked events (superusers, or a "view" object permission on streamsync | parked event) sees the page.
PERMISSION = "streamsync.view_parkedevent"
# A worker that has not reported for this many metrics intervals is shown as silent (stopped or hung).
SILENT_AFTER = 3


@dataclass
class TopicLag:
    """One topic's partitions, for one table on the page."""

    title: str
    topic: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    oldest_age: str = "-"


class HealthView(ContentTypePermissionRequiredMixin, View):
    """Lag per source and partition with ages, recent batches, recent dead letters per source."""

    def get_required_permission(self) -> str:
        """Nautobot's permission check for this page."""
        return PERMISSION

    def get(self, request: HttpRequest) -> HttpResponse:
        """Render the page; each part that cannot be read says why instead."""
        try:
            settings = StreamsyncSettings.load()
        except ConfigError as error:
            return render(request, "streamsync/health.html", {"config_error": str(error)})
        health = gather(settings)
        return render(
            request,
            "streamsync/health.html",
            {
                "health": health,
                "topics": _topics(health, settings),
                "letters": _letters(health),
                "batches": [_batch(b) for b in health.batches],
                "workers": [_worker(w, settings) for w in health.workers],
                "parked": [(source, health.parked.get(source, 0)) for source in health.sources],
                "outbox_age": _outbox_age(health),
                "fix": FIX,
            },
        )


def _topics(health: Health, settings: StreamsyncSettings) -> list[TopicLag]:
    names = {events_topic(s, settings.topic_prefix): s for s in settings.sources}
    tables: dict[str, TopicLag] = {}
    for row in health.lag:
        source = names.get(row.topic)
        table = tables.setdefault(row.topic, TopicLag(f"source {source}" if source else row.topic, row.topic))
        table.rows.append(_partition(row))
        table.total += row.lag
    for table in tables.values():
        ages = [r["age_s"] for r in table.rows if r["age_s"] is not None]
        table.oldest_age = format_age(max(ages)) if ages else "-"
    return sorted(tables.values(), key=lambda t: t.topic)


def _outbox_age(health: Health) -> str:
    backlog = health.backlog
    return format_age(backlog.oldest_age_seconds) if backlog is not None and backlog.count else "-"


def _partition(row: PartitionLag) -> dict[str, Any]:
    age = row.oldest_age_seconds if row.lag > 0 else None
    return {
        "partition": row.partition,
        "current": "-" if row.current_offset is None else row.current_offset,
        "end": row.log_end_offset,
        "lag": row.lag,
        "age_s": age,
        # Nothing waits: "-"; something waits but its record could not be read in time: "unknown".
        "age": "-" if row.lag == 0 else format_age(age) if age is not None else "unknown",
    }


def _letters(health: Health) -> list[dict[str, Any]]:
    return [_letter(source, stored) for source, letters in sorted(health.letters.items()) for stored in letters]


def _letter(source: str, stored: StoredLetter) -> dict[str, Any]:
    row: dict[str, Any] = {
        "source": source,
        "where": f"{stored.partition}@{stored.offset}",
        "key": stored.key.decode(errors="replace") if stored.key else "",
        "replayed": stored.replayed,
        "code": "unknown",
        "reason": "no streamsync headers",
        "failed_at": None,
        "attempts": None,
        "origin": "",
    }
    info = stored.letter
    if info is not None:
        row.update(
            code=info.code,
            reason=info.reason,
            failed_at=info.failed_at,
            attempts=info.attempts,
            origin=f"{info.original_topic}[{info.original_partition}]@{info.original_offset}",
        )
    return row


def _worker(status: WorkerStatus, settings: StreamsyncSettings) -> dict[str, Any]:
    """A worker's row: silent (stopped reporting), stalled (retrying for the infrastructure), or settling."""
    now = datetime.now(UTC)
    silent = (now - status.at).total_seconds() > SILENT_AFTER * settings.metrics_interval
    return {
        "worker": status.worker,
        "reported": status.at,
        "reported_age": format_age((now - status.at).total_seconds()),
        "state": "silent" if silent else "stalled" if status.stalled else "settling",
        "stalled": [
            {**stall.model_dump(), "for": format_age((now - stall.since).total_seconds())} for stall in status.stalled
        ],
    }


def _batch(summary: BatchSummary) -> dict[str, Any]:
    return {
        **summary.model_dump(),
        "apply_ms": summary.timings_ms.get("total"),
        "end_to_end": format_age(summary.max_end_to_end_s),
    }
