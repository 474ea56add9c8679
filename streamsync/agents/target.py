"""The target agent: Nautobot's change events from Kafka into one remote system.

    take_ready(n, cap=t)  (natural batching, streamsync/agents/batching.py)
      → on the target's own thread, one transaction for its positions (streamsync/sync/settle.py):
          admit (positions)  → read each record  → skip echoes and other targets' re-driven letters
          → TargetEngine.apply (CRUD, commit())  → record the latest applied event per key
          → publish dead letters  → advance positions  → commit
      → count and log  → faust acks

The target's writes are its own, outside PostgreSQL: a crash after its `commit()` and before the
positions' commit delivers the batch again, which the diff-based apply absorbs (at least once).
A target that is unavailable (TargetUnavailable) is retried with back-off, nothing dead-lettered.
"""

from __future__ import annotations

import functools
import time

import structlog

from streamsync.agents.dbthread import DatabaseThread
from streamsync.agents.runtime import Runtime, events_channel, run_agent
from streamsync.agents.settler import Settler
from streamsync.agents.sync import observe_letters
from streamsync.contract.deadletter import APPLY_FAILED, HEADER_REDRIVE_FOR, DeadLetter
from streamsync.contract.records import read_event
from streamsync.contract.topics import dlq_topic
from streamsync.monitor import prometheus
from streamsync.outbox.broker import SOURCE as NAUTOBOT
from streamsync.outbox.broker import origin
from streamsync.sync import lastapplied
from streamsync.sync.positions import target_agent
from streamsync.sync.registry import ModelRegistry
from streamsync.sync.settle import Applied, Incoming, Settled, Settling
from streamsync.targets.apply import TargetEngine

log = structlog.get_logger(__name__)


class TargetSync:
    """Writes one target's share of Nautobot's change events and dead-letters what it refuses."""

    def __init__(self, runtime: Runtime, target: str) -> None:
        settings = runtime.settings
        config = settings.target(target)
        self.target = target
        self.name = target_agent(target)
        self.registry: ModelRegistry = config.registry()
        self.engine = TargetEngine(self.registry, functools.partial(config.adapter_class(), **config.options))
        self.how = Settling(
            group=settings.group_id,
            agent=self.name,
            system=NAUTOBOT,
            read=functools.partial(read_event, max_bytes=runtime.max_bytes),
            apply=self.apply,
            dlq_topic=dlq_topic(target, settings.topic_prefix),
            max_bytes=runtime.max_bytes,
        )
        # Its own thread (and database connection): a slow remote system must not hold up the writes to Nautobot.
        thread = DatabaseThread(f"streamsync-{target}")
        self.settler = Settler(runtime.app, self.how, thread, runtime.wire, runtime.positions, runtime.stalls)

    def apply(self, incoming: list[Incoming]) -> Applied:
        """Write the events this target receives; skip its own changes coming back and other targets' re-drives.

        Where each key's latest applied event is goes to `LastApplied`, echoes included (the target
        has that change already): a dead letter older than it is superseded.
        """
        mine: list[Incoming] = []
        echoes: list[Incoming] = []
        redrives = 0
        for i in incoming:
            wanted_by = i.origin.header(HEADER_REDRIVE_FOR)
            if wanted_by is not None and wanted_by.decode(errors="replace") != self.target:
                redrives += 1  # another target's dead letter: this target has the change already
            elif origin(i.origin.headers) == self.target:
                echoes.append(i)  # an echo: the target has this change already
            elif i.event.model in self.registry:  # else a model this target does not receive
                mine.append(i)
        result = self.engine.apply([i.event for i in mine])
        origins = {id(i.event): i.origin for i in mine}
        letters = [
            (origins[id(r.event)], DeadLetter.of(origins[id(r.event)], r.code, r.reason, source=NAUTOBOT))
            for r in result.rejected
        ]
        for failure in result.failed:
            letters += [
                (origins[id(e)], DeadLetter.of(origins[id(e)], APPLY_FAILED, failure.reason, source=NAUTOBOT))
                for e in failure.events
            ]
        started = time.perf_counter()
        applied = {id(e) for e in lastapplied.applied_events(result)} | {id(i.event) for i in echoes}
        lastapplied.remember(self.name, ((i.origin, i.event.canonical_key) for i in incoming if id(i.event) in applied))
        result.add_time("last_applied", time.perf_counter() - started)
        return Applied(result, letters, skipped=len(incoming) - len(mine), echoes=len(echoes), redrives=redrives)

    def settled(self, settled: Settled) -> None:
        """Log and count a settled batch."""
        result, echoes = settled.applied.result, settled.applied.echoes
        log.info(
            "target batch committed",
            target=self.target,
            echoes_skipped=echoes,
            redrives_skipped=settled.applied.redrives,
            skipped=len(settled.admission.skipped),
            refused=sorted(settled.admission.refused),
            dead_lettered=len(settled.letters),
            **{**result.as_log(), "received": settled.received},
        )
        prometheus.observe_target_batch(self.target, result, echoes)
        prometheus.observe_skipped(self.name, "already_applied", len(settled.admission.skipped))
        prometheus.observe_skipped(self.name, "redrive_for_another_target", settled.applied.redrives)
        observe_letters(self.target, settled.letters)


def register_target_agent(runtime: Runtime, target: str) -> TargetSync:
    """Add the agent that writes Nautobot's change events to `target`."""
    sync = TargetSync(runtime, target)
    run_agent(runtime, sync.name, events_channel(runtime, NAUTOBOT), sync.settler, sync.settled)
    return sync
