"""What the health page shows, gathered in one call: lag, recent batches, dead letters, the writer's standing.

Lag is per source and partition; the writer's standing says whether the Nautobot user streamsync
writes as may write each source's models. Each part comes from where it lives (Kafka, Redis, the
database) and fails on its own: an unreachable Kafka leaves the batches and the outbox figures on
the page, with the reason.

The writer's standing is not a report from the workers: the page asks the database the question
every worker asks at the start of each batch (streamsync.sync.permissions.standing, two queries), so
it is right with no worker running, with Redis down, and after a worker died while blocked.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from streamsync.contract.deadletter import DeadLetter
from streamsync.contract.topics import dlq_topic, events_topic, nautobot_events_topic
from streamsync.kafka.admin import partitions
from streamsync.kafka.clients import admin_client, consumer
from streamsync.kafka.reading import read_window
from streamsync.monitor.batchlog import BatchSummary, WorkerStatus, recent, workers
from streamsync.ops.deadletters import StoredLetter, replay_group
from streamsync.ops.lag import PartitionLag, consumer_lag

if TYPE_CHECKING:
    from streamsync.kafka.connection import KafkaConnection
    from streamsync.outbox.backlog import Backlog
    from streamsync.settings import StreamsyncSettings

# The page answers within this even when Kafka does not.
KAFKA_TIMEOUT = 8.0


@dataclass
class Health:
    """Everything the page shows; an `*_error` says why a part is missing."""

    group: str
    prefix: str
    kafka: str
    sources: list[str]
    lag: list[PartitionLag] = field(default_factory=list)
    letters: dict[str, list[StoredLetter]] = field(default_factory=dict)
    kafka_error: str = ""
    batches: list[BatchSummary] = field(default_factory=list)
    batches_error: str = ""
    workers: list[WorkerStatus] = field(default_factory=list)
    backlog: Backlog | None = None
    parked: dict[str, int] = field(default_factory=dict)
    database_error: str = ""
    user: str = ""
    writers: list[SourceWriter] = field(default_factory=list)
    writers_error: str = ""

    @property
    def blocked(self) -> list[SourceWriter]:
        """The sources whose batches wait for their user to be put right."""
        return [w for w in self.writers if w.blocked]


@dataclass(frozen=True)
class SourceWriter:
    """Whether the Nautobot user may write one source's models, and if not, why."""

    source: str
    blocked: str  # a streamsync.sync.permissions.Blocked value; "" when it may write
    missing: list[str]
    reason: str  # one line for a person; "" when it may write


def gather(settings: StreamsyncSettings, *, batches: int = 25, letters: int = 10) -> Health:
    """Read the page's figures (synchronous: for a Django view, never for the event loop)."""
    kafka = settings.kafka()
    where = f"{kafka.bootstrap} ({kafka.security_protocol})"
    health = Health(settings.group_id, settings.topic_prefix, where, sorted(settings.sources))
    try:
        health.lag, health.letters = asyncio.run(asyncio.wait_for(_from_kafka(kafka, settings, letters), KAFKA_TIMEOUT))
    except TimeoutError:
        health.kafka_error = f"Kafka at {kafka} did not answer within {KAFKA_TIMEOUT:g} s"
    except Exception as error:  # BrokerUnavailable carries the address and the reason
        health.kafka_error = str(error) or repr(error)
    try:
        health.batches = recent(settings.group_id, batches)
        health.workers = workers(settings.group_id)
    except Exception as error:
        health.batches_error = f"cannot read recent batches and workers from Redis: {error!r}"
    try:
        health.backlog, health.parked = database_figures(nautobot_events_topic(settings.topic_prefix))
    except Exception as error:
        health.database_error = f"cannot read the outbox and parked events: {error!r}"
    health.user = settings.user
    try:
        health.writers = writers(settings)
    except Exception as error:
        health.writers_error = f"cannot check the Nautobot user {settings.user!r}: {error!r}"
    return health


def writers(settings: StreamsyncSettings) -> list[SourceWriter]:
    """Per source, whether `settings.user` may write its models: the workers' per-batch rule, in two queries."""
    from streamsync.sync.permissions import Blocked, required, source_models, standing

    needs = {source: required(source_models(settings, [source])) for source in sorted(settings.sources)}
    found = standing(settings.user, sorted({perm for perms in needs.values() for perm in perms}))
    shown = []
    for source, perms in needs.items():
        lacking = [perm for perm in perms if perm in found.missing]
        if found.blocked in (Blocked.USER_MISSING, Blocked.USER_INACTIVE):
            shown.append(SourceWriter(source, found.blocked.value, lacking, found.describe()))
        elif lacking:
            reason = f"Nautobot user {settings.user!r} lacks {', '.join(lacking)}"
            shown.append(SourceWriter(source, Blocked.PERMISSION_MISSING.value, lacking, reason))
        else:
            shown.append(SourceWriter(source, "", [], ""))
    return shown


async def _from_kafka(
    kafka: KafkaConnection, settings: StreamsyncSettings, limit: int
) -> tuple[list[PartitionLag], dict[str, list[StoredLetter]]]:
    topics = [events_topic(s, settings.topic_prefix) for s in settings.sources]
    lag = await consumer_lag(kafka, settings.topic_prefix, [settings.group_id], topics=topics)
    letters = {
        source: await recent_letters(kafka, dlq_topic(source, settings.topic_prefix), settings.group_id, limit)
        for source in sorted(settings.sources)
    }
    return lag, letters


async def recent_letters(kafka: KafkaConnection | str, topic: str, group: str, limit: int) -> list[StoredLetter]:
    """The newest `limit` dead letters of `topic` (by partition and offset, newest first), marked if replayed."""
    async with admin_client(kafka) as admin:
        tps = await partitions(admin, [topic])
        done = {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(replay_group(group))).items()}
    if not tps:
        return []
    async with consumer(kafka) as reader:
        ends = await reader.end_offsets(tps)
        starts = await reader.beginning_offsets(tps)
        # The last `limit` of each partition hold the newest `limit` overall.
        window = {tp: (max(starts[tp], ends[tp] - limit), ends[tp]) for tp in tps if ends[tp] > starts[tp]}
        records = [(tp, record) async for tp, record in read_window(reader, window)]
    stored = [
        StoredLetter(tp.partition, r.offset, r.key, r.value, _letter(r.headers), r.offset < done.get(tp, 0))
        for tp, r in records
    ]
    stored.sort(key=lambda s: (s.letter.failed_at.timestamp() if s.letter else 0.0, s.offset), reverse=True)
    return stored[:limit]


def _letter(headers: Any) -> DeadLetter | None:
    try:
        return DeadLetter.from_headers(list(headers or []))
    except ValidationError:
        return None


def database_figures(outbox_topic: str) -> tuple[Backlog, dict[str, int]]:
    """The outbox backlog of `outbox_topic` and the parked events per source: two cheap queries (synchronous)."""
    from django.db.models import Count

    from streamsync.models.bookkeeping import ParkedEvent
    from streamsync.outbox.backlog import backlog

    counts = ParkedEvent.objects.values("source").annotate(n=Count("id")).order_by()
    return backlog(outbox_topic), {row["source"]: row["n"] for row in counts}
