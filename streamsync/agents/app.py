"""The Faust application a `streamsync worker` runs."""

from __future__ import annotations

import os
from typing import Any

import faust

from streamsync.agents.positioning import PositionedTransport, Positions
from streamsync.contract.partitioning import murmur2_partitioner
from streamsync.settings import StreamsyncSettings


class StreamsyncApp(faust.App):
    """A faust.App without fixups, reading and committing where the database's positions say.

    Nautobot is set up before the app exists; faust's Django fixup would run `django.setup()`
    and every system check a second time, and duplicate Nautobot's log handlers.
    """

    positions: Positions

    def _init_fixups(self) -> Any:
        return []

    def _new_transport(self) -> Any:
        return PositionedTransport(self.conf.broker_consumer, self)


def default_data_dir() -> str:
    """Where faust keeps its small local state (it would otherwise write into the working directory)."""
    base = os.getenv("STREAMSYNC_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "streamsync")
    return os.path.join(base, "faust")


def data_dir(settings: StreamsyncSettings) -> str:
    """The faust data directory a worker with these settings uses: `data_dir`, else `default_data_dir()`."""
    return settings.data_dir or default_data_dir()


def create_app(settings: StreamsyncSettings, positions: Positions | None = None) -> StreamsyncApp:
    """A Faust app whose id is the consumer group: every worker with the same settings shares the work.

    `positions` are the worker's agents' (none: a bare app, e.g. for producing only).
    """
    kafka = settings.kafka()
    app = StreamsyncApp(
        settings.group_id,
        broker=[f"kafka://{server}" for server in kafka.servers],
        # TLS and SASL for every client faust opens (consumer, producer, topic creation).
        broker_credentials=kafka.faust_credentials(),
        autodiscover=False,
        web_enabled=False,
        datadir=data_dir(settings),
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # The state topic and dead letters keep their keys' partitions as every other producer does.
        producer_partitioner=murmur2_partitioner,
        broker_commit_every=settings.batch_size,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
    )
    app.positions = positions or Positions(settings.group_id, None)
    return app
