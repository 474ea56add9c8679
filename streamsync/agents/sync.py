"""The sync agent: the hot path from one source's events topic to a Nautobot commit.

    take_ready(n, cap=t)  (natural batching: what has arrived, up to n; streamsync/agents/batching.py)
      → on the database thread, one transaction (streamsync/sync/settle.py):
          admit (positions)  → read each record  → engine.apply + park + ownership + state merge
          → publish state records and dead letters  → advance positions  → commit
      → count and log  → faust acks (Kafka commits, never past the database's positions)

A timer re-applies parked events whose retry is due (streamsync/sync/retry.py). Every batch, and every
retry, checks first that the Nautobot user may write the source's models (streamsync.sync.permissions.
Writer); while it may not, both wait and retry, and the WriterWatch says why (log, gauge).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

import structlog

from streamsync.agents.runtime import Runtime, events_channel, run_agent
from streamsync.agents.settler import Settler, retry_delay
from streamsync.agents.watch import WriterWatch
from streamsync.contract.deadletter import DeadLetter
from streamsync.contract.records import Origin, read_event
from streamsync.contract.topics import dlq_topic, state_topic
from streamsync.monitor import prometheus
from streamsync.sync.engine import SyncEngine
from streamsync.sync.faults import is_transient
from streamsync.sync.permissions import Writer
from streamsync.sync.positions import sync_agent
from streamsync.sync.retry import Retrying, apply_source, retry_due
from streamsync.sync.settle import Settled, Settling

log = structlog.get_logger(__name__)


class SourceSync:
    """Applies one source's batches and retries its parked events."""

    def __init__(self, runtime: Runtime, source: str) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.source = source
        self.name = sync_agent(source)
        registry = settings.source(source).registry()
        # Checked in every batch's transaction: the user may be deactivated or lose a permission while we run.
        self.engine = SyncEngine(registry, Writer.of(settings.user, registry))
        self.watch = WriterWatch(source)
        self.how = Settling(
            group=settings.group_id,
            agent=self.name,
            system=source,
            read=functools.partial(read_event, max_bytes=runtime.max_bytes),
            apply=functools.partial(
                apply_source,
                self.engine,
                source,
                policy=settings.retry,
                state_topic=state_topic(source, settings.topic_prefix),
            ),
            dlq_topic=dlq_topic(source, settings.topic_prefix),
            max_bytes=runtime.max_bytes,
        )
        self.settler = Settler(
            runtime.app, self.how, runtime.db, runtime.wire, runtime.positions, runtime.stalls, self.watch
        )
        self.retrying = Retrying(source, settings.retry, self.how.dlq_topic, runtime.max_bytes)
        self._retrying = asyncio.Lock()

    def settled(self, settled: Settled) -> None:
        """Log and count a settled batch."""
        result = settled.applied.result
        log.info(
            "batch committed",
            source=self.source,
            skipped=len(settled.admission.skipped),
            refused=sorted(settled.admission.refused),
            parked=settled.applied.parked,
            parked_settled=settled.applied.retried,
            dead_lettered=len(settled.letters),
            **{**result.as_log(), "received": settled.received},
        )
        prometheus.observe_batch(self.source, settled.received, result)
        prometheus.observe_skipped(self.name, "already_applied", len(settled.admission.skipped))
        observe_letters(self.source, settled.letters)

    async def retry(self) -> None:
        """Re-apply keys whose retry is due; dead-letter those out of attempts (streamsync/sync/retry.py).

        An infrastructure fault is retried with back-off; anything else ends this look (the engine's
        own errors are a key's failed attempt in `retry_due`, so this is a defect): the next look tries again.
        """
        if self._retrying.locked():
            return
        async with self._retrying:
            failures, timer = 0, f"streamsync.sync.retry.{self.source}"
            while True:
                try:
                    retried = await self.runtime.db.run(retry_due, self.engine, self.retrying, self.runtime.wire)
                    break
                except Exception as error:
                    if not is_transient(error):
                        log.error("retry failed: trying again at the next look", source=self.source, exc_info=error)
                        return
                    failures += 1
                    self.runtime.stalls.failed(timer, error)
                    delay = retry_delay(error, failures)
                    await self.settler.wait(delay, "retry failed, retrying", error, source=self.source)
            self.runtime.stalls.recovered(timer)
            if retried.results:  # the engine ran: its writer was checked
                self.watch.succeeded()
            observe_letters(self.source, retried.letters)
            for result in retried.results:
                log.info("retry batch", source=self.source, keys=retried.keys, **result.as_log())
                prometheus.observe_batch(self.source, result.received, result)  # outcomes of retried events count too


def observe_letters(system: str, letters: Sequence[tuple[Origin, DeadLetter]]) -> None:
    """Log and count dead letters Kafka acknowledged; `system` is whose letters they are."""
    if not letters:
        return
    prometheus.observe_dead_letters(system, (letter.code for _, letter in letters))
    for origin, letter in letters:
        log.error(
            "event dead-lettered",
            system=system,
            code=letter.code,
            reason=letter.reason,
            attempts=letter.attempts,
            topic=origin.topic,
            partition=origin.partition,
            offset=origin.offset,
        )


def register_sync_agent(runtime: Runtime, source: str) -> SourceSync:
    """Add the agent that applies `source`'s events to Nautobot, and the timer that retries its parked ones."""
    sync = SourceSync(runtime, source)
    run_agent(runtime, sync.name, events_channel(runtime, source), sync.settler, sync.settled)
    runtime.app.timer(runtime.settings.retry_interval, name=f"streamsync.sync.retry.{source}")(sync.retry)
    return sync
