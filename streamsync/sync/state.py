"""The state topic `<prefix>.<source>.state`: the latest full state of every object of a source.

A compacted topic keyed by canonical object key. A record's value is the envelope-v1 JSON of an
`upsert` carrying every attribute the source has set for the object (merged across partial
upserts), with the `id` and `ts` of the latest event merged in; a delete is a tombstone (null
value). Records are idempotent, so producing one twice is harmless (at-least-once is enough).

The merge base is the `SourceState` table, written in the batch's own transaction (`merge`), so
the full state survives restarts and commits with the data; the worker produces the touched keys'
records after the commit and before the batch is acknowledged. `replace` is the snapshot's variant:
the source's whole state at once. Reading the topic back is streamsync/ops/statetopic.py's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from pydantic_core import to_jsonable_python

from streamsync.contract.envelope import Event, Op

if TYPE_CHECKING:
    from streamsync.models.bookkeeping import SourceState
    from streamsync.sync.batch import Change
    from streamsync.sync.registry import ModelRegistry

log = structlog.get_logger(__name__)

# Rows per INSERT ... ON CONFLICT statement when a whole state is written.
WRITE_CHUNK = 1000


@dataclass(frozen=True)
class StateRecord:
    """One record for the state topic: the object's full state, or a tombstone (`value` None)."""

    key: str
    value: bytes | None

    def kafka(self) -> tuple[bytes, bytes | None]:
        """(key, value) as produced."""
        return self.key.encode(), self.value


def state_event(
    source: str, model: str, ids: Mapping[str, Any], attrs: Mapping[str, Any], event_id: str, ts: datetime
) -> Event:
    """The envelope a state record carries: an upsert with every attribute known."""
    return Event(id=event_id, source=source, model=model, op=Op.UPSERT, key=dict(ids), attrs=dict(attrs), ts=ts)


def model_of(key: str) -> str:
    """The model name a canonical key starts with."""
    return key.partition(":")[0]


def identifiers_of(key: str) -> dict[str, Any]:
    """The identifiers a canonical key holds."""
    ids: dict[str, Any] = json.loads(key.partition(":")[2])
    return ids


def merge(source: str, registry: ModelRegistry, events: Sequence[Event]) -> list[StateRecord]:
    """Fold `events` into `source`'s state rows (in the caller's transaction); the touched keys' records.

    Events the registry rejects do not enter the state; every other one does, whether or not its
    apply succeeded: the state is what the source says, not what Nautobot accepted.
    """
    from streamsync.models.bookkeeping import KEY_LENGTH, SourceState
    from streamsync.sync.batch import fold

    changes, _ = fold(events, registry, source)
    for key in [key for key in changes if len(key) > KEY_LENGTH]:
        # No real object has such a key; storing it would fail the batch's transaction, every time.
        log.warning("key too long for the state, left out", source=source, key=key[:200], length=len(key))
        del changes[key]
    if not changes:
        return []
    current = {row.key: row.attrs for row in SourceState.objects.filter(source=source, key__in=list(changes))}
    records: list[StateRecord] = []
    gone: list[str] = []
    rows: list[SourceState] = []
    for key, change in changes.items():
        if change.op is Op.DELETE:
            gone.append(key)
            records.append(StateRecord(key, None))
            continue
        base = {} if change.recreated else current.get(key, {})
        last = change.events[-1]
        row, record = _state(source, change, {**base, **to_jsonable_python(change.attrs)}, last.id, last.ts)
        rows.append(row)
        records.append(record)
    _write(source, rows, gone)
    return records


def replace(source: str, changes: Mapping[str, Change], tombstones: Sequence[str]) -> list[StateRecord]:
    """A snapshot's state: rows for `changes` (attributes replaced, not merged), none for `tombstones`.

    One transaction; returns the upserts' records (the caller adds the tombstones' own).
    """
    from django.db import transaction

    now = datetime.now(UTC)
    records: list[StateRecord] = []
    rows: list[SourceState] = []
    for change in changes.values():
        row, record = _state(source, change, to_jsonable_python(change.attrs), str(uuid.uuid4()), now)
        rows.append(row)
        records.append(record)
    with transaction.atomic():
        _write(source, rows, tombstones)
    return records


def _state(
    source: str, change: Change, attrs: dict[str, Any], event_id: str, ts: datetime
) -> tuple[SourceState, StateRecord]:
    """The row and the record of one object's full state, as of event `event_id` at `ts`."""
    from streamsync.models.bookkeeping import SourceState

    model = change.model.get_type()
    row = SourceState(source=source, key=change.key, model=model, attrs=attrs, event_id=event_id, ts=ts)
    value = state_event(source, model, change.ids, attrs, event_id, ts).to_bytes()
    return row, StateRecord(change.key, value)


def _write(source: str, rows: list[SourceState], gone: Sequence[str]) -> None:
    from streamsync.models.bookkeeping import SourceState

    if gone:
        SourceState.objects.filter(source=source, key__in=list(gone)).delete()
    for start in range(0, len(rows), WRITE_CHUNK):
        SourceState.objects.bulk_create(
            rows[start : start + WRITE_CHUNK],
            update_conflicts=True,
            unique_fields=["source", "key"],
            update_fields=["model", "attrs", "event_id", "ts", "updated"],
        )
