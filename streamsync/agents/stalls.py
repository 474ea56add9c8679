"""Which of a worker's agents are stalled: retrying a batch for an infrastructure reason, since when, and why.

A stalled agent loses nothing (its batch waits, nothing is dead-lettered, its positions do not
move), but its partitions do not go on either: an operator must be able to see it at once, in the
log (first failure, recovery), in Prometheus (`streamsync_agent_stalled_since_timestamp_seconds`,
`streamsync_infrastructure_retries_total`) and on the health page (through Redis).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import structlog

from streamsync.monitor import prometheus
from streamsync.monitor.batchlog import Stall
from streamsync.sync.faults import cause, reason

log = structlog.get_logger(__name__)


class Stalls:
    """The stalled agents of this worker process; updated by the agents, read by metrics and the page."""

    def __init__(self) -> None:
        self._stalled: dict[str, Stall] = {}

    def failed(self, agent: str, error: BaseException) -> None:
        """Another attempt of `agent`'s batch failed for an infrastructure reason."""
        previous = self._stalled.get(agent)
        now = datetime.now(UTC)
        stall = Stall(
            agent=agent,
            cause=cause(error),
            since=previous.since if previous else now,
            attempts=(previous.attempts if previous else 0) + 1,
            error=reason(error)[:500],
        )
        self._stalled[agent] = stall
        if previous is None:
            log.error("agent stalled: its batch waits for the infrastructure", agent=agent, cause=stall.cause)
        prometheus.observe_stall(agent, stall.cause, stall.since.timestamp(), previous.cause if previous else None)
        if previous is None or previous.cause != stall.cause:
            prometheus.report_worker(self.current())

    def recovered(self, agent: str) -> None:
        """`agent` settled a batch: it no longer stalls."""
        stall = self._stalled.pop(agent, None)
        if stall is None:
            return
        waited = time.time() - stall.since.timestamp()
        log.info("agent recovered", agent=agent, cause=stall.cause, attempts=stall.attempts, stalled_s=round(waited, 1))
        prometheus.observe_recovery(agent, stall.cause)
        prometheus.report_worker(self.current())

    def current(self) -> list[Stall]:
        """The stalled agents now."""
        return list(self._stalled.values())
