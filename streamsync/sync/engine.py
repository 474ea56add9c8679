"""Apply a batch of change events to Nautobot, ending where applying them one by one would.

The hot path, in order:

1. check each event against its model (`batch.check`);
2. cut the batch into steps (streamsync/sync/steps.py) and fold each step's events per key into
   one change per object (`batch.fold_step`);
3. per step, load only its keys from Nautobot (one query per model), then diff each object and
   apply it through nautobot_ssot.contrib's generic CRUD, creates and updates in model dependency
   order, then deletes in reverse, each object in its own savepoint (a bulk-safe model's creates,
   then its updates, first written together: docs/architecture.md, "The bulk write path");
4. a key whose change failed in a way that may pass later waits: its later events in the batch
   queue behind it, and it is tried again after each step that may have let it go on. Keys parked
   by earlier batches (`Parked`) wait in the batch the same way, from its start.

All of it runs inside one transaction and one change context attributed to the streamsync user.
Within a step, keys that share a DiffSync unique id are applied in rounds (`batch.rounds()`).

The user comes from the caller (`Writer`): the engine asks it for the user at the start of every
batch, in the batch's transaction, and a user that may not write (missing, inactive, lacking a
permission) fails the whole batch before anything is written.

The end state does not depend on where batch boundaries fall; what may differ is listed in
docs/architecture.md ("Batches"). What a batch is made of and ends as (changes, outcomes,
`BatchResult`) lives in streamsync/sync/batch.py. Nothing here knows about Kafka, so it can be run
and tested on its own. It runs synchronously: callers on an event loop run it in a worker thread.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from diffsync import DiffSyncModel
from diffsync.exceptions import ObjectAlreadyExists, ObjectNotDeleted
from pydantic import ValidationError

from streamsync.contract.envelope import Event, Op, RejectCode, canonical_key, describe
from streamsync.sync import awaits, bulk, bulkupdate, diff, loaded, outboxrows, ownership
from streamsync.sync.adapters import PartialNautobotAdapter, adapter_classes
from streamsync.sync.awaits import Awaited
from streamsync.sync.batch import (
    BatchResult,
    Change,
    ObjectResult,
    Outcome,
    Parked,
    Rejection,
    check,
    fold_step,
    rounds,
)
from streamsync.sync.faults import Fault, causes, classify, is_transient, reason
from streamsync.sync.readcache import batch_cache
from streamsync.sync.registry import ModelRegistry
from streamsync.sync.steps import Item, Relations, next_step

log = structlog.get_logger(__name__)


def _update(dst: DiffSyncModel, attrs: dict[str, Any]) -> Outcome:
    dst.update(attrs)
    return Outcome.UPDATED


class Writer(Protocol):
    """Who the engine writes as; the caller decides (streamsync.sync.permissions.Writer checks a user's permissions)."""

    def user(self) -> Any:
        """The Nautobot user to write as, checked now; raises an OperatorFault when it may not write."""


@dataclass(frozen=True)
class ChangeLog:
    """What Nautobot's change log says of the engine's writes besides the user: context and detail.

    The detail starts with `streamsync:<source>`, which says whose change it is (streamsync.outbox.broker
    reads it back); `note` adds who or what caused the writes, for the people reading the log.
    """

    note: str = ""  # e.g. "resync started by alice"
    context: str = "orm"  # Nautobot's ObjectChangeEventContextChoices: "orm", or "job" when a Job runs the engine

    def detail(self, source: str) -> str:
        """The change context detail of a batch of `source`."""
        detail = f"streamsync:{source}" if source else "streamsync"
        return f"{detail} {self.note}" if self.note else detail


@dataclass
class _Changed:
    """What some steps wrote, and so which waiting keys may go on.

    Models whose objects they created or updated, and deleted; the objects they upserted (model and
    values), and the labels of the models they created objects of (streamsync/sync/awaits.py).
    """

    upserted: set[type[DiffSyncModel]] = field(default_factory=set)
    deleted: set[type[DiffSyncModel]] = field(default_factory=set)
    written: list[tuple[type[DiffSyncModel], dict[str, Any]]] = field(default_factory=list)
    created: set[str] = field(default_factory=set)

    @classmethod
    def maybe(cls, items: Sequence[Item | Change]) -> _Changed:
        """What events or changes may write before they are applied: their upserts may create, any may delete."""
        changed = cls(deleted={item.model for item in items})
        for item in items:
            if item.op is Op.UPSERT:
                changed._upsert(item.model, {**item.attrs, **item.ids}, created=True)
        return changed

    def note(self, change: Change, outcome: Outcome) -> None:
        if outcome in (Outcome.CREATED, Outcome.UPDATED):
            self._upsert(change.model, {**change.attrs, **change.ids}, created=outcome is Outcome.CREATED)
        elif outcome is Outcome.DELETED:
            self.deleted.add(change.model)

    def _upsert(self, model: type[DiffSyncModel], values: dict[str, Any], *, created: bool) -> None:
        self.upserted.add(model)
        self.written.append((model, values))
        if created and (name := awaits.label(model)):
            self.created.add(name)

    def add(self, other: _Changed) -> None:
        self.upserted |= other.upserted
        self.deleted |= other.deleted
        self.written += other.written
        self.created |= other.created

    def __bool__(self) -> bool:
        return bool(self.upserted or self.deleted)


def _wrote(waits: frozenset[Awaited], changed: _Changed) -> bool:
    """Whether `changed` may have written one of the objects a failed create waits for."""
    return any(awaits.written(awaited, changed.written, changed.created) for awaited in waits)


@dataclass
class _Waiting:
    """A key's events held back behind a failure that may pass later, in order, and that failure's reason.

    `blockers`: for a delete, the keys of the registered objects that protect the object; None when
    not known (too many, or parked by an earlier batch). `awaits`: for a create, the objects its
    events name that Nautobot lacked when it failed (streamsync/sync/awaits.py); None when none.
    """

    reason: str
    items: list[Item]
    blockers: frozenset[str] | None = None
    awaits: frozenset[Awaited] | None = None

    @property
    def head(self) -> Item:
        """The event that failed."""
        return self.items[0]

    @property
    def folds(self) -> bool:
        """Whether its events fold into one change (all upserts, or all deletes), as a retry would apply them."""
        return all(item.op is self.head.op for item in self.items)


@dataclass
class _Failure:
    """A change that failed in a way that may pass later, why, and (for a delete) the keys of what protects it."""

    change: Change
    reason: str
    blockers: frozenset[str] | None = None


@dataclass(frozen=True)
class _Refused:
    """Attributes that make no valid object with the object's current ones: the events are rejected."""

    reason: str


class SyncEngine:
    """Turns batches of events into the smallest set of writes in Nautobot, as the user its caller gives."""

    def __init__(
        self, registry: ModelRegistry, writer: Writer, changelog: ChangeLog | None = None, *, bulk: bool = True
    ) -> None:
        self.registry = registry
        self.writer = writer
        self.changelog = changelog or ChangeLog()
        # Creates and updates of bulk-safe models written together (bulk.py, bulkupdate.py); False: one by one.
        self.bulk = bulk

    def apply(self, events: Sequence[Event], *, source: str = "", parked: Sequence[Parked] = ()) -> BatchResult:
        """Apply `events` (in partition order) to Nautobot and report what happened to each object.

        `parked`: keys parked by earlier batches of these events' partitions, each one's events in
        order. They wait from the start of the batch, and are tried again after each step that may
        let them go on, as the batch's own waiting keys are: where the batch boundaries fall does not
        change when they are applied. A parked key left untouched has no outcome in the result.

        Raises the writer's OperatorFault, with nothing written, when its user may not write: checked
        for every batch, even one that changes nothing, so that a blocked writer settles nothing.
        """
        from django.db import transaction

        started = time.perf_counter()
        result = BatchResult(batch_id=str(uuid.uuid4()), received=len(events))
        earlier = [event for queue in parked for event in queue.events]
        # One transaction (the caller's, when it has one) for the check and the writes it allows, and
        # Nautobot's configuration read once for all of them (readcache).
        with transaction.atomic(), batch_cache(self.registry):
            user = self.writer.user()
            result.add_time("check", time.perf_counter() - started)
            # Parked events first: they came in before the batch's.
            items, result.rejected = check([*earlier, *events], self.registry, source)
            if items:
                queues = {event.canonical_key: queue for queue in parked for event in queue.events}
                self._apply_items(items, len(earlier), source, user, result, queues)
        result.timings["total"] = time.perf_counter() - started
        return result

    def _apply_items(
        self, items: list[Item], earlier: int, source: str, user: Any, result: BatchResult, parked: dict[str, Parked]
    ) -> None:
        """Apply checked events step by step (`_Run`) in one change context, adding to `result`.

        The first `earlier` events checked were parked by earlier batches; `parked` has each of their
        keys' queue, which says why it waits and for what.
        Runs in `apply`'s transaction: the change log commits with the data it describes.
        """
        from nautobot.extras.context_managers import web_request_context

        run = _Run(self, result)
        changelog = self.changelog
        context = web_request_context(user, context_detail=changelog.detail(source), context=changelog.context)
        # The outbox rows the context's exit publishes: one INSERT once it has (outboxrows).
        with outboxrows.collect(), context, loaded.scope():
            run.seed([item for item in items if item.index < earlier], parked)
            changed = run.apply([item for item in items if item.index >= earlier])
            applied = run.finish()
            result.wrote = awaits.lookups_of(self.registry, changed.written, changed.created)
            started = time.perf_counter()
            if source:  # what the source created, updated or asserted is its own (docs/resync.md)
                ownership.record(source, [(c.model, c.op, o) for c, o in applied])
            saved = time.perf_counter()
            result.add_time("save", saved - started)
        result.add_time("changelog", time.perf_counter() - saved)
        position = {id(item.event): item.index for item in items}
        result.objects.extend(sorted((o for _, o in applied), key=lambda o: position[id(o.events[0])]))

    @staticmethod
    def _delete(dst: DiffSyncModel) -> Outcome:
        """Delete; an object already gone (cascaded with its parent earlier in the batch) counts as deleted."""
        try:
            dst.delete()
        except ObjectNotDeleted:
            if type(dst)._model.objects.filter(pk=dst.pk).exists():  # type: ignore[attr-defined]
                raise
        return Outcome.DELETED

    @staticmethod
    def _create(change: Change, nautobot: PartialNautobotAdapter, src: DiffSyncModel) -> tuple[Outcome, Any]:
        """Create the object through contrib; returns the outcome and the new object's primary key."""
        ids = src.get_identifiers()
        created = change.model.create(adapter=nautobot, ids=ids, attrs=src.get_attrs())
        # contrib's create() does not hand back the new row: one indexed lookup, for creates only.
        pk = change.model.get_queryset().filter(**ids).values_list("pk", flat=True).first()  # type: ignore[attr-defined]
        _remember(nautobot, created, pk)
        return Outcome.CREATED, pk


def _remember(nautobot: PartialNautobotAdapter, created: DiffSyncModel | None, pk: Any) -> None:
    """A new object's view in the round's adapter, with its primary key: later events of its key update it."""
    if created is not None:
        created.pk = pk  # type: ignore[attr-defined]
        with contextlib.suppress(ObjectAlreadyExists):
            nautobot.add(created)


class _Possible:
    """The values the remaining events' objects may hold on their unique constraints, for `Relations.clash`.

    Per key, what Nautobot holds now and every value its remaining upserts set (the model's
    default where a missing object's upserts set none): a superset, so that two events that may
    want one unique value are never taken for independent. Nautobot's values are loaded when first
    needed, one query per model.
    """

    def __init__(self, registry: ModelRegistry, items: Sequence[Item]) -> None:
        self.registry = registry
        self.items = items
        self._current: dict[type[DiffSyncModel], dict[str, dict[str, Any]] | None] = {}
        self._values: dict[str, dict[str, set[Any]]] = {}

    def clash(self, one: Item, other: Item) -> bool:
        """Whether two events of one model, of different keys, may want the same value of a unique constraint."""
        if one.op is Op.DELETE and other.op is Op.DELETE:
            return False  # deletes free values, they take none
        for names in self.registry.unique(one.model):
            if self._loaded(one.model) is None:
                return True  # Nautobot's values unknown: they may
            mine, theirs = self._possible(one), self._possible(other)
            if all(mine.get(name, set()) & theirs.get(name, set()) for name in names):
                return True
        return False

    def _possible(self, item: Item) -> dict[str, set[Any]]:
        if item.key not in self._values:
            current = (self._loaded(item.model) or {}).get(item.key)
            values: dict[str, set[Any]] = {name: {_hashable(value)} for name, value in item.ids.items()}
            for name, value in (current or {}).items():
                values.setdefault(name, set()).add(_hashable(value))
            for other in self.items:
                if other.key == item.key and other.op is Op.UPSERT:
                    for name, value in other.attrs.items():
                        values.setdefault(name, set()).add(_hashable(value))
            if current is None:
                for name, field in item.model.model_fields.items():
                    if name not in values and not field.is_required():
                        values[name] = {_hashable(field.get_default(call_default_factory=True))}
            for found in values.values():
                found.discard(None)  # NULLs never clash
            self._values[item.key] = values
        return self._values[item.key]

    def _loaded(self, model: type[DiffSyncModel]) -> dict[str, dict[str, Any]] | None:
        """Nautobot's current attributes of the remaining events' objects of `model`, by key (None: unknown)."""
        from django.db import DataError, transaction

        if model not in self._current:
            keys = [item.ids for item in self.items if item.model is model]
            nautobot_cls, _ = adapter_classes([model])
            nautobot = nautobot_cls(keys={model.get_type(): keys})
            try:
                with transaction.atomic():  # a key the database cannot compare fails only this (see _Run._load)
                    nautobot.load()
            except DataError:
                self._current[model] = None
            else:
                self._current[model] = {
                    canonical_key(model.get_type(), obj.get_identifiers()): obj.get_attrs()
                    for obj in nautobot.get_all(model)
                }
        return self._current[model]


def _hashable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | None) else repr(value)


# Keys of at most this many objects protecting a delete are kept: an upsert of one of them may lift the protection.
MAX_BLOCKERS = 100


class _Run:
    """One batch being applied: step after step, with the keys that wait behind a failure that may pass later.

    A waiting key is tried again as soon as a step may have let it go on, as the retry timer would
    between batches of one event each: in the next step that holds what it waits for (its events
    folded into that step's changes, in their place by model and batch order), or right after a
    step that changed what it waits for. An upsert of an object that protects a waiting delete, and
    an event that may let a waiting key whose events do not fold (an upsert, then a delete) go on,
    end their step, so that the key is tried right after them.
    """

    def __init__(self, engine: SyncEngine, result: BatchResult) -> None:
        self.engine = engine
        self.registry = engine.registry
        self.result = result
        self.applied: list[tuple[Change, ObjectResult]] = []
        self.waiting: dict[str, _Waiting] = {}
        # Keys parked by earlier batches, as seeded: one still there, unchanged, has nothing to report.
        self.seeded: dict[str, tuple[_Waiting, int]] = {}
        self.items: dict[int, Item] = {}
        self._protectors: dict[type[DiffSyncModel], frozenset[type[DiffSyncModel]]] = {}
        self._bound: dict[Any, list[type[DiffSyncModel]]] = {}  # registered models by Nautobot model
        for model in self.registry:
            orm = getattr(model, "_model", None)
            if orm is not None:
                self._bound.setdefault(orm, []).append(model)

    def apply(self, items: list[Item]) -> _Changed:
        """Apply `items` step by step; returns which models' objects changed."""
        self.items.update((id(item.event), item) for item in items)
        changed = _Changed()
        pending = items
        while pending:
            waiting = [item for w in self.waiting.values() for item in w.items]
            step = next_step(pending, self._relations([*pending, *waiting]), self._ends_step(), self._frees())
            taken = {id(item) for item in step}
            pending = [item for item in pending if id(item) not in taken]
            ready = []
            for item in step:
                if item.key in self.waiting:  # per-key order: behind the key's failure, not around it
                    self.waiting[item.key].items.append(item)
                else:
                    ready.append(item)
            changes = fold_step(ready)
            joining = self._joining(changes)
            changes += [fold_step(self.waiting.pop(key).items)[0] for key in joining]
            done = self._apply_step(changes)
            done.add(self._retry(done, tried={change.key for change in changes}))
            changed.add(done)
        return changed

    def seed(self, items: list[Item], parked: dict[str, Parked]) -> None:
        """Keys parked by earlier batches wait from the start: `items` in order, `parked[key]` why and for what."""
        self.items.update((id(item.event), item) for item in items)
        for item in items:
            if item.key not in self.waiting:
                queue = parked[item.key]
                self.waiting[item.key] = _Waiting(queue.reason, [], awaits=queue.awaits)
            self.waiting[item.key].items.append(item)
        self.seeded = {key: (waiting, len(waiting.items)) for key, waiting in self.waiting.items()}

    def finish(self) -> list[tuple[Change, ObjectResult]]:
        """Every change applied, in the order applied, then one failure per key still waiting.

        A parked key the batch neither tried nor added to is left out: it is still parked as it was.
        """
        for key, waiting in self.waiting.items():
            seeded, count = self.seeded.get(key, (None, 0))
            if waiting is seeded and len(waiting.items) == count:
                continue
            head = waiting.head
            events = [item.event for item in waiting.items]
            failed = ObjectResult(
                key, head.model.get_type(), Outcome.FAILED, waiting.reason, True, events, awaits=waiting.awaits
            )
            self.applied.append((Change(head.model, head.ids, head.op, events=events), failed))
        self.waiting = {}
        return self.applied

    # --- when waiting keys are tried again -----------------------------------------------------

    def _protectors_of(self, model: type[DiffSyncModel]) -> frozenset[type[DiffSyncModel]]:
        """Models whose changes may lift what protects an object of `model` from deletion.

        Objects referring to it go (deleted, or cascaded with another of their parents) or move.
        """
        if model not in self._protectors:
            below = self.registry.descendants(model)
            self._protectors[model] = below.union(*(self.registry.ancestors(m) for m in below))
        return self._protectors[model]

    def _releases(self, waiting: _Waiting, changed: _Changed) -> bool:
        """Whether `changed` may let a waiting key go on.

        An upsert waits for an object it refers to (a create, for the ones it names that were missing,
        when it knows them); a delete for objects referring to it to go.
        """
        head = waiting.head
        if head.op is Op.UPSERT and waiting.awaits:  # a create: when what it names and Nautobot lacked is written
            return _wrote(waiting.awaits, changed)
        if head.op is Op.UPSERT:
            return bool(self.registry.ancestors(head.model) & changed.upserted)
        return bool(self._protectors_of(head.model) & (changed.upserted | changed.deleted))

    def _joining(self, changes: list[Change]) -> list[str]:
        """Waiting keys whose events fold, and that this step's changes may let go on: they join the step."""
        touched = _Changed.maybe(changes)  # what the step may change, before it does
        return [key for key, waiting in self.waiting.items() if waiting.folds and self._releases(waiting, touched)]

    def _ends_step(self) -> Callable[[Item], bool]:
        """Whether an event must end its step, so that a waiting key is tried right after it (`next_step`).

        It may lift what protects a waiting delete (it upserts or deletes a protecting object, or,
        when those are not known, any object of a model that may protect it), or let a waiting key
        go on whose events do not fold, and so cannot join a step.
        """
        blockers: set[str] = set()
        protectors: set[type[DiffSyncModel]] = set()
        parents: set[type[DiffSyncModel]] = set()
        for waiting in self.waiting.values():
            if waiting.head.op is Op.DELETE:
                if waiting.blockers is None:
                    protectors |= self._protectors_of(waiting.head.model)
                else:
                    blockers |= waiting.blockers
            elif not waiting.folds:
                parents |= self.registry.ancestors(waiting.head.model)
        return lambda item: (
            item.key in blockers or item.model in protectors or (item.op is Op.UPSERT and item.model in parents)
        )

    def _frees(self) -> Callable[[Item], list[Item]]:
        """The events of the waiting keys an event may let go on, directly or through another such key (`next_step`).

        Decided as `_joining` and `_retry` decide, by the models changed: a key let go on changes its own.
        Those keys are applied with the event's step, so it may not overtake an event they depend on.
        """
        waiting = list(self.waiting.values())
        if not waiting:
            return lambda item: []

        def frees(item: Item) -> list[Item]:
            touched = _Changed.maybe([item])
            freed: list[Item] = []
            rest = waiting
            while going := [w for w in rest if self._releases(w, touched)]:
                rest = [w for w in rest if all(w is not g for g in going)]
                for w in going:
                    freed += w.items
                    touched.add(_Changed.maybe(w.items))
            return freed

        return frees

    def _retry(self, changed: _Changed, tried: set[str]) -> _Changed:
        """Apply again the waiting keys, not `tried` in the step, that `changed` may let go on; again while it helps.

        Queue after queue, the oldest head first, as a retry or a later batch carries parked keys
        (`retry.take_due`, `retry.take_parked`): interleaved by batch order instead, one key's
        later events could let another go before the first key's queue is through.
        """
        total = _Changed()
        while changed:
            keys = [key for key, w in self.waiting.items() if key not in tried and self._releases(w, changed)]
            if not keys:
                break
            tried |= set(keys)
            queues = sorted((self.waiting.pop(key) for key in keys), key=lambda waiting: waiting.head.index)
            items = [item for waiting in queues for item in waiting.items]
            changed = self.apply(items)
            total.add(changed)
        return total

    def _relations(self, pending: list[Item]) -> Relations:
        """How the remaining events may affect each other: the models' relations, and unique values they may want."""
        possible = _Possible(self.registry, pending)

        def named(item: Item) -> list[tuple[type[DiffSyncModel], dict[str, Any]]]:
            return self.registry.named(item.model, {**item.attrs, **item.ids})

        return Relations(self.registry.related, possible.clash, named)

    # --- one step ---------------------------------------------------------------------------------

    def _apply_step(self, changes: list[Change]) -> _Changed:
        """The step's upserts, parents first, then its deletes, children first; each phase in rounds."""
        changed = _Changed()
        for op in (Op.UPSERT, Op.DELETE):
            for batch_round in rounds([c for c in changes if c.op is op]):
                changed.add(self._apply_round(batch_round))
        return changed

    def _apply_round(self, changes: list[Change]) -> _Changed:
        """Load one round's keys, then apply each change, again while failures that may pass later make progress.

        A later pass catches what ordering by model cannot: a location whose parent location is in
        the same round, a delete protected by a child that this round also deletes. A failure is
        tried again after a pass that wrote something; a failed create only after one that wrote
        an object it waits for (streamsync/sync/awaits.py), as a failed create costs a savepoint
        and a round of lookups.
        """
        from django.db import DataError

        clock = time.perf_counter
        started = clock()
        changed = _Changed()
        nautobot_cls, _ = adapter_classes(self.registry.in_order({c.model for c in changes}))
        try:
            nautobot = self._load(nautobot_cls, changes)
            loaded.offer(nautobot)  # what each object is before this round changes it, for the event broker
        except DataError as error:
            # A value the database cannot even compare (e.g. beyond a numeric column's range) fails the
            # round's one query: split it up so that the culprit fails alone.
            self.result.add_time("load", clock() - started)
            if len(changes) > 1:
                for change in changes:
                    changed.add(self._apply_round([change]))
                return changed
            change = changes[0]
            failed = ObjectResult(
                change.key, change.model.get_type(), Outcome.FAILED, reason(error), events=change.events
            )
            self._done(change, failed)
            return changed
        load_done = clock()
        diffing = self.result.timings.get("diff", 0.0)
        rank = {model: i for i, model in enumerate(self.registry.in_order({c.model for c in changes}))}

        def order(change: Change) -> tuple[int, int]:  # by model, then in the batch's order
            first = self.items[id(change.events[0])].index
            return (rank[change.model] if change.op is Op.UPSERT else -rank[change.model]), first

        todo = sorted(changes, key=order)
        held: list[tuple[_Failure, frozenset[Awaited] | None]] = []  # failed, with what they wait for
        first_pass = True
        while todo:
            retry: list[_Failure] = []
            wrote = _Changed()
            for model, run in itertools.groupby(todo, key=lambda change: change.model):
                one_by_one = list(run)
                if first_pass:  # a model's plain creates together, in its place among the models
                    one_by_one, created = self._bulk_creates(model, one_by_one, nautobot, order)
                    one_by_one, updated = self._bulk_updates(model, one_by_one, nautobot, order)
                    for change, outcome in [*created, *updated]:
                        self._done(change, outcome)
                        wrote.note(change, outcome.outcome)
                        changed.note(change, outcome.outcome)
                for change in one_by_one:
                    outcomes, failure = self._apply_change(change, nautobot)
                    for outcome in outcomes:
                        self._done(change, outcome)
                        wrote.note(change, outcome.outcome)
                        changed.note(change, outcome.outcome)
                    if failure is not None:
                        retry.append(failure)
            first_pass = False
            known: dict[Awaited, bool | None] = {}  # nothing is written while the pass's failures are looked at
            held += [(failure, self._missing(failure.change, nautobot, known)) for failure in retry]
            # Tried again in this round if this pass wrote something: a create only if it wrote what it waits for.
            again = {id(f) for f, waits in held if wrote and (waits is None or _wrote(waits, wrote))}
            todo = sorted((f.change for f, _ in held if id(f) in again), key=order)
            held = [(f, waits) for f, waits in held if id(f) not in again]
        for failure, waits in held:  # no progress for them: they wait
            items = [self.items[id(event)] for event in failure.change.events]
            self.waiting[failure.change.key] = _Waiting(failure.reason, items, failure.blockers, waits)
        self.result.add_time("load", load_done - started)
        self.result.add_time("save", clock() - load_done - (self.result.timings.get("diff", 0.0) - diffing))
        return changed

    def _missing(
        self, change: Change, nautobot: PartialNautobotAdapter, known: dict[Awaited, bool | None]
    ) -> frozenset[Awaited] | None:
        """For a create that failed, the objects its events name that Nautobot lacks (None: none, or not a create).

        `known`: what earlier looks of the same pass found, by awaited object (awaits.missing).
        """
        if change.op is not Op.UPSERT:
            return None
        if nautobot.get_or_none(change.model.get_type(), change.model.create_unique_id(**change.ids)) is not None:
            return None  # an update: the objects its attributes named before are there
        return awaits.missing(self.registry, change.model, {**change.attrs, **change.ids}, known) or None

    def _bulk_creates(
        self,
        model: type[DiffSyncModel],
        changes: list[Change],
        nautobot: PartialNautobotAdapter,
        order: Callable[[Change], Any],
    ) -> tuple[list[Change], list[tuple[Change, ObjectResult]]]:
        """Create the missing objects of one model's changes together (streamsync/sync/bulk.py), if it is bulk-safe.

        Each create is its first event's, as on the per-object path; returns what is left for that
        path (the changes not created here, and the later events of those created, in order) and
        the creates' outcomes. Whatever cannot be built goes there whole and fails there alone, with
        the reason it has there; a chunk that fails to be written goes there whole.
        """
        django_model = getattr(model, "_model", None)
        if not self.engine.bulk or changes[0].op is not Op.UPSERT or django_model is None:
            return changes, []
        if not bulk.bulk_safe(django_model):
            return changes, []
        model_name = model.get_type()
        rest: list[Change] = []
        ready: list[tuple[Change, Change, DiffSyncModel, bulk.Create]] = []
        for change in changes:
            unique_id = model.create_unique_id(**change.ids)
            if (model_name, unique_id) in nautobot.ambiguous or nautobot.get_or_none(model_name, unique_id) is not None:
                rest.append(change)  # an update, or a key the per-object path reports as ambiguous
                continue
            first = self._part(change, change.events[:1])
            try:
                src = model(**first.ids, **first.attrs)
                parameters = {**src.get_identifiers(), **src.get_attrs()}
                ready.append((change, first, src, bulk.build(model, nautobot, parameters)))
            except Exception as error:
                if is_transient(error):
                    raise
                rest.append(change)
        refused = bulk.refused([create for *_, create in ready])
        rest += [change for i, (change, *_) in enumerate(ready) if i in refused]
        ready = [one for i, one in enumerate(ready) if i not in refused]
        if len(ready) < 2:  # one create gains nothing: the per-object path, as before
            return changes, []
        try:
            bulk.write(model, [create for *_, create in ready])
        except Exception as error:
            if is_transient(error):
                raise
            nautobot.cache.invalidate_cache(zero_out_hits=False)
            log.info(
                "bulk chunk written one by one", model=model_name, op="create", size=len(ready), error=reason(error)
            )
            return changes, []
        created: list[tuple[Change, ObjectResult]] = []
        for change, first, src, create in ready:
            pk = create.instance.pk
            view = model.create_base(adapter=nautobot, ids=src.get_identifiers(), attrs=src.get_attrs())
            _remember(nautobot, view, pk)
            created.append((change, ObjectResult(change.key, model_name, Outcome.CREATED, events=first.events, pk=pk)))
            if len(change.events) > 1:
                rest.append(self._part(change, change.events[1:]))
        return sorted(rest, key=order), created

    def _bulk_updates(
        self,
        model: type[DiffSyncModel],
        changes: list[Change],
        nautobot: PartialNautobotAdapter,
        order: Callable[[Change], Any],
    ) -> tuple[list[Change], list[tuple[Change, ObjectResult]]]:
        """Update the existing objects of one model's changes together (streamsync/sync/bulkupdate.py), if bulk-safe.

        Each update is its change's events folded, as on the per-object path; returns what is left
        for that path (creates, changes the model refuses, the updates not written here) and the
        outcomes of the updates and of the changes that change nothing (diffed once, here). Whatever
        cannot be built goes there and fails there alone, with the reason it has there; a chunk that
        fails to be written goes there whole.
        """
        django_model = getattr(model, "_model", None)
        if not self.engine.bulk or not changes or changes[0].op is not Op.UPSERT or django_model is None:
            return changes, []  # none left: the bulk creates made them all
        if not bulk.bulk_safe(django_model):
            return changes, []
        started = time.perf_counter()
        rest, unchanged, wanted = self._updates_of(changes, nautobot)
        self.result.add_time("diff", time.perf_counter() - started)
        if len(wanted) < 2:  # one update gains nothing: the per-object path, as before
            return sorted([*rest, *(change for change, *_ in wanted)], key=order), unchanged
        left, updated = self._write_updates(model, wanted, nautobot)
        return sorted([*rest, *left], key=order), [*unchanged, *updated]

    def _updates_of(
        self, changes: list[Change], nautobot: PartialNautobotAdapter
    ) -> tuple[list[Change], list[tuple[Change, ObjectResult]], list[tuple[Change, DiffSyncModel, dict[str, Any]]]]:
        """The changes split as `_upsert` would take them.

        Not for an update (missing, ambiguous, refused by the model), changing nothing (with the
        outcome `_upsert` gives them), and updates (the object's view and what changes).
        """
        rest: list[Change] = []
        unchanged: list[tuple[Change, ObjectResult]] = []
        wanted: list[tuple[Change, DiffSyncModel, dict[str, Any]]] = []
        for change in changes:
            model = change.model
            unique_id = model.create_unique_id(**change.ids)
            dst = (
                None
                if (model.get_type(), unique_id) in nautobot.ambiguous
                else nautobot.get_or_none(model.get_type(), unique_id)
            )
            if dst is None:
                rest.append(change)
                continue
            whole = self._part(change, change.events)
            try:
                src = model(**whole.ids, **{**dst.get_attrs(), **whole.attrs})
            except ValidationError:
                rest.append(change)  # rejected there
                continue
            changed = diff.changed(src.get_attrs(), dst.get_attrs())
            if changed:
                wanted.append((change, dst, changed))
            else:
                outcome = ObjectResult(change.key, model.get_type(), Outcome.UNCHANGED, events=whole.events, pk=dst.pk)
                unchanged.append((change, outcome))
        return rest, unchanged, wanted

    def _write_updates(
        self,
        model: type[DiffSyncModel],
        wanted: list[tuple[Change, DiffSyncModel, dict[str, Any]]],
        nautobot: PartialNautobotAdapter,
    ) -> tuple[list[Change], list[tuple[Change, ObjectResult]]]:
        """Build, check and write the updates of `wanted` as one chunk; returns the changes left and the outcomes."""
        rows = bulkupdate.rows(model._model, [dst.pk for _, dst, _ in wanted])  # type: ignore[attr-defined]
        left: list[Change] = []
        ready: list[tuple[Change, DiffSyncModel, dict[str, Any], bulkupdate.Update]] = []
        for change, dst, changed in wanted:
            try:
                row = rows.by_pk.get(str(dst.pk))  # type: ignore[attr-defined]
                if row is None:
                    raise bulk.NotBulk("gone")  # the per-object path says so
                ready.append((change, dst, changed, bulkupdate.build(model, nautobot, row, changed)))
            except Exception as error:
                if is_transient(error):
                    raise
                left.append(change)
        everything = [change for change, *_ in wanted]
        try:
            refused = bulk.refused_rows([update.instance for *_, update in ready])
            refused |= bulkupdate.logged_already([update for *_, update in ready])
        except bulk.NotBulk:
            return everything, []
        left += [change for i, (change, *_) in enumerate(ready) if i in refused]
        ready = [one for i, one in enumerate(ready) if i not in refused]
        if len(ready) < 2:
            return everything, []
        try:
            bulkupdate.write(model, [update for *_, update in ready], rows.before)
        except Exception as error:
            if is_transient(error):
                raise
            nautobot.cache.invalidate_cache(zero_out_hits=False)
            # Correct, but at the per-object path's speed: worth seeing when a model's chunks keep failing.
            log.info(
                "bulk chunk written one by one",
                model=model.get_type(),
                op="update",
                size=len(ready),
                error=reason(error),
            )
            return everything, []
        updated: list[tuple[Change, ObjectResult]] = []
        for change, dst, changed, _ in ready:
            DiffSyncModel.update(dst, changed)  # the view, as contrib's update ends
            result = ObjectResult(change.key, model.get_type(), Outcome.UPDATED, events=change.events, pk=dst.pk)  # type: ignore[attr-defined]
            updated.append((change, result))
        return left, updated

    @staticmethod
    def _load(nautobot_cls: type[PartialNautobotAdapter], changes: list[Change]) -> PartialNautobotAdapter:
        """Load the changes' keys from Nautobot (only those: one round's), in a savepoint.

        A query PostgreSQL refuses aborts the transaction it runs in, and the engine runs inside its
        caller's (the worker's, around the batch and its parked events and state): in a savepoint
        only the load is undone, so the caller can go on with the batch split up.
        """
        from django.db import transaction

        keys: dict[str, list[dict[str, Any]]] = {}
        for change in changes:
            keys.setdefault(change.model.get_type(), []).append(change.ids)
        nautobot = nautobot_cls(keys=keys)
        with transaction.atomic():
            nautobot.load()
        return nautobot

    def _done(self, change: Change, outcome: ObjectResult) -> None:
        self.applied.append((change, outcome))

    # --- one object -------------------------------------------------------------------------------

    def _apply_change(
        self, change: Change, nautobot: PartialNautobotAdapter
    ) -> tuple[list[ObjectResult], _Failure | None]:
        """Diff and apply one object's change; returns the outcomes, and what failed in a way that may pass later.

        As batches of their own would: while the object is missing, each upsert tries to create it
        alone (one that cannot fails alone); the upserts after the create are folded into one
        update. If that fails, they are applied one by one: each fails alone, and one that may pass
        later holds back the rest.
        """
        model_name = change.model.get_type()
        unique_id = change.model.create_unique_id(**change.ids)

        def outcome(result: Outcome, events: list[Event], why: str = "") -> ObjectResult:
            return ObjectResult(change.key, model_name, result, why, events=events)

        if (model_name, unique_id) in nautobot.ambiguous:
            why = f"{model_name} {change.ids} matches more than one object in Nautobot"
            return [outcome(Outcome.FAILED, change.events, why)], None
        if change.op is Op.DELETE:
            return self._apply_delete(change, nautobot)
        events = change.events
        done: list[ObjectResult] = []
        while events:
            dst = nautobot.get_or_none(model_name, unique_id)
            if dst is None and (error := self._alone(change, events[0])) is not None:
                dst = nautobot.load_one(change.model, change.ids)  # it may have appeared since (a device's interfaces)
                if dst is None:  # it cannot create the object: it fails alone
                    done.append(outcome(Outcome.FAILED, events[:1], f"{model_name}: {describe(error)}"))
                    events = events[1:]
                    continue
            if dst is None:  # a create is the first event's alone: what follows is an update of what it made
                first = self._part(change, events[:1])
                done, failure = self._settle(first, self._upsert(first, nautobot, None)[0], done)
                if failure is not None:
                    return done, _Failure(self._part(change, events), failure.reason)
                events = events[1:]
                continue
            whole = self._part(change, events)
            written = self._upsert(whole, nautobot, dst)[0]
            if isinstance(written, ObjectResult) and written.outcome is not Outcome.FAILED:
                return [*done, written], None
            if len(events) == 1:
                return self._settle(whole, written, done)
            return self._one_by_one(change, events, nautobot, done)
        return done, None

    def _one_by_one(
        self, change: Change, events: list[Event], nautobot: PartialNautobotAdapter, done: list[ObjectResult]
    ) -> tuple[list[ObjectResult], _Failure | None]:
        """Upserts whose folded update failed, applied one at a time as batches of their own would apply them."""
        model_name = change.model.get_type()
        unique_id = change.model.create_unique_id(**change.ids)
        for position, event in enumerate(events):
            single = self._part(change, [event])
            dst = nautobot.get_or_none(model_name, unique_id) or nautobot.load_one(change.model, change.ids)
            done, failure = self._settle(single, self._upsert(single, nautobot, dst)[0], done)
            if failure is not None:
                return done, _Failure(self._part(change, events[position:]), failure.reason)
        return done, None

    def _settle(
        self, change: Change, written: ObjectResult | _Refused, before: list[ObjectResult]
    ) -> tuple[list[ObjectResult], _Failure | None]:
        """One write's outcome added to `before`: refused events are rejected, one that may pass later is retried."""
        if isinstance(written, _Refused):
            self.result.rejected.extend(Rejection(e, RejectCode.WRONG_TYPE, written.reason) for e in change.events)
            return before, None
        if written.outcome is Outcome.FAILED and written.retryable:
            return before, _Failure(change, written.reason)
        return [*before, written], None

    def _apply_delete(
        self, change: Change, nautobot: PartialNautobotAdapter
    ) -> tuple[list[ObjectResult], _Failure | None]:
        model_name = change.model.get_type()
        dst = nautobot.get_or_none(model_name, change.model.create_unique_id(**change.ids))
        if dst is None:
            return [ObjectResult(change.key, model_name, Outcome.UNCHANGED, events=change.events)], None  # already gone
        written, error = self._write(change, nautobot, lambda: (self.engine._delete(dst), dst.pk))
        if written.outcome is Outcome.DELETED:
            nautobot.remove(dst)
        if written.outcome is Outcome.FAILED and written.retryable and error is not None:
            return [], _Failure(change, written.reason, self._blockers(error, nautobot))
        return self._settle(change, written, [])

    def _blockers(self, error: BaseException, nautobot: PartialNautobotAdapter) -> frozenset[str] | None:
        """Keys of the registered objects that protect an object from deletion (None: more than MAX_BLOCKERS)."""
        from django.db.models import ProtectedError, RestrictedError

        found: list[Any] = []
        for cause in causes(error):
            if isinstance(cause, ProtectedError):
                found += itertools.islice(cause.protected_objects, MAX_BLOCKERS + 1)
            elif isinstance(cause, RestrictedError):
                found += itertools.islice(cause.restricted_objects, MAX_BLOCKERS + 1)
        if len(found) > MAX_BLOCKERS:
            return None
        keys = set()
        for obj in found:
            for model in self._bound.get(type(obj), []):
                ids: dict[str, Any] = {}
                with contextlib.suppress(Exception):  # a key it cannot read only means fewer early retries
                    for name in model._identifiers:
                        nautobot._handle_single_parameter(ids, name, obj, model)
                    keys.add(canonical_key(model.get_type(), ids))
        return frozenset(keys)

    def _upsert(
        self, change: Change, nautobot: PartialNautobotAdapter, dst: Any
    ) -> tuple[ObjectResult | _Refused, BaseException | None]:
        """Create `change`'s object, or update what its attributes change; attributes it omits keep their values."""
        started = time.perf_counter()
        model_name = change.model.get_type()
        base = dst.get_attrs() if dst is not None else {}
        try:
            src = change.model(**change.ids, **{**base, **change.attrs})
        except ValidationError as error:
            why = f"{model_name}: {describe(error)}"
            if dst is not None:
                return _Refused(why), None
            return ObjectResult(change.key, model_name, Outcome.FAILED, why, events=change.events), None
        if dst is None:
            self.result.add_time("diff", time.perf_counter() - started)
            return self._create_or_adopt(change, nautobot, src)
        changed = diff.changed(src.get_attrs(), dst.get_attrs())
        self.result.add_time("diff", time.perf_counter() - started)
        if not changed:
            return ObjectResult(change.key, model_name, Outcome.UNCHANGED, events=change.events, pk=dst.pk), None
        return self._write(change, nautobot, lambda: (_update(dst, changed), dst.pk))

    def _create_or_adopt(
        self, change: Change, nautobot: PartialNautobotAdapter, src: DiffSyncModel
    ) -> tuple[ObjectResult, BaseException | None]:
        """Create the object in a savepoint; if it exists by now (a device type's interfaces), update it instead.

        Adopting updates only what the events name: the rest is the existing object's, not defaults.
        """
        written, error = self._write(change, nautobot, lambda: self.engine._create(change, nautobot, src))
        if error is None:
            return written, None
        existing = nautobot.load_one(change.model, change.ids)
        if existing is None:
            return written, error
        changed = diff.changed(change.attrs, existing.get_attrs())
        if not changed:
            unchanged = ObjectResult(change.key, written.model, Outcome.UNCHANGED, events=change.events, pk=existing.pk)
            return unchanged, None
        return self._write(change, nautobot, lambda: (_update(existing, changed), existing.pk))

    @staticmethod
    def _write(
        change: Change, nautobot: PartialNautobotAdapter, action: Callable[[], tuple[Outcome, Any]]
    ) -> tuple[ObjectResult, BaseException | None]:
        """Run one write in a savepoint: its failure is its own object's (returned with the error).

        A failed write is rolled back in the database, not in the ORM objects contrib caches in the
        adapter (`get_from_db`): the next write of the object would start from the refused values.
        The cache is emptied instead.
        """
        from django.db import transaction

        model_name = change.model.get_type()
        try:
            with transaction.atomic():
                outcome, pk = action()
        except Exception as error:  # one object's failure must not fail the batch...
            kind = classify(error)
            if kind is Fault.TRANSIENT:
                raise  # ...but the infrastructure's fails it: the whole batch is tried again
            nautobot.cache.invalidate_cache(zero_out_hits=False)
            failed = ObjectResult(
                change.key, model_name, Outcome.FAILED, reason(error), kind is Fault.WAITING, change.events
            )
            return failed, error
        return ObjectResult(change.key, model_name, outcome, events=change.events, pk=pk), None

    def _alone(self, change: Change, event: Event) -> ValidationError | None:
        """Why `event`'s attributes cannot make the object on their own, or None."""
        return _incomplete(change.model, change.ids, self.items[id(event)].attrs)

    def _part(self, change: Change, events: Sequence[Event]) -> Change:
        """`change` made of some of its events only."""
        attrs: dict[str, Any] = {}
        for event in events:
            attrs.update(self.items[id(event)].attrs)
        return Change(change.model, change.ids, change.op, attrs, events=list(events))


def _incomplete(model: type[DiffSyncModel], ids: dict[str, Any], attrs: dict[str, Any]) -> ValidationError | None:
    """Why these attributes make no object of `model` on their own (a required one missing), or None."""
    try:
        model(**ids, **attrs)
    except ValidationError as error:
        return error
    return None
