"""The target agent: Nautobot's change events from Kafka into one remote system.

    take_events(n, within=t) → skip echoes → decode → TargetEngine.apply (its own thread) → dead letters → ack

Like the sync agent, the loop body returns only once every event of the batch is written to the
target (its `commit()` returned), skipped, or on the target's dead-letter topic; a target that is
unavailable (TargetUnavailable, or any error outside one object's CRUD) is retried with back-off.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import faust
import structlog
from faust.types import EventT

from streamsync import metrics
from streamsync.agents.sync import DatabaseThread, _origin, dead_letter, events_channel, until_done
from streamsync.deadletter import APPLY_FAILED, DeadLetter
from streamsync.engine import BatchResult
from streamsync.envelope import EnvelopeError, Event, decode
from streamsync.events import SOURCE as NAUTOBOT
from streamsync.events import origin
from streamsync.retry import Origin
from streamsync.settings import StreamsyncSettings
from streamsync.targets.apply import TargetEngine
from streamsync.topics import dlq_topic

log = structlog.get_logger(__name__)


class TargetSync:
    """Writes one target's share of Nautobot's change events and dead-letters what it refuses."""

    def __init__(self, app: faust.App, settings: StreamsyncSettings, target: str) -> None:
        config = settings.target(target)
        self.app = app
        self.target = target
        self.registry = config.registry()
        adapter = config.adapter_class()
        self.engine = TargetEngine(self.registry, functools.partial(adapter, **config.options))
        self.dlq = dlq_topic(target, settings.topic_prefix)
        # Its own thread: a slow remote system must not hold up the writes to Nautobot.
        self.thread = DatabaseThread()

    async def handle(self, batch: Sequence[EventT]) -> tuple[BatchResult, int]:
        """One batch, start to end; returns the engine's result and how many echoes were skipped."""
        events: list[Event] = []
        origins: dict[int, Origin] = {}
        dead: list[tuple[Origin, DeadLetter]] = []
        echoes = 0
        for record in batch:
            where = _origin(record.message)
            if origin(record.message.headers) == self.target:
                echoes += 1  # the target's own change, applied to Nautobot by streamsync: it has it already
                continue
            try:
                event = decode(record.value)
            except EnvelopeError as error:
                dead.append((where, self._letter(where, error.code, error.reason)))
                continue
            if event.model not in self.registry:
                continue  # a model this target does not receive
            events.append(event)
            origins[id(event)] = where

        result = await until_done(
            "target batch",
            lambda: self.thread.run(self.engine.apply, events),
            lambda: bool(self.app.should_stop),
            target=self.target,
        )
        dead += [(origins[id(r.event)], self._letter(origins[id(r.event)], r.code, r.reason)) for r in result.rejected]
        for failure in result.failed:
            dead += [
                (origins[id(e)], self._letter(origins[id(e)], APPLY_FAILED, failure.reason)) for e in failure.events
            ]
        if dead:
            await until_done(
                "dead-lettering",
                lambda: dead_letter(self.app, self.dlq, dead, target=self.target),
                lambda: bool(self.app.should_stop),
                target=self.target,
            )
        return result, echoes

    def _letter(self, where: Origin, code: str, reason: str) -> DeadLetter:
        return DeadLetter(
            code=code,
            reason=reason,
            source=NAUTOBOT,
            original_topic=where.topic,
            original_partition=where.partition,
            original_offset=where.offset,
        )


def register_target_agent(app: faust.App, settings: StreamsyncSettings, target: str) -> None:
    """Add the agent that writes Nautobot's change events to `target`."""
    target_sync = TargetSync(app, settings, target)
    topic = events_channel(app, settings, NAUTOBOT)

    async def deliver(stream: Any) -> None:  # faust.Stream; take_events is missing from StreamT
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_timeout):
            result, echoes = await target_sync.handle(batch)
            log.info("target batch committed", target=target, echoes_skipped=echoes, **result.as_log())
            metrics.observe_target_batch(target, result, echoes)

    # concurrency=1: with more, faust-streaming can commit past an event still in flight.
    app.agent(topic, name=f"streamsync.target.{target}", concurrency=1)(deliver)
