"""Nautobot's own /metrics, through the app `metrics` hook: the outbox and parked backlogs."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from tests.integration.conftest import Stream

pytestmark = pytest.mark.integration


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of Prometheus' text format by (name, labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _nautobot_metrics() -> str:
    """What Nautobot's /metrics view serves (it is routed only where METRICS_ENABLED is set)."""
    from django.test import RequestFactory
    from nautobot.core.views import NautobotMetricsView

    response = NautobotMetricsView.as_view()(RequestFactory().get("/metrics/"))
    assert response.status_code == 200
    return bytes(response.render().content).decode()


def test_nautobot_metrics_show_the_outbox_and_parked_backlogs(page_settings: Stream) -> None:
    from django.utils import timezone
    from nautobot.extras.plugins import registry

    from streamsync.metrics import backlogs
    from streamsync.models.bookkeeping import OutboxEvent, ParkedEvent

    assert backlogs in registry["app_metrics"]  # Nautobot's loader found the hook
    topic = f"{page_settings.prefix}.nautobot.events"
    source = f"s{uuid.uuid4().hex[:8]}"  # parked events are not per topic prefix: a source of this test's own
    outbox = ("nautobot_streamsync_outbox_backlog_events", (("topic", topic),))
    age = ("nautobot_streamsync_outbox_oldest_age_seconds", (("topic", topic),))
    parked = ("nautobot_streamsync_parked_events", (("source", source),))

    before = scrape(_nautobot_metrics())
    assert before[outbox] == 0 and before[age] == 0 and parked not in before
    assert before[("nautobot_streamsync_parked_events", (("source", "ipam"),))] >= 0  # every configured source

    now = timezone.now()
    for seconds in (90, 30):
        OutboxEvent.objects.create(topic=topic, key="k", value="{}", created=now - timedelta(seconds=seconds))
    for offset in range(3):
        ParkedEvent.objects.create(
            source=source,
            key=f'vlan:{{"vid":{offset}}}',
            value=b"{}",
            original_topic=f"{page_settings.prefix}.{source}.events",
            original_partition=0,
            original_offset=offset,
            next_attempt_at=now,
        )
    try:
        after = scrape(_nautobot_metrics())
    finally:  # the run's database is shared by its tests: leave no backlog behind
        OutboxEvent.objects.filter(topic=topic).delete()
        ParkedEvent.objects.filter(source=source).delete()
    assert after[outbox] == 2 and 90 <= after[age] < 150 and after[parked] == 3, after
