"""What a replay would delete: the deletes among the events it reprocesses, and what they cascade to.

Reprocessing is idempotent for upserts, not for deletes: a delete replayed after its object was
made again (by the source's own later upsert, or by hand) deletes the object as it is now, and
with it everything Django cascades to, such as interfaces and IP address assignments that others
attached since, which the replayed upsert does not bring back. So before a replay moves anything,
this reads the stretch it would reprocess (each partition from its new offset to its end, as of
now), keeps the first delete per object key, finds those whose object exists in Nautobot now (by
its identifiers, as the engine does), and collects each one's cascade (streamsync.ops.cascade).

Bounded: records are read in batches and only deletes are decoded (a record whose bytes cannot
spell `"delete"` is skipped unread); what is kept is one entry per deleted key, never the events.
Read-only: the database work runs in a READ ONLY transaction.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition

from streamsync.contract.envelope import EnvelopeError, Op, canonical_key
from streamsync.contract.records import Origin, read_event
from streamsync.kafka.clients import consumer
from streamsync.kafka.connection import KafkaConnection
from streamsync.ops.cascade import CascadeReport, Root, collect, format_report, headline, read_only

if TYPE_CHECKING:
    from streamsync.ops.offsets import PartitionReset
    from streamsync.sync.registry import ModelRegistry

# (phase, done, total): phases are "events" (records read) and "cascade" (deletes collected).
Progress = Callable[[str, int, int], None]

# Deleted keys looked up per query, as a batch's keys are.
LOOKUP_CHUNK = 500


@dataclass(frozen=True)
class Delete:
    """The first delete event of one object key in the stretch, and where it is."""

    key: str
    model: str
    ids: dict[str, Any]
    partition: int
    offset: int

    @property
    def label(self) -> str:
        """The key and the event's place, as output names it."""
        return f"{self.key} (partition {self.partition}, offset {self.offset})"


@dataclass
class ReplayPreview:
    """The stretch's deletes: how many events were read, which objects exist, and their cascade."""

    events: int = 0
    deletes: int = 0  # keys the stretch deletes
    gone: int = 0  # of those, keys with no object in Nautobot now
    ambiguous: list[str] = field(default_factory=list)  # keys naming several objects: the engine fails them
    cascade: CascadeReport = field(default_factory=CascadeReport)


async def read_deletes(
    kafka: KafkaConnection | str,
    topic: str,
    resets: Collection[PartitionReset],
    registry: ModelRegistry,
    source: str,
    progress: Progress | None = None,
) -> tuple[int, dict[str, Delete]]:
    """Records read, and the first delete per key, from each reset's new offset to its end.

    Only events a worker would apply count: records it rejects (not an envelope, keyed otherwise,
    another source, a model or key the source's models refuse) are dead-lettered, not applied.
    """
    chosen = {TopicPartition(topic, r.partition): r for r in resets if r.reprocess > 0}
    deletes: dict[str, Delete] = {}
    total = sum(r.reprocess for r in chosen.values())
    read = 0
    if not chosen:
        return read, deletes
    async with consumer(kafka) as reader:
        reader.assign(list(chosen))
        for tp, reset in chosen.items():
            reader.seek(tp, reset.new)
        remaining = set(chosen)
        while remaining:
            for tp, batch in (await reader.getmany(*remaining, timeout_ms=1000)).items():
                for record in batch:
                    if record.offset >= chosen[tp].end:
                        continue
                    read += 1
                    delete = _delete(record, registry, source)
                    if delete is not None and delete.key not in deletes:
                        deletes[delete.key] = delete
            remaining = {tp for tp in remaining if await reader.position(tp) < chosen[tp].end}
            if progress is not None:
                progress("events", read, total)
    return read, deletes


def _delete(record: Any, registry: ModelRegistry, source: str) -> Delete | None:
    """The delete `record` carries, if a worker would apply it as one; None otherwise."""
    from streamsync.sync.registry import RejectedEvent

    value = record.value
    # JSON spells "delete" literally or with a \u escape: anything else is no delete, left undecoded.
    if value is None or (b"delete" not in value and b"\\u" not in value):
        return None
    origin = Origin(record.key, value, record.topic, record.partition, record.offset, ())
    try:
        event = read_event(origin, sys.maxsize)
        if event.op is not Op.DELETE or event.source != source:
            return None
        model, ids, _ = registry.split(event)
    except (EnvelopeError, RejectedEvent):
        return None
    name = model.get_type()
    return Delete(canonical_key(name, ids), name, ids, record.partition, record.offset)


def find_roots(deletes: Collection[Delete], registry: ModelRegistry, preview: ReplayPreview) -> list[Root]:
    """The deletes whose object exists now, found by identifiers as the engine finds them, in the stretch's order.

    Loaded as the engine loads a batch (the partial adapter, one query per model and `LOOKUP_CHUNK`
    keys); keys whose DiffSync unique ids collide, or a chunk the database refuses, one by one.
    """
    from streamsync.sync.adapters import adapter_classes

    found: list[tuple[Delete, Root]] = []
    by_model: dict[str, list[Delete]] = {}
    for delete in deletes:
        by_model.setdefault(delete.model, []).append(delete)
    for name, of_model in by_model.items():
        model = registry.get(name)
        nautobot_cls, _ = adapter_classes([model])
        for start in range(0, len(of_model), LOOKUP_CHUNK):
            together: dict[str, Delete] = {}  # by DiffSync unique id
            alone: list[Delete] = []
            for delete in of_model[start : start + LOOKUP_CHUNK]:
                unique_id = model.create_unique_id(**delete.ids)
                if unique_id in together:
                    alone.append(delete)
                else:
                    together[unique_id] = delete
            nautobot = _load(nautobot_cls, name, [delete.ids for delete in together.values()])
            if nautobot is None:
                alone += together.values()
            else:
                for unique_id, delete in together.items():
                    if (name, unique_id) in nautobot.ambiguous:
                        preview.ambiguous.append(delete.key)
                        continue
                    dst = nautobot.get_or_none(model, unique_id)
                    _found(found, preview, delete, model, [dst.pk] if dst is not None else [])
            for delete in alone:
                _found(found, preview, delete, model, _pks(model, delete.ids))
    found.sort(key=lambda pair: (pair[0].partition, pair[0].offset))
    preview.ambiguous.sort()
    return [root for _, root in found]


def _load(nautobot_cls: Any, name: str, keys: list[dict[str, Any]]) -> Any:
    """The partial adapter loaded with `keys`, as the engine loads it; None if that fails."""
    from django.db import DatabaseError, transaction

    nautobot = nautobot_cls(keys={name: keys})
    try:
        with transaction.atomic():  # a refused query must not end the read-only transaction
            nautobot.load()
    except (DatabaseError, ValueError):  # or a row contrib cannot load (ValidationError): look keys up one by one
        return None
    return nautobot


def _pks(model: Any, ids: dict[str, Any]) -> list[Any]:
    """Up to two primary keys of the objects `ids` name (none if the database cannot even compare them)."""
    from django.db import DatabaseError, transaction

    try:
        with transaction.atomic():
            return list(model.get_queryset().filter(**ids).values_list("pk", flat=True)[:2])
    except DatabaseError:  # e.g. a number beyond the column's range: the engine fails such a delete
        return []


def _found(
    found: list[tuple[Delete, Root]], preview: ReplayPreview, delete: Delete, model: Any, pks: list[Any]
) -> None:
    if not pks:
        preview.gone += 1
    elif len(pks) > 1:
        preview.ambiguous.append(delete.key)
    else:
        found.append((delete, Root(model._model, pks[0], delete.label)))


def preview(
    kafka: KafkaConnection | str,
    topic: str,
    resets: Collection[PartitionReset],
    registry: ModelRegistry,
    source: str,
    progress: Progress | None = None,
) -> ReplayPreview:
    """Read the stretch a replay would reprocess and collect what its deletes would take with them; writes nothing."""
    result = ReplayPreview()
    result.events, deletes = asyncio.run(read_deletes(kafka, topic, resets, registry, source, progress))
    result.deletes = len(deletes)
    report = (lambda done, total: progress("cascade", done, total)) if progress else None
    with read_only():
        roots = find_roots(deletes.values(), registry, result)
        del deletes
        result.cascade = collect(roots, progress=report)
    return result


def summary(found: ReplayPreview) -> str:
    """One line for the confirmation: "this replay will delete 1 device, cascading to 3 interfaces"."""
    if found.cascade.empty:
        return "this replay deletes nothing that exists in Nautobot now"
    return f"this replay will delete {headline(found.cascade)}"


def format_preview(found: ReplayPreview) -> str:
    """What the stretch deletes: counts, the cascade table and lists, and the one-line summary."""
    lines = [
        f"read {found.events} event(s) to reprocess: {found.deletes} object key(s) deleted, "
        f"{found.gone} of them with no object in Nautobot now"
    ]
    lines += [f"{key}: names more than one object in Nautobot: the replay fails it" for key in found.ambiguous]
    if not found.cascade.empty:
        lines.append(format_report(found.cascade))
    lines.append(summary(found))
    return "\n".join(lines)
