"""The transactional outbox: events waiting to be produced to Kafka, in a table of streamsync's own.

Nautobot's event broker (streamsync.events) writes one row per event in the transaction of the
change it describes, so the change and its event commit or roll back together, and producing to
Kafka never happens on a user's request. The relay (streamsync.agents.relay) produces the rows
in `id` order and deletes them once Kafka has acknowledged them.

Django imports this module while it populates its app registry (StreamsyncConfig.import_models):
it imports nothing but Django.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import models
from django.db.models import Count, Max, Min
from django.utils import timezone


class OutboxEvent(models.Model):
    """One Kafka record waiting to be produced: topic, key, value and headers, exactly as they will be sent."""

    # The order events are produced in (per topic).
    id = models.BigAutoField(primary_key=True)
    created = models.DateTimeField(default=timezone.now)
    topic = models.CharField(max_length=249)  # Kafka's limit for a topic name
    key = models.TextField()
    value = models.TextField()
    # [[name, value], ...]: Kafka headers, values as text.
    headers = models.JSONField(default=list)
    # Failed delivery attempts and the last reason: why the backlog is not shrinking.
    attempts = models.PositiveIntegerField(default=0)
    last_attempt = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        """Read by the relay per topic, in `id` order."""

        app_label = "streamsync"
        indexes = [models.Index(fields=["topic", "id"], name="streamsync_outbox_topic_id")]

    def __str__(self) -> str:
        return f"{self.topic} #{self.id} {self.key}"

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """The headers as aiokafka takes them."""
        return [(str(name), str(value).encode()) for name, value in self.headers]


@dataclass(frozen=True)
class Backlog:
    """What waits in the outbox: for monitoring (alert when `oldest_age_seconds` keeps growing)."""

    count: int
    # Seconds since the oldest waiting event was written; 0.0 when nothing waits.
    oldest_age_seconds: float
    oldest_created: datetime | None
    # The most delivery attempts any waiting event has had, and the oldest event's last failure.
    max_attempts: int
    last_error: str

    def as_dict(self) -> dict[str, Any]:
        """Flat fields for a log line or a metrics exporter."""
        return {
            "count": self.count,
            "oldest_age_seconds": round(self.oldest_age_seconds, 3),
            "oldest_created": self.oldest_created.isoformat() if self.oldest_created else None,
            "max_attempts": self.max_attempts,
            "last_error": self.last_error,
        }


def backlog(topic: str | None = None, *, using: str = "default") -> Backlog:
    """Events waiting in the outbox (for one topic, or all), and how old the oldest is. Two indexed queries."""
    rows = OutboxEvent.objects.using(using)
    if topic is not None:
        rows = rows.filter(topic=topic)
    summary = rows.aggregate(count=Count("id"), oldest=Min("created"), attempts=Max("attempts"))
    oldest: datetime | None = summary["oldest"]
    last_error = ""
    if summary["count"]:
        last_error = rows.order_by("id").values_list("last_error", flat=True).first() or ""
    return Backlog(
        count=summary["count"],
        oldest_age_seconds=max(0.0, (timezone.now() - oldest).total_seconds()) if oldest else 0.0,
        oldest_created=oldest,
        max_attempts=summary["attempts"] or 0,
        last_error=last_error,
    )
