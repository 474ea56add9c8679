"""Where a worker reads from and how far it lets Kafka commit: the positions the database vouches for.

faust reads an assigned partition from the group's committed offset and commits what its streams
acknowledged. Here both answer to the positions table (streamsync/sync/positions.py):

- on assignment, each partition is read from its stored position, not from Kafka's committed
  offset: a committed offset ahead of it (acknowledged, never applied) is read again, and said
  so in the log and in `streamsync_position_rewinds_total`; one behind it (the previous owner's
  batches reached the database, its last commit did not) is moved up to it;
- a commit never goes past what this worker has seen the database vouch for, whatever faust
  acknowledged (an exception that escaped a loop body acknowledges a whole buffer).

Kafka's committed offsets stay meaningful for `streamsync lag` and standard tooling, and never run
ahead of the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog
from faust.transport.drivers import aiokafka as driver

from streamsync.monitor import prometheus

if TYPE_CHECKING:
    from streamsync.agents.dbthread import DatabaseThread
    from streamsync.sync.positions import Admission

log = structlog.get_logger(__name__)

Partition = tuple[str, int]


class Positions:
    """What a worker knows of its agents' stored positions, shared by the consumer and the agents."""

    def __init__(self, group: str, db: DatabaseThread | None) -> None:
        self.group = group
        self.db = db
        self._agents: dict[str, set[str]] = {}  # topic -> agents reading it
        self._vouched: dict[tuple[str, Partition], int] = {}

    def register(self, agent: str, topic: str) -> None:
        """`agent` reads `topic`: its positions count for where the topic is read and committed."""
        self._agents.setdefault(topic, set()).add(agent)

    def vouch(self, agent: str, admission: Admission) -> None:
        """A batch of `agent` committed: the database now vouches for its partitions' new positions."""
        for partition, end in admission.ends.items():
            self._vouched[(agent, partition)] = end

    def clamp(self, offsets: Mapping[Any, int]) -> dict[Any, int]:
        """`offsets` to commit, none past a position the database vouches for (for every agent of its topic)."""
        allowed: dict[Any, int] = {}
        for tp, offset in offsets.items():
            agents = self._agents.get(tp.topic)
            if not agents:
                allowed[tp] = offset
                continue
            vouched = [self._vouched.get((agent, (tp.topic, tp.partition))) for agent in agents]
            if None in vouched:
                continue  # an agent has settled nothing here yet: nothing it read is vouched for
            allowed[tp] = min(offset, *(v for v in vouched if v is not None))
        return allowed

    async def on_assigned(self, committed: Mapping[Any, int | None]) -> dict[Any, int]:
        """Where to read the newly assigned partitions from: the lowest stored position of their agents.

        `committed` holds Kafka's committed offsets (None where the group committed nothing).
        Partitions no agent has settled yet keep Kafka's offset.
        """
        from streamsync.sync import positions

        ours = {tp: committed[tp] for tp in committed if tp.topic in self._agents}
        if not ours:
            return {}
        assert self.db is not None, "agents are registered, so is the database thread they settle on"
        agents = set().union(*(self._agents[tp.topic] for tp in ours))
        partitions = [(tp.topic, tp.partition) for tp in ours]
        for key in [key for key in self._vouched if key[1] in partitions]:
            del self._vouched[key]  # what was vouched before this assignment may have moved on since
        try:
            stored = await self.db.run(positions.stored, self.group, agents, partitions)
        except Exception as error:
            # Kafka's committed offsets are never ahead of the positions (bar a hand-made commit,
            # which each batch's admission still catches): reading from them loses nothing.
            log.warning("cannot read the stored positions: reading from Kafka's committed offsets", error=repr(error))
            return {}
        self._vouched.update(stored)
        seeks: dict[Any, int] = {}
        for tp, kafka_offset in ours.items():
            found = [offset for (agent, p), offset in stored.items() if p == (tp.topic, tp.partition)]
            if not found:
                continue
            offset = min(found)
            seeks[tp] = offset
            where = {"topic": tp.topic, "partition": tp.partition, "position": offset, "committed": kafka_offset}
            if kafka_offset is not None and kafka_offset > offset:
                log.error("committed offset is ahead of the database's position: reading again from it", **where)
                prometheus.observe_rewind(tp.topic, tp.partition)
            elif kafka_offset is None or kafka_offset < offset:
                log.info("reading from the database's position, past records already applied", **where)
        return seeks

    async def read_again(self, consumer: Any, agent: str, refused: Mapping[Partition, int]) -> None:
        """A batch found a gap: read those partitions again from their stored positions."""
        for (topic, partition), offset in refused.items():
            log.error(
                "gap: the batch begins past the database's position with records in between; reading again",
                agent=agent,
                topic=topic,
                partition=partition,
                position=offset,
            )
            prometheus.observe_rewind(topic, partition)
            tp = next((tp for tp in consumer.assignment() if (tp.topic, tp.partition) == (topic, partition)), None)
            if tp is not None:
                await consumer.seek(tp, offset)


class PositionedConsumer(driver.Consumer):
    """faust's aiokafka consumer, reading from the stored positions and committing no further than them."""

    async def seek_to_committed(self) -> Mapping[Any, int]:
        """Seek to Kafka's committed offsets, then to the stored positions where there are any.

        A stored position ahead of Kafka's committed offset is committed to Kafka as well: faust
        commits only what its streams acknowledge, and records below the position are never read
        again, so with nothing new on the partition Kafka's offset would stay behind for good and
        `streamsync lag` would count records long applied.
        """
        committed = dict(await super().seek_to_committed())
        seeks = await self.app.positions.on_assigned(committed)  # type: ignore[attr-defined]
        if seeks:
            await self.seek_wait(seeks)
            behind = {tp: offset for tp, offset in seeks.items() if committed.get(tp) is None or committed[tp] < offset}
            if behind:
                await self._commit_offsets(behind)
        return {**committed, **seeks}

    async def _commit_offsets(self, offsets: Mapping[Any, int], start_new_transaction: bool = True) -> bool:
        allowed = self.app.positions.clamp(offsets)  # type: ignore[attr-defined]
        return await super()._commit_offsets(allowed, start_new_transaction)


class PositionedTransport(driver.Transport):
    """The aiokafka transport with the positioned consumer."""

    Consumer = PositionedConsumer
