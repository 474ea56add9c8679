"""Nautobot's own /metrics, through the app `metrics` hook: the outbox and parked backlogs."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from tests.integration.conftest import Stream
from tests.integration.prometheus import parse, series, value

pytestmark = pytest.mark.integration


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
    outbox, age, parked = (
        f"nautobot_streamsync_{name}"
        for name in ("outbox_backlog_events", "outbox_oldest_age_seconds", "parked_events")
    )

    before = parse(_nautobot_metrics())
    assert value(before, outbox, topic=topic) == 0 and value(before, age, topic=topic) == 0
    assert not series(before, parked, source=source)
    assert value(before, parked, source="ipam") >= 0  # every configured source has its series

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
        after = parse(_nautobot_metrics())
    finally:  # the run's database is shared by its tests: leave no backlog behind
        OutboxEvent.objects.filter(topic=topic).delete()
        ParkedEvent.objects.filter(source=source).delete()
    assert value(after, outbox, topic=topic) == 2 and value(after, parked, source=source) == 3
    assert 90 <= value(after, age, topic=topic) < 150
