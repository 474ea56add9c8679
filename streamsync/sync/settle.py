"""Settle one batch of records: each is applied, parked or dead-lettered, and the positions move past it.

    admit      lock the batch's partitions' positions; skip what is below them, refuse a gap
    read       every record → an Event, or a rejection with a code (streamsync/contract/records.py)
    apply      a source: the engine, parked retries, ownership, the state merge (streamsync/sync/retry.py)
               a target: the target's CRUD and commit (streamsync/targets/apply.py)
    advance    the positions
    publish    the state records and dead letters, acknowledged by Kafka; then commit

One database transaction holds all of it, so whatever is raised on the way, nothing is settled and
the records are settled again later: the position never moves past a record that is not in the
database, parked, or on the dead-letter topic. Records are published inside the transaction and
acknowledged before it commits; a crash between the two publishes them again when the batch is
settled again, which is harmless (a state record is the object's whole state, a dead letter names
its original offset). Nothing here knows about the event loop: `Wire` is how it reaches Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from streamsync.contract.deadletter import UNEXPECTED_ERROR, DeadLetter
from streamsync.contract.envelope import EnvelopeError, Event
from streamsync.contract.records import Origin, OutRecord
from streamsync.sync import positions
from streamsync.sync.batch import BatchResult
from streamsync.sync.positions import Admission

# A record by where it is: (topic, partition, offset).
Where = tuple[str, int, int]


def where(origin: Origin) -> Where:
    """The place of a record in the log."""
    return origin.topic, origin.partition, origin.offset


class Wire(Protocol):
    """Kafka as settling needs it; each call returns once it is done (or raises)."""

    def publish(self, records: Sequence[OutRecord]) -> None:
        """Produce `records` and wait until Kafka has acknowledged every one."""

    def first_offset(self, topic: str, partition: int, offset: int) -> int:
        """The offset of the first record at or after `offset` in the partition's log."""


@dataclass(frozen=True)
class Incoming:
    """An event and the record it came in."""

    event: Event
    origin: Origin


@dataclass
class Applied:
    """What applying a batch's events did, and what must go to Kafka with it."""

    result: BatchResult
    letters: list[tuple[Origin, DeadLetter]] = field(default_factory=list)
    state: list[OutRecord] = field(default_factory=list)
    parked: int = 0
    retried: int = 0  # events parked by earlier batches that this one settled (applied, or dead-lettered)
    skipped: int = 0  # events this agent does not act on (a target's own echoes, models it does not receive)
    echoes: int = 0  # of which a target's own changes, coming back from Nautobot
    redrives: int = 0  # of which dead letters of another target, re-driven for that target alone


@dataclass
class Settled:
    """One settled batch: which records it took, what they did, and every dead letter written."""

    admission: Admission
    applied: Applied
    letters: list[tuple[Origin, DeadLetter]]
    seconds: float = 0.0

    @property
    def received(self) -> int:
        """Records settled by this batch (not those already applied before)."""
        return len(self.admission.fresh)


@dataclass(frozen=True)
class Settling:
    """How one agent settles: whose positions, how it reads and applies, where its dead letters go."""

    group: str
    agent: str
    system: str  # the source whose events these are, as dead letters name it
    read: Callable[[Origin], Event]
    apply: Callable[[list[Incoming]], Applied]
    dlq_topic: str
    max_bytes: int


def settle(
    how: Settling, records: Sequence[Origin], wire: Wire, poisoned: Mapping[Where, str] | None = None
) -> Settled:
    """Settle `records` (in the order they were consumed) in one transaction.

    `poisoned` names records found to fail every batch they are in, with the error: they are
    dead-lettered without being applied.
    """
    from django.db import transaction

    started = time.perf_counter()
    with transaction.atomic():
        admission = positions.admit(how.group, how.agent, records, wire.first_offset)
        incoming: list[Incoming] = []
        letters: list[tuple[Origin, DeadLetter]] = []
        for origin in admission.fresh:
            reason = (poisoned or {}).get(where(origin))
            if reason is not None:
                letters.append((origin, DeadLetter.of(origin, UNEXPECTED_ERROR, reason, source=how.system)))
                continue
            try:
                incoming.append(Incoming(how.read(origin), origin))
            except EnvelopeError as error:
                letters.append((origin, DeadLetter.of(origin, error.code, error.reason, source=how.system)))
        # Even with nothing to apply: a source's apply checks its writer, and a blocked writer settles nothing.
        applied = how.apply(incoming)
        letters += applied.letters
        positions.advance(admission)
        # Last before the commit, so that little can fail after Kafka has the records.
        dead = [letter.record(how.dlq_topic, origin, how.max_bytes) for origin, letter in letters]
        wire.publish([*applied.state, *dead])
    return Settled(admission, applied, letters, time.perf_counter() - started)
