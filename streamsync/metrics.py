"""Nautobot's app `metrics` hook: the outbox and parked backlogs on Nautobot's own /metrics.

Nautobot's app loader imports this module (by its name) into every web and Celery process and
calls each function in `metrics` at every scrape: so it holds only this, two cheap queries, and
never the worker's Prometheus module (streamsync.monitor.prometheus). The names differ from the
worker's (`nautobot_streamsync_*`, not `streamsync_*`) so that both exporters can share a process
registry and an alert can tell who measured.
"""

from __future__ import annotations

from collections.abc import Iterator

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from streamsync.contract.topics import nautobot_events_topic
from streamsync.monitor.health import database_figures
from streamsync.settings import StreamsyncSettings

log = structlog.get_logger(__name__)


def backlogs() -> Iterator[Metric]:
    """Outbox events waiting for the relay, the oldest's age, and events parked for a retry per source.

    The families are always there (empty when the database cannot be read), so alerts on absence work.
    """
    outbox = GaugeMetricFamily(
        "nautobot_streamsync_outbox_backlog_events",
        "Nautobot's change events waiting in streamsync's outbox for the relay",
        labels=["topic"],
    )
    oldest = GaugeMetricFamily(
        "nautobot_streamsync_outbox_oldest_age_seconds",
        "Age of the oldest event waiting in streamsync's outbox (0 when none waits)",
        labels=["topic"],
    )
    parked = GaugeMetricFamily(
        "nautobot_streamsync_parked_events",
        "Events parked for a retry, per source",
        labels=["source"],
    )
    try:
        settings = StreamsyncSettings.load()
        topic = nautobot_events_topic(settings.topic_prefix)
        waiting, parked_by_source = database_figures(topic)
    except Exception as error:  # a scrape of Nautobot's other metrics must not fail with it
        log.warning("cannot read streamsync's backlogs for /metrics", error=repr(error))
    else:
        outbox.add_metric([topic], waiting.count)
        oldest.add_metric([topic], waiting.oldest_age_seconds)
        for source in sorted(set(settings.sources) | set(parked_by_source)):
            parked.add_metric([source], parked_by_source.get(source, 0))
    yield outbox
    yield oldest
    yield parked


metrics = [backlogs]
