"""A batch's values and pure helpers (checked events, changes, outcomes, results), apart from the apply machinery."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from diffsync import DiffSyncModel

from streamsync.contract.envelope import Event, Op, RejectCode, canonical_key
from streamsync.sync.awaits import Awaited
from streamsync.sync.registry import ModelRegistry, RejectedEvent
from streamsync.sync.steps import Item


class Outcome(StrEnum):
    """What happened to one object."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    UNCHANGED = "unchanged"
    FAILED = "failed"


@dataclass
class Rejection:
    """An event that does not fit the contract or its model; retrying cannot help."""

    event: Event
    code: RejectCode
    reason: str


@dataclass(frozen=True)
class Parked:
    """A key's events parked by earlier batches, in order, and why the first of them failed.

    Given to the engine with a later batch of their partition, they wait in it as its own failed
    keys do, and go on as soon as that batch may let them (`SyncEngine.apply`).
    """

    events: list[Event]
    reason: str
    # The objects the key's create waits for, as recorded with its rows (streamsync/sync/awaits.py).
    awaits: frozenset[Awaited] | None = None


@dataclass
class Change:
    """The net effect of a batch's events on one object."""

    model: type[DiffSyncModel]
    ids: dict[str, Any]
    op: Op
    attrs: dict[str, Any] = field(default_factory=dict)
    # A delete came earlier in the batch: attributes the later upserts omit take the model's
    # defaults, not the values of the object that was deleted.
    recreated: bool = False
    events: list[Event] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The canonical object key, from the identifiers as the model normalises them."""
        return canonical_key(self.model.get_type(), self.ids)


@dataclass
class ObjectResult:
    """The outcome for one object of the batch."""

    key: str
    model: str
    outcome: Outcome
    reason: str = ""
    # A failure that may pass later, e.g. a foreign key whose object has not arrived yet.
    retryable: bool = False
    events: list[Event] = field(default_factory=list)
    # The Nautobot object's primary key, when the outcome concerns one that exists or existed.
    pk: Any = None
    # A failed create that waits: the objects its events name that Nautobot lacks (awaits.py).
    awaits: frozenset[Awaited] | None = None


@dataclass
class BatchResult:
    """What one batch did, object by object, and where its time went."""

    batch_id: str
    received: int
    objects: list[ObjectResult] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # What the batch created or updated, as parked rows name what they wait for (awaits.lookups_of).
    wrote: list[Any] = field(default_factory=list)

    def add_time(self, name: str, seconds: float) -> None:
        """Add to one of the batch's timings (a batch applied in rounds adds each round's)."""
        self.timings[name] = self.timings.get(name, 0.0) + seconds

    def count(self, outcome: Outcome) -> int:
        """Objects with this outcome."""
        return sum(1 for o in self.objects if o.outcome is outcome)

    @property
    def failed(self) -> list[ObjectResult]:
        """Objects that could not be applied."""
        return [o for o in self.objects if o.outcome is Outcome.FAILED]

    def as_log(self) -> dict[str, Any]:
        """Flat fields for a structured log line."""
        return {
            "batch_id": self.batch_id,
            "received": self.received,
            **{outcome.value: self.count(outcome) for outcome in Outcome},
            "rejected": len(self.rejected),
            **{f"{name}_s": round(seconds, 4) for name, seconds in self.timings.items()},
        }


def check(events: Sequence[Event], registry: ModelRegistry, source: str = "") -> tuple[list[Item], list[Rejection]]:
    """Each event checked against its model: the ones that fit, in order, and the ones rejected.

    Events that do not fit their model, or come from another source than the one being applied,
    are rejected here.
    """
    items: list[Item] = []
    rejected: list[Rejection] = []
    for index, event in enumerate(events):
        if source and event.source != source:
            why = f"event from source {event.source!r} on source {source!r}'s topic"
            rejected.append(Rejection(event, RejectCode.WRONG_SOURCE, why))
            continue
        try:
            model, ids, attrs = registry.split(event)
        except RejectedEvent as error:
            rejected.append(Rejection(event, error.code, error.reason))
            continue
        key = canonical_key(event.model, ids)  # "2001:DB8::1" and "2001:db8::1" are one object
        items.append(Item(index, event, model, ids, attrs, key))
    return items, rejected


def fold(
    events: Sequence[Event], registry: ModelRegistry, source: str = ""
) -> tuple[dict[str, Change], list[Rejection]]:
    """Fold events (in partition order) into one net change per canonical key.

    Upserts merge, later attributes winning; a delete wins over what came before it; an upsert
    after a delete recreates. This is each key's net effect, as the state topic keeps it; the
    engine applies a batch in steps instead (`SyncEngine.apply`), since other keys may see what
    happens in between.
    """
    items, rejected = check(events, registry, source)
    changes: dict[str, Change] = {}
    for item in items:
        previous = changes.get(item.key)
        if item.op is Op.DELETE:
            change = Change(item.model, item.ids, Op.DELETE)
        elif previous is None:
            change = Change(item.model, item.ids, Op.UPSERT, item.attrs)
        elif previous.op is Op.DELETE:
            change = Change(item.model, item.ids, Op.UPSERT, item.attrs, recreated=True)
        else:
            attrs = {**previous.attrs, **item.attrs}
            change = Change(item.model, item.ids, Op.UPSERT, attrs, recreated=previous.recreated)
        change.events = [*(previous.events if previous else []), item.event]
        changes[item.key] = change
    return changes, rejected


def fold_step(items: Sequence[Item]) -> list[Change]:
    """One change per key of a step (`next_step()`), in the order of each key's first event.

    A step holds either upserts or deletes of a key, never both: upserts merge, later attributes
    winning.
    """
    changes: dict[str, Change] = {}
    for item in items:
        change = changes.get(item.key)
        if change is None:
            changes[item.key] = Change(item.model, item.ids, item.op, dict(item.attrs), events=[item.event])
            continue
        if change.op is not item.op:
            raise ValueError(f"{item.key}: a step holds an upsert and a delete of it")
        change.attrs.update(item.attrs)
        change.events.append(item.event)
    return list(changes.values())


def rounds(
    changes: Sequence[Change], model_of: Callable[[Change], type[DiffSyncModel]] = lambda change: change.model
) -> list[list[Change]]:
    """Split changes into rounds in which no two share a model and a DiffSync unique id.

    diffsync joins identifier values with "__" into an object's unique id, so different keys can
    share one: a VLAN with no group and one in a group named "None" are both `100__None`, a name
    `a__b` under `c` and a name `a` under `b__c` are both `a__b__c`. An adapter holds one object per
    unique id, so two such changes cannot be loaded, diffed or applied together; in rounds of their
    own each is applied as if it had come in a batch of its own (they are different keys, so per-key
    order does not care). The n-th change of a unique id goes to round n: a batch without collisions
    is one round, and each round keeps the batch's order. `model_of` gives the model whose unique
    id counts (a target's own model, say).
    """
    split: list[list[Change]] = []
    seen: Counter[tuple[str, str]] = Counter()
    for change in changes:
        model = model_of(change)
        unique_id = (model.get_type(), model.create_unique_id(**change.ids))
        index = seen[unique_id]
        seen[unique_id] += 1
        if index == len(split):
            split.append([])
        split[index].append(change)
    return split


def in_batch_order(changes: Sequence[Change], objects: Sequence[ObjectResult]) -> list[ObjectResult]:
    """`objects` in the order of the batch's `changes`, whatever round each was applied in."""
    position = {change.key: i for i, change in enumerate(changes)}
    return sorted(objects, key=lambda result: position[result.key])
