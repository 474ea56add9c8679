"""Settling batches from the event loop: on a database thread, through infrastructure faults, past poison.

    settle(batch) on the database thread (streamsync/sync/settle.py)
      transient fault (database, Redis, Kafka away)   retry the same batch with back-off, for as long as it takes
      operator's fault (the Nautobot user may not     the same, with a shorter back-off (it is fixed by hand, and
        write: streamsync.sync.faults.OperatorFault)       should be noticed soon), and the agent's Watch says why
      any other error, twice                          split the batch in halves and settle each, until the
                                                      record that fails alone is dead-lettered as
                                                      `unexpected_error` with the error, and the rest is settled

So a record that breaks a batch for a reason nobody foresaw costs a few retries and one dead
letter, not a stopped partition, and an outage costs time, never a record.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any, NoReturn, Protocol, TypeVar

import faust
import structlog

from streamsync.agents.dbthread import DatabaseThread
from streamsync.agents.positioning import Positions
from streamsync.agents.stalls import Stalls
from streamsync.contract.records import Origin
from streamsync.sync.backoff import INFRASTRUCTURE_CAP_SECONDS, backoff
from streamsync.sync.faults import is_transient, operator_fault, trace
from streamsync.sync.settle import Settled, Settling, Where, Wire, settle, where

log = structlog.get_logger(__name__)
T = TypeVar("T")

FIRST_BACKOFF_SECONDS = 0.5
# Back-off cap while an operator's fault (a user deactivated, a permission withdrawn) holds a batch:
# one attempt costs a few queries, and writing should resume within seconds of the fix.
OPERATOR_BACKOFF_SECONDS = 5.0
# Attempts of a batch that fails for no infrastructure reason before it is split.
ATTEMPTS_BEFORE_SPLIT = 2
# Exit status of a worker whose agent crashed: a supervisor should start it again.
EXIT_AGENT_CRASHED = 70


class Watch(Protocol):
    """Told how an agent's attempts end, to say what the settler cannot (e.g. why its writer is blocked)."""

    def failed(self, error: BaseException, retry_in: float) -> bool:
        """An attempt failed and will be retried; True when this said why (the settler then says nothing)."""

    def succeeded(self) -> None:
        """An attempt succeeded."""


class Settler:
    """Settles one agent's batches; returns only once every record of a batch is settled."""

    def __init__(
        self,
        app: faust.App,
        how: Settling,
        db: DatabaseThread,
        wire: Wire,
        positions: Positions,
        stalls: Stalls,
        watch: Watch | None = None,
    ) -> None:
        self.app = app
        self.how = how
        self.db = db
        self.wire = wire
        self.positions = positions
        self.stalls = stalls
        self.watch = watch

    async def settle(self, records: Sequence[Origin]) -> list[Settled]:
        """Settle `records`; more than one result when a failing batch had to be split."""
        return await self._settle(list(records), {})

    async def _settle(self, records: list[Origin], poisoned: dict[Where, str]) -> list[Settled]:
        failures = 0
        while True:
            try:
                settled = await self.db.run(settle, self.how, records, self.wire, poisoned)
            except Exception as error:
                failures += 1
                context = {"agent": self.how.agent, "records": len(records), "attempt": failures}
                if is_transient(error):
                    self.stalls.failed(self.how.agent, error)
                    await self.wait(retry_delay(error, failures), "batch failed, retrying", error, **context)
                    continue
                if failures < ATTEMPTS_BEFORE_SPLIT:
                    await self.wait(
                        backoff(failures, FIRST_BACKOFF_SECONDS, INFRASTRUCTURE_CAP_SECONDS),
                        "batch failed, retrying",
                        error,
                        **context,
                    )
                    continue
                if len(records) > 1:
                    log.warning("batch keeps failing: settling its halves apart", error=repr(error), **context)
                    half = len(records) // 2
                    return [
                        *await self._settle(records[:half], poisoned),
                        *await self._settle(records[half:], poisoned),
                    ]
                if where(records[0]) in poisoned:
                    raise  # not even its dead letter can be settled: the agent cannot go on
                log.error("record fails every batch it is in: dead-lettering it", exc_info=error, **context)
                poisoned = {**poisoned, where(records[0]): trace(error)}
                continue
            self.stalls.recovered(self.how.agent)
            if self.watch is not None:
                self.watch.succeeded()
            self.positions.vouch(self.how.agent, settled.admission)
            if settled.admission.refused:
                await self.positions.read_again(self.app.consumer, self.how.agent, settled.admission.refused)
            return [settled]

    async def wait(self, seconds: float, message: str, error: BaseException, **context: Any) -> None:
        """Say why an attempt failed (the Watch, or a log line) and sleep; a worker told to stop leaves uncommitted."""
        if self.watch is None or not self.watch.failed(error, seconds):
            log.warning(message, retry_in=round(seconds, 2), error=repr(error), **context)
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            if self.app.should_stop:
                leave_uncommitted(message, error, **context)
            await asyncio.sleep(min(0.2, seconds))


def retry_delay(error: BaseException, failures: int) -> float:
    """Seconds before the next attempt after `failures` transient failures in a row (`error` the last)."""
    if operator_fault(error) is not None:
        return backoff(failures, FIRST_BACKOFF_SECONDS, OPERATOR_BACKOFF_SECONDS)
    return backoff(failures, FIRST_BACKOFF_SECONDS, INFRASTRUCTURE_CAP_SECONDS)


def leave_uncommitted(what: str, error: BaseException, **context: Any) -> NoReturn:
    """Exit at once while a batch cannot be settled; it stays unsettled, and is settled by the next owner."""
    log.error(
        f"stopping while {what!r} cannot succeed: exiting; the batch will be settled again",
        error=repr(error),
        **context,
    )
    logging.shutdown()
    # Not sys.exit: faust's shutdown would wait for the batch that cannot finish.
    os._exit(0)


def crash(agent: str, error: BaseException) -> NoReturn:
    """An agent cannot go on: exit non-zero so that a supervisor starts the worker again.

    Never a live process that consumes nothing. What was not settled stays unsettled: the next
    worker reads it again from the positions the database vouches for.
    """
    log.critical(
        "agent crashed: exiting so that the worker is started again; nothing unsettled is lost",
        agent=agent,
        exc_info=error,
    )
    logging.shutdown()
    os._exit(EXIT_AGENT_CRASHED)
