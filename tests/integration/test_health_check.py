"""Nautobot's /health/ with streamsync's outbox check: passing, and failing once the outbox's oldest event is old."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.integration.conftest import Stream

pytestmark = pytest.mark.integration

CHECK = "streamsync outbox"


def _health() -> tuple[int, dict[str, str]]:
    from django.test import Client

    response = Client().get("/health/", HTTP_ACCEPT="application/json")
    return response.status_code, response.json()


def _gauge() -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("health_check_streamsync_outbox_info")


def test_health_fails_while_the_outbox_holds_an_old_event(page_settings: Stream) -> None:
    from django.conf import settings
    from django.test import override_settings
    from django.utils import timezone

    from streamsync.models.bookkeeping import OutboxEvent

    topic = f"{page_settings.prefix}.nautobot.events"
    assert _health() == (200, {**_health()[1], CHECK: "working"})
    assert all(status == "working" for status in _health()[1].values())  # Nautobot's own checks pass too

    # An event waiting a minute is normal traffic under the default limit (300 s)...
    event = OutboxEvent.objects.create(
        topic=topic,
        key="k",
        value="{}",
        created=timezone.now() - timedelta(seconds=60),
        attempts=4,
        last_error="KafkaConnectionError: Unable to bootstrap from [('127.0.0.1', 1)]",
    )
    assert _health()[0] == 200 and _gauge() == 1.0
    # ...and too old where the limit is lower.
    lower: dict[str, Any] = {
        **settings.PLUGINS_CONFIG,
        "streamsync": {**settings.PLUGINS_CONFIG["streamsync"], "outbox_max_age": 30},
    }
    with override_settings(PLUGINS_CONFIG=lower):
        status, checks = _health()
    assert status == 500 and checks[CHECK].startswith(
        "unavailable: the oldest of 1 change event(s) in streamsync's outbox has waited 1m0"
    ), checks

    # An hour old: failing under the default limit, saying why, and the gauge says down.
    OutboxEvent.objects.filter(pk=event.pk).update(created=timezone.now() - timedelta(hours=1))
    status, checks = _health()
    assert status == 500 and _gauge() == 0.0
    assert checks[CHECK] == (
        "unavailable: the oldest of 1 change event(s) in streamsync's outbox has waited 1h00m (limit 5m00s): "
        "no `streamsync worker` relays them to Kafka, or Kafka refuses them "
        "(KafkaConnectionError: Unable to bootstrap from [('127.0.0.1', 1)])"
    ), checks
    assert {name: s for name, s in checks.items() if name != CHECK} == {
        name: "working" for name in checks if name != CHECK
    }

    # The relay delivered it: passing again.
    OutboxEvent.objects.filter(pk=event.pk).delete()
    assert _health() == (200, {**checks, CHECK: "working"}) and _gauge() == 1.0
