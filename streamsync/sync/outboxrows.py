"""The outbox rows of one engine change context, written with one INSERT once it has published.

Nautobot publishes a change context's ObjectChanges one by one as the context exits, and
streamsync's event broker (streamsync/outbox/broker.py) turns each into outbox rows. Inside the
engine's change context the broker hands its rows here instead of inserting them one publish at a
time; the engine inserts them all, in publish order, right after the context exits, in the same
transaction. Outside it (web requests, jobs) the broker inserts them itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_rows: ContextVar[list[Any] | None] = ContextVar("streamsync_outbox_rows", default=None)


@contextmanager
def collect() -> Iterator[None]:
    """Rows offered inside this block are inserted when it ends without an error (an error rolls back anyway)."""
    from streamsync.models.bookkeeping import OutboxEvent

    rows: list[Any] = []
    token = _rows.set(rows)
    try:
        yield
    finally:
        _rows.reset(token)
    if rows:
        OutboxEvent.objects.bulk_create(rows)


def offer(rows: Sequence[Any]) -> bool:
    """Take unsaved OutboxEvent rows for the block's INSERT; False outside `collect()` (the caller inserts them)."""
    pending = _rows.get()
    if pending is None:
        return False
    pending.extend(rows)
    return True
