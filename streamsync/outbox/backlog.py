"""What waits in the transactional outbox (`OutboxEvent`, streamsync/models/bookkeeping.py): for monitoring.

Nautobot's event broker (streamsync/outbox/broker.py) writes one row per event in the transaction
of the change it describes, so the change and its event commit or roll back together, and
producing to Kafka never happens on a user's request. The relay (streamsync/agents/relay.py)
produces the rows in `id` order and deletes them once Kafka has acknowledged them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, Max, Min
from django.utils import timezone

from streamsync.models.bookkeeping import OutboxEvent


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
