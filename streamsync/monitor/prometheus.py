"""Prometheus metrics of a `streamsync worker`, served on http://<metrics_address>:<metrics_port>/metrics.

Two calls feed them from the sync agent (`observe_batch` after each committed batch,
`observe_dead_letters` once dead letters are acknowledged); a timer of the worker refreshes what
is measured rather than counted: the group's lag (streamsync.ops.lag, the names Kafka exporters use),
the outbox backlog and the parked retries. Every worker reports its whole group's lag, so
aggregate lag series with `max`, never `sum`, across workers. Metric names and labels are listed in
docs/monitoring.md.

The metrics live in a registry of their own (plus process and Python figures), so Nautobot's
django-prometheus metrics, also importable in a worker, do not leak into the worker's endpoint.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from streamsync import __version__
from streamsync.contract.topics import events_topic, nautobot_events_topic
from streamsync.monitor.batchlog import BatchSummary, Recorder, Stall, WorkerStatus
from streamsync.monitor.health import database_figures
from streamsync.ops.lag import PartitionLag, consumer_lag
from streamsync.sync.batch import BatchResult, Outcome
from streamsync.sync.permissions import Blocked

if TYPE_CHECKING:
    import faust

    from streamsync.outbox.backlog import Backlog
    from streamsync.settings import StreamsyncSettings

log = structlog.get_logger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# Label value for what an event does not tell: bytes that are no envelope, a model the source may not write.
UNKNOWN = "unknown"
REJECTED = "rejected"

EVENTS = Counter(
    "streamsync_events",
    "Events consumed, by what became of them: created, updated, deleted, unchanged (applied), "
    "failed (parked for a retry or dead-lettered), rejected (dead-lettered: not a valid event for the source)",
    ["source", "model", "op", "outcome"],
    registry=REGISTRY,
)


def _per_source(name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
    return Histogram(name, documentation, ["source"], buckets=buckets, registry=REGISTRY)


BATCH_SIZE = _per_source(
    "streamsync_batch_size_events", "Events per batch", (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
)
APPLY_SECONDS = _per_source(
    "streamsync_apply_duration_seconds",
    "Time to apply one batch to Nautobot: load, diff, save and change log, in one transaction",
    (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
END_TO_END_SECONDS = _per_source(
    "streamsync_end_to_end_latency_seconds",
    "From an applied event's envelope ts (the change at its source) to its batch's database commit",
    (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
)
DEAD_LETTERS = Counter(
    "streamsync_dead_letters",
    "Events written to the source's dead-letter topic, by reject or failure code",
    ["source", "code"],
    registry=REGISTRY,
)
LAST_BATCH = Gauge(
    "streamsync_last_batch_timestamp_seconds",
    "Unix time of the source's last committed batch in this worker",
    ["source"],
    registry=REGISTRY,
)
LAG_REFRESH_FAILURES = Counter(
    "streamsync_lag_refresh_failures",
    "Lag refreshes that failed (Kafka unreachable); the lag gauges keep their last values meanwhile",
    ["group"],
    registry=REGISTRY,
)
LAG_REFRESHED = Gauge(
    "streamsync_consumergroup_lag_refreshed_timestamp_seconds",
    "Unix time of the last successful lag refresh: alert when it falls behind",
    ["group"],
    registry=REGISTRY,
)
OUTBOX_BACKLOG = Gauge(
    "streamsync_outbox_backlog_events",
    "Nautobot change events waiting in the outbox for the relay",
    ["topic"],
    registry=REGISTRY,
)
OUTBOX_OLDEST = Gauge(
    "streamsync_outbox_oldest_age_seconds",
    "Age of the oldest event waiting in the outbox (0 when none waits)",
    ["topic"],
    registry=REGISTRY,
)
PARKED = Gauge(
    "streamsync_parked_events",
    "Events parked for a retry (a dependency that has not arrived yet, or queued behind one)",
    ["source"],
    registry=REGISTRY,
)
TARGET_EVENTS = Counter(
    "streamsync_target_events",
    "Nautobot change events a target received, by what became of them in the remote system (as for sources)",
    ["target", "model", "op", "outcome"],
    registry=REGISTRY,
)
TARGET_ECHOES = Counter(
    "streamsync_target_echoes_skipped",
    "Nautobot change events skipped because they were the target's own changes coming back",
    ["target"],
    registry=REGISTRY,
)
SKIPPED = Counter(
    "streamsync_records_skipped",
    "Records an agent read and did not apply: already_applied (below the position the database vouches for, "
    "e.g. redelivered after a crash), redrive_for_another_target (a target's dead letter re-driven for "
    "another target)",
    ["agent", "reason"],
    registry=REGISTRY,
)
REWINDS = Counter(
    "streamsync_position_rewinds",
    "Times a partition was read again from the database's position because records past it had been "
    "acknowledged without being applied (Kafka's committed offset ahead of it, or a gap in a batch)",
    ["topic", "partition"],
    registry=REGISTRY,
)
INFRASTRUCTURE_RETRIES = Counter(
    "streamsync_infrastructure_retries",
    "Failed attempts of a batch that is retried, not dead-lettered, because of the infrastructure, by cause "
    "(database, redis, kafka, target, operator, timeout)",
    ["agent", "cause"],
    registry=REGISTRY,
)
STALLED_SINCE = Gauge(
    "streamsync_agent_stalled_since_timestamp_seconds",
    "Since when an agent's batch keeps failing for an infrastructure reason (absent while it is not): "
    "its partitions wait; alert on time() minus this",
    ["agent", "cause"],
    registry=REGISTRY,
)
WRITER_BLOCKED = Gauge(
    "streamsync_writer_blocked",
    "1 while the source's batches wait because the Nautobot user streamsync writes as may not write the "
    "source's models (reason: user_missing, user_inactive, permission_missing); 0 otherwise",
    ["source", "reason"],
    registry=REGISTRY,
)
WORKER = Gauge(
    "streamsync_worker_info", "This worker's consumer group and version", ["group", "version"], registry=REGISTRY
)


class MetricsError(RuntimeError):
    """The metrics endpoint cannot be served (the port is taken): raised at start-up."""


class LagCollector(Collector):
    """`streamsync_consumergroup_lag` and `..._lag_seconds` from the last refresh, swapped in whole."""

    def __init__(self) -> None:
        self.rows: list[PartitionLag] = []

    def collect(self) -> Iterator[Metric]:
        """Yield the gauges, per group, topic and partition."""
        rows = self.rows
        labels = ["group", "topic", "partition"]
        lag = GaugeMetricFamily(
            "streamsync_consumergroup_lag",
            "Log-end offset minus the group's committed offset (from the log's start where nothing is committed)",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "streamsync_consumergroup_lag_seconds",
            "Age of the oldest unprocessed record, from its Kafka timestamp; 0 when nothing waits",
            labels=labels,
        )
        for row in rows:
            values = [row.group, row.topic, str(row.partition)]
            lag.add_metric(values, row.lag)
            if row.lag == 0:
                age.add_metric(values, 0.0)
            elif row.oldest_age_seconds is not None:
                age.add_metric(values, row.oldest_age_seconds)
        yield lag
        yield age


LAG = LagCollector()
REGISTRY.register(LAG)


@dataclass
class _Context:
    """What `observe_batch` needs beyond the batch: set once by `start`."""

    group: str = ""
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    models: dict[str, set[str]] = field(default_factory=dict)  # source -> model names it may write
    recorder: Recorder | None = None


_context = _Context()


def observe_batch(source: str, received: int, result: BatchResult) -> None:
    """Count a committed batch of `received` messages (undecodable ones included) and record its summary.

    Never raises: it runs in the agent's loop, where an exception would stop the source's stream.
    """
    try:
        _observe_batch(source, received, result)
    except Exception:
        log.exception("metrics: cannot count a batch", source=source)


def _observe_batch(source: str, received: int, result: BatchResult) -> None:
    now = datetime.now(UTC)
    tally: Tally[tuple[str, str, str]] = Tally()
    delays: list[float] = []
    for obj in result.objects:
        for event in obj.events:
            tally[(obj.model, event.op.value, obj.outcome.value)] += 1
            if obj.outcome is not Outcome.FAILED:
                delays.append(max(0.0, (now - _aware(event.ts)).total_seconds()))
    known = _context.models.get(source, set())
    for rejection in result.rejected:
        model = rejection.event.model if rejection.event.model in known else UNKNOWN
        tally[(model, rejection.event.op.value, REJECTED)] += 1
    if received > result.received:  # messages that were not envelopes at all
        tally[(UNKNOWN, UNKNOWN, REJECTED)] += received - result.received
    for (model, op, outcome), count in tally.items():
        EVENTS.labels(source, model, op, outcome).inc(count)
    BATCH_SIZE.labels(source).observe(received)
    APPLY_SECONDS.labels(source).observe(result.timings.get("total", 0.0))
    histogram = END_TO_END_SECONDS.labels(source)
    for delay in delays:
        histogram.observe(delay)
    LAST_BATCH.labels(source).set(now.timestamp())
    if _context.recorder is not None:
        _context.recorder.record(_summary(source, received, result, now, max(delays, default=None), tally))


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _summary(
    source: str,
    received: int,
    result: BatchResult,
    now: datetime,
    max_delay: float | None,
    tally: Tally[tuple[str, str, str]],
) -> BatchSummary:
    outcomes = Tally[str]()
    for (_model, _op, outcome), count in tally.items():
        outcomes[outcome] += count
    return BatchSummary(
        at=now,
        group=_context.group,
        source=source,
        worker=_context.worker,
        batch_id=result.batch_id,
        events=received,
        **{o.value: outcomes[o.value] for o in Outcome},
        rejected=outcomes[REJECTED],
        timings_ms={name: round(seconds * 1000, 1) for name, seconds in result.timings.items()},
        max_end_to_end_s=None if max_delay is None else round(max_delay, 3),
    )


def observe_target_batch(target: str, result: BatchResult, echoes: int) -> None:
    """Count a target's committed batch. Never raises, like `observe_batch`."""
    try:
        tally: Tally[tuple[str, str, str]] = Tally()
        for obj in result.objects:
            for event in obj.events:
                tally[(obj.model, event.op.value, obj.outcome.value)] += 1
        for rejection in result.rejected:
            tally[(UNKNOWN, rejection.event.op.value, REJECTED)] += 1
        for (model, op, outcome), count in tally.items():
            TARGET_EVENTS.labels(target, model, op, outcome).inc(count)
        if echoes:
            TARGET_ECHOES.labels(target).inc(echoes)
    except Exception:
        log.exception("metrics: cannot count a target batch", target=target)


def observe_dead_letters(source: str, codes: Iterable[str]) -> None:
    """Count dead letters Kafka acknowledged, by code. Never raises (the letters would be written again)."""
    try:
        for code, count in Tally(codes).items():
            DEAD_LETTERS.labels(source, code).inc(count)
    except Exception:
        log.exception("metrics: cannot count dead letters", source=source)


def observe_skipped(agent: str, reason: str, count: int) -> None:
    """Count records an agent did not settle again. Never raises."""
    try:
        if count:
            SKIPPED.labels(agent, reason).inc(count)
    except Exception:
        log.exception("metrics: cannot count skipped records", agent=agent)


def observe_writer(source: str, blocked: str | None) -> None:
    """Set the source's writer gauges: 1 for the reason it is `blocked` for, 0 for the others. Never raises."""
    try:
        for reason in Blocked:
            WRITER_BLOCKED.labels(source, reason.value).set(1 if reason == blocked else 0)
    except Exception:
        log.exception("metrics: cannot set the writer gauges", source=source)


def observe_rewind(topic: str, partition: int) -> None:
    """Count a partition read again from the database's position. Never raises."""
    try:
        REWINDS.labels(topic, str(partition)).inc()
    except Exception:
        log.exception("metrics: cannot count a rewind", topic=topic)


def observe_stall(agent: str, cause: str, since: float, previous_cause: str | None) -> None:
    """Count one failed attempt of a stalled agent and show since when it stalls. Never raises."""
    try:
        INFRASTRUCTURE_RETRIES.labels(agent, cause).inc()
        if previous_cause is not None and previous_cause != cause:
            STALLED_SINCE.remove(agent, previous_cause)
        STALLED_SINCE.labels(agent, cause).set(since)
    except Exception:
        log.exception("metrics: cannot count a stall", agent=agent)


def observe_recovery(agent: str, cause: str) -> None:
    """An agent settles again: it no longer stalls. Never raises."""
    try:
        STALLED_SINCE.remove(agent, cause)
    except Exception:
        log.exception("metrics: cannot clear a stall", agent=agent)


def report_worker(stalled: Sequence[Stall]) -> None:
    """Tell the health page (through Redis, off the event loop) this worker's state. Never raises."""
    if _context.recorder is not None:
        status = WorkerStatus(group=_context.group, worker=_context.worker, at=datetime.now(UTC), stalled=list(stalled))
        _context.recorder.record(status)


def start(
    app: faust.App,
    settings: StreamsyncSettings,
    sources: Sequence[str],
    stalled: Callable[[], Sequence[Stall]] = list,
) -> str | None:
    """Serve /metrics (unless `metrics_port` is 0), record batch summaries, and refresh the measured gauges.

    `stalled` tells, at each refresh, which agents stall: the worker's state for the health page.

    Returns the address served, or None. Raises MetricsError when the port cannot be bound.
    """
    _context.group = settings.group_id
    _context.models = {s: set(settings.source(s).registry().names()) for s in sources}
    _context.recorder = Recorder()
    WORKER.labels(settings.group_id, __version__).set(1)
    served = None
    if settings.metrics_port:
        try:
            start_http_server(settings.metrics_port, settings.metrics_address, registry=REGISTRY)
        except OSError as error:
            raise MetricsError(
                f"cannot serve metrics on {settings.metrics_address}:{settings.metrics_port}: {error.strerror or error}"
                " (set --metrics-port, STREAMSYNC_METRICS_PORT or metrics_port; 0 turns the endpoint off)"
            ) from error
        served = f"http://{settings.metrics_address}:{settings.metrics_port}/metrics"
        log.info("metrics served", url=served, refresh_interval=settings.metrics_interval)
    refresher = Refresher(settings)

    async def refresh() -> None:
        report_worker(stalled())  # first: it needs neither Kafka nor the database
        await refresher.refresh()

    app.timer(settings.metrics_interval, name="streamsync.monitor.prometheus.refresh")(refresh)
    return served


class Refresher:
    """Re-measures the group's lag (Kafka), the outbox backlog and parked retries (database)."""

    def __init__(self, settings: StreamsyncSettings) -> None:
        self.settings = settings
        self.kafka = settings.kafka()
        # Every configured source, not only this worker's: a source no worker consumes shows as growing lag.
        self.topics = [events_topic(s, settings.topic_prefix) for s in settings.sources]
        self.outbox_topic = nautobot_events_topic(settings.topic_prefix)
        # Its own thread and database connection: never queued behind a batch on the sync agents' thread.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamsync-metrics")
        self._failing = {"lag": False, "database": False}

    async def refresh(self) -> None:
        """One refresh; failures are logged (once per outage) and counted, never raised."""
        group = self.settings.group_id
        try:
            LAG.rows = await consumer_lag(self.kafka, self.settings.topic_prefix, [group], topics=self.topics)
            LAG_REFRESHED.labels(group).set(time.time())
            self._recovered("lag")
        except Exception as error:
            LAG_REFRESH_FAILURES.labels(group).inc()
            self._failed("lag", error)
        try:
            loop = asyncio.get_running_loop()
            backlog, parked = await loop.run_in_executor(self._db, _database_figures, self.outbox_topic)
            OUTBOX_BACKLOG.labels(self.outbox_topic).set(backlog.count)
            OUTBOX_OLDEST.labels(self.outbox_topic).set(backlog.oldest_age_seconds)
            for source in self.settings.sources:
                PARKED.labels(source).set(parked.get(source, 0))
            self._recovered("database")
        except Exception as error:
            self._failed("database", error)

    def _failed(self, what: str, error: BaseException) -> None:
        if not self._failing[what]:
            log.warning(f"metrics: cannot measure from {what}", error=repr(error))
        self._failing[what] = True

    def _recovered(self, what: str) -> None:
        if self._failing[what]:
            log.info(f"metrics: measuring from {what} again")
        self._failing[what] = False


def _database_figures(outbox_topic: str) -> tuple[Backlog, dict[str, int]]:
    from django.db import close_old_connections

    # A database restart leaves a dead connection behind: drop it so this refresh opens a new one.
    close_old_connections()
    return database_figures(outbox_topic)
