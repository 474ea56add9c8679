"""Whether a source's writer is blocked: said in the log and in a gauge while it lasts, and when it ends.

A blocked writer (its Nautobot user missing, inactive or lacking a permission: WriterBlocked) holds
the source's batches, which the settler retries with back-off; this is how an operator learns why.
The health page does not depend on it: it asks the database the same question itself.
"""

from __future__ import annotations

import time

import structlog

from streamsync.monitor import prometheus
from streamsync.sync.faults import operator_fault
from streamsync.sync.permissions import FIX, WriterBlocked

log = structlog.get_logger(__name__)

BLOCKED = "not writing: the Nautobot user may not write this source's models"
RESUMED = "writing again: the Nautobot user may write this source's models"


class WriterWatch:
    """Reports one source's writer: an error line when it becomes blocked (or why changes), a warning per retry."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._blocked: WriterBlocked | None = None
        self._since = 0.0
        prometheus.observe_writer(source, None)

    def failed(self, error: BaseException, retry_in: float) -> bool:
        """Say why, if the writer is blocked; False for any other failure (the caller says that one)."""
        fault = operator_fault(error)
        if not isinstance(fault, WriterBlocked):
            return False
        before = self._blocked
        if before is None:
            self._since = time.monotonic()
        news = before is None or (before.reason, before.missing) != (fault.reason, fault.missing)
        self._blocked = fault
        prometheus.observe_writer(self.source, fault.reason)
        (log.error if news else log.warning)(
            BLOCKED,
            source=self.source,
            user=fault.username,
            reason=fault.reason.value,
            missing=fault.missing,
            blocked_for_s=round(time.monotonic() - self._since, 1),
            retry_in=round(retry_in, 2),
            fix=FIX,
        )
        return True

    def succeeded(self) -> None:
        """A batch of the source was checked and settled: if it was blocked, say that it writes again."""
        if self._blocked is None:
            return
        log.info(
            RESUMED,
            source=self.source,
            user=self._blocked.username,
            blocked_for_s=round(time.monotonic() - self._since, 1),
        )
        prometheus.observe_writer(self.source, None)
        self._blocked = None
