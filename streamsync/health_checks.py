"""A django-health-check backend for Nautobot's /health/: fails while Nautobot's changes are stuck in the outbox.

Registered in the app's `ready()` as Nautobot registers its own (nautobot.extras.apps), and built
on Nautobot's base class so that it also sets a `health_check_streamsync_outbox_info` gauge.
A stuck outbox means Nautobot's own changes are not reaching Kafka, which a load balancer or an
orchestrator probing /health/ should hear about; the limit is `outbox_max_age` (seconds).
"""

from __future__ import annotations

from django.db import DatabaseError
from health_check.exceptions import ServiceUnavailable
from nautobot.extras.health_checks import NautobotHealthCheckBackend
from prometheus_client import Gauge

from streamsync.contract.topics import nautobot_events_topic
from streamsync.ops.lag import format_age
from streamsync.outbox.backlog import backlog
from streamsync.settings import ConfigError, StreamsyncSettings


class OutboxAgeBackend(NautobotHealthCheckBackend):
    """Down while the oldest event waiting in the outbox is older than `outbox_max_age`."""

    metric = Gauge(
        "health_check_streamsync_outbox_info",
        "State of streamsync's outbox backend",
        multiprocess_mode=NautobotHealthCheckBackend.MULTIPROCESS_MODE,
    )

    def identifier(self) -> str:
        """The name /health/ lists the check under."""
        return "streamsync outbox"

    def check_status(self) -> None:
        """One indexed query: how many events wait for the relay and how old the oldest is."""
        try:
            settings = StreamsyncSettings.load()
            waiting = backlog(nautobot_events_topic(settings.topic_prefix))
        except ConfigError as error:
            self.add_error(ServiceUnavailable(str(error)))
            return
        except DatabaseError as error:
            self.add_error(ServiceUnavailable("cannot read streamsync's outbox"), error)
            return
        if waiting.count and waiting.oldest_age_seconds > settings.outbox_max_age:
            self.add_error(
                ServiceUnavailable(
                    f"the oldest of {waiting.count} change event(s) in streamsync's outbox has waited "
                    f"{format_age(waiting.oldest_age_seconds)} (limit {format_age(settings.outbox_max_age)}): "
                    "no `streamsync worker` relays them to Kafka, or Kafka refuses them"
                    + (f" ({waiting.last_error[:300]})" if waiting.last_error else "")
                )
            )
