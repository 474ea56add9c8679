"""The streamsync health page: is the group keeping up, what did recent batches do, what was dead-lettered."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views import View
from nautobot.core.views.mixins import ContentTypePermissionRequiredMixin

from streamsync.monitor import report as reports
from streamsync.monitor.batchlog import BatchSummary
from streamsync.monitor.health import gather
from streamsync.monitor.report import PERMISSION
from streamsync.ops.lag import format_age
from streamsync.settings import ConfigError, StreamsyncSettings
from streamsync.sync.permissions import FIX


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
        report = reports.build(health, settings.metrics_interval)
        return render(
            request,
            "streamsync/health.html",
            {
                "health": health,
                "topics": [_topic(t) for t in report.lag],
                "letters": [_letter(letter) for letter in report.dead_letters],
                "batches": [_batch(b) for b in report.batches],
                "workers": [_worker(w, report) for w in report.workers],
                "parked": sorted(report.parked.items()),
                "outbox_age": _outbox_age(report.outbox),
                "fix": FIX,
            },
        )


def _outbox_age(outbox: reports.OutboxReport | None) -> str:
    return format_age(outbox.oldest_age_seconds) if outbox is not None and outbox.count else "-"


def _topic(topic: reports.TopicReport) -> dict[str, Any]:
    return {
        "title": f"source {topic.source}" if topic.source else topic.topic,
        "topic": topic.topic,
        "total": topic.lag,
        "oldest_age": format_age(topic.oldest_age_seconds),
        "rows": [
            {
                "partition": p.partition,
                "current": "-" if p.committed_offset is None else p.committed_offset,
                "end": p.log_end_offset,
                "lag": p.lag,
                # Nothing waits: "-"; something waits but its record could not be read in time: "unknown".
                "age": "unknown" if p.age_unknown else format_age(p.oldest_age_seconds),
            }
            for p in topic.partitions
        ],
    }


def _letter(letter: reports.DeadLetterReport) -> dict[str, Any]:
    origin = ""
    if letter.original_topic is not None:
        origin = f"{letter.original_topic}[{letter.original_partition}]@{letter.original_offset}"
    return {**letter.model_dump(), "where": f"{letter.partition}@{letter.offset}", "origin": origin}


def _worker(worker: reports.WorkerReport, report: reports.HealthReport) -> dict[str, Any]:
    now = report.generated_at
    return {
        "worker": worker.worker,
        "reported": worker.reported_at,
        "reported_age": format_age((now - worker.reported_at).total_seconds()),
        "state": worker.state,
        "stalled": [
            {**stall.model_dump(), "for": format_age((now - stall.since).total_seconds())} for stall in worker.stalled
        ],
    }


def _batch(summary: BatchSummary) -> dict[str, Any]:
    return {
        **summary.model_dump(),
        "apply_ms": summary.timings_ms.get("total"),
        "end_to_end": format_age(summary.max_end_to_end_s),
    }
