"""One `streamsync worker` process: its topics checked, its agents on one Faust app, what they share built once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from streamsync.agents.app import StreamsyncApp, create_app
from streamsync.agents.dbthread import DatabaseThread
from streamsync.agents.positioning import Positions
from streamsync.agents.relay import register_relay
from streamsync.agents.runtime import Runtime
from streamsync.agents.stalls import Stalls
from streamsync.agents.sync import register_sync_agent
from streamsync.agents.target import register_target_agent
from streamsync.agents.wire import KafkaWire
from streamsync.contract.topics import dlq_topic, events_topic, nautobot_events_topic, state_topic
from streamsync.kafka.admin import TopicSpec, ensure_topics, topic_configs
from streamsync.monitor import prometheus
from streamsync.settings import StreamsyncSettings

log = structlog.get_logger(__name__)

# Room left in a record the worker writes again for what it adds: dead-letter headers, envelope fields.
RECORD_HEADROOM = 16 * 1024
# Kafka's default `max.message.bytes` for a topic that does not say otherwise.
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588


def topic_specs(settings: StreamsyncSettings, sources: Sequence[str], targets: Sequence[str]) -> list[TopicSpec]:
    """Every topic the worker reads or writes for these sources and targets."""
    prefix, partitions, replication = settings.topic_prefix, settings.topic_partitions, settings.topic_replication
    specs = [TopicSpec(name(s, prefix), partitions, replication) for s in sources for name in (events_topic, dlq_topic)]
    # The replay topic: the latest full state per object, so compacted (docs/resync.md).
    specs += [TopicSpec(state_topic(s, prefix), partitions, replication, True) for s in sources]
    specs += [TopicSpec(dlq_topic(t, prefix), partitions, replication) for t in targets]
    if targets:
        specs.append(TopicSpec(nautobot_events_topic(prefix), partitions, replication))
    return specs


async def writable_bytes(settings: StreamsyncSettings, topics: Sequence[str], producer_limit: int) -> int:
    """The largest record the worker can write to every one of `topics` (its state and dead-letter topics)."""
    configs = await topic_configs(settings.kafka(), topics)
    limits = [int(configs.get(t, {}).get("max.message.bytes") or KAFKA_DEFAULT_MAX_MESSAGE_BYTES) for t in topics]
    return min([producer_limit, *limits]) - RECORD_HEADROOM


def limit_sessions(settings: StreamsyncSettings) -> None:
    """Limits on every database session of this process (0: none), set when it connects.

    `transaction_idle_timeout`: a worker paused inside a batch (SIGSTOP, a frozen VM) holds its
    partitions' position rows; once its group has moved the partitions on, PostgreSQL ending its
    transaction frees them for the new owner, and the paused worker finds the positions moved past
    its batch when it wakes. `lock_timeout`: a batch waiting on a row someone else holds fails with
    a transient fault after this long and is retried with back-off, visibly (a stalled agent),
    instead of waiting silently without end.
    """
    from django.db.backends.signals import connection_created

    limits = {
        "idle_in_transaction_session_timeout": settings.transaction_idle_timeout,
        "lock_timeout": settings.lock_timeout,
    }

    def on_connect(sender: object, connection: object, **kwargs: object) -> None:
        if getattr(connection, "vendor", "") == "postgresql":
            with connection.cursor() as cursor:  # type: ignore[attr-defined]
                for name, seconds in limits.items():
                    cursor.execute(f"SET {name} = %s", [int(seconds * 1000)])

    connection_created.connect(on_connect, weak=False, dispatch_uid="streamsync.session_limits")


def build(
    settings: StreamsyncSettings, sources: Sequence[str], targets: Sequence[str], loop: asyncio.AbstractEventLoop
) -> StreamsyncApp:
    """The worker's Faust app with an agent per source and target, the outbox relay and the metrics.

    Raises BrokerUnavailable when Kafka cannot be reached, MetricsError when /metrics cannot be served.
    """
    limit_sessions(settings)
    specs = topic_specs(settings, sources, targets)
    loop.run_until_complete(ensure_topics(settings.kafka(), specs))
    db = DatabaseThread()
    positions = Positions(settings.group_id, db)
    app = create_app(settings, positions)
    written = [spec.name for spec in specs if spec.compacted or spec.name.endswith(".dlq")]
    max_bytes = loop.run_until_complete(writable_bytes(settings, written, app.conf.producer_max_request_size))
    runtime = Runtime(app, settings, db, KafkaWire(app, settings.kafka()), positions, max_bytes, Stalls())
    for source in sources:
        register_sync_agent(runtime, source)
    for target in targets:
        register_target_agent(runtime, target)  # <prefix>.nautobot.events -> the target's models
    register_relay(app, settings)  # Nautobot's own changes: outbox -> <prefix>.nautobot.events
    # /metrics, batch summaries and the worker's state for the health page, lag refresh
    prometheus.start(app, settings, list(sources), runtime.stalls.current)
    log.info("records larger than this are dead-lettered as too_large", max_record_bytes=max_bytes)
    return app
