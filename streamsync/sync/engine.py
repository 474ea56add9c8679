"""Apply a batch of change events to Nautobot as one incremental diff.

The hot path, in order:

1. fold the events per canonical key into one net change per object;
2. load only the batch's keys from Nautobot (one query per model);
3. build the remote side from the changes (attributes they omit keep Nautobot's values);
4. diff each object and apply it through nautobot_ssot.contrib's generic CRUD, creates and
   updates in model dependency order, deletes in reverse, each object in its own savepoint,
   all inside one transaction and one change context attributed to the streamsync user.

The user comes from the caller (`Writer`): the engine asks it for the user at the start of every
batch, in the batch's transaction, and a user that may not write (missing, inactive, lacking a
permission) fails the whole batch before anything is written.

Steps 2 to 4 run once per round (`rounds()`): a batch whose keys share a DiffSync unique id is
applied as several, one after the other, in the same transaction and change context.

Nothing here knows about Kafka, so it can be run and tested on its own. It runs synchronously:
callers on an event loop run it in a worker thread.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from diffsync import DiffSyncModel
from diffsync.exceptions import ObjectAlreadyExists, ObjectNotDeleted
from pydantic import ValidationError

from streamsync.contract.envelope import Event, Op, RejectCode, canonical_key, describe
from streamsync.sync import diff, loaded, ownership
from streamsync.sync.adapters import EventAdapter, PartialNautobotAdapter, adapter_classes
from streamsync.sync.faults import Fault, classify, is_transient, reason
from streamsync.sync.readcache import batch_cache
from streamsync.sync.registry import ModelRegistry, RejectedEvent


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


@dataclass
class BatchResult:
    """What one batch did, object by object, and where its time went."""

    batch_id: str
    received: int
    objects: list[ObjectResult] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

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


def fold(
    events: Sequence[Event], registry: ModelRegistry, source: str = ""
) -> tuple[dict[str, Change], list[Rejection]]:
    """Fold events (in partition order) into one change per canonical key.

    Upserts merge, later attributes winning; a delete wins over what came before it; an upsert
    after a delete recreates. Events that do not fit their model, or come from another source
    than the one being applied, are rejected here.
    """
    changes: dict[str, Change] = {}
    rejected: list[Rejection] = []
    for event in events:
        if source and event.source != source:
            reason = f"event from source {event.source!r} on source {source!r}'s topic"
            rejected.append(Rejection(event, RejectCode.WRONG_SOURCE, reason))
            continue
        try:
            model, ids, attrs = registry.split(event)
        except RejectedEvent as error:
            rejected.append(Rejection(event, error.code, error.reason))
            continue
        key = canonical_key(event.model, ids)  # "2001:DB8::1" and "2001:db8::1" are one object
        previous = changes.get(key)
        if event.op is Op.DELETE:
            change = Change(model, ids, Op.DELETE)
        elif previous is None:
            change = Change(model, ids, Op.UPSERT, attrs)
        elif previous.op is Op.DELETE:
            change = Change(model, ids, Op.UPSERT, attrs, recreated=True)
        else:
            change = Change(model, ids, Op.UPSERT, {**previous.attrs, **attrs}, recreated=previous.recreated)
        change.events = [*(previous.events if previous else []), event]
        changes[key] = change
    return changes, rejected


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


class SyncEngine:
    """Turns batches of events into the smallest set of writes in Nautobot, as the user its caller gives."""

    def __init__(self, registry: ModelRegistry, writer: Writer, changelog: ChangeLog | None = None) -> None:
        self.registry = registry
        self.writer = writer
        self.changelog = changelog or ChangeLog()

    def apply(self, events: Sequence[Event], *, source: str = "") -> BatchResult:
        """Apply `events` (in partition order) to Nautobot and report what happened to each object.

        Raises the writer's OperatorFault, with nothing written, when its user may not write: checked
        for every batch, even one that changes nothing, so that a blocked writer settles nothing.
        """
        from django.db import transaction

        started = time.perf_counter()
        result = BatchResult(batch_id=str(uuid.uuid4()), received=len(events))
        # One transaction (the caller's, when it has one) for the check and the writes it allows, and
        # Nautobot's configuration read once for all of them (readcache).
        with transaction.atomic(), batch_cache(self.registry):
            user = self.writer.user()
            result.add_time("check", time.perf_counter() - started)
            changes, result.rejected = fold(events, self.registry, source)
            if changes:
                self._apply_changes(list(changes.values()), source, user, result)
        result.timings["total"] = time.perf_counter() - started
        return result

    def _apply_changes(self, changes: list[Change], source: str, user: Any, result: BatchResult) -> None:
        """Apply `changes` round by round (`rounds()`) in one change context, adding to `result`.

        Runs in `apply`'s transaction: the change log commits with the data it describes.
        """
        from nautobot.extras.context_managers import web_request_context

        adapters = adapter_classes(self.registry.in_order({c.model for c in changes}))
        applied: list[tuple[Change, ObjectResult]] = []
        changelog = self.changelog
        context = web_request_context(user, context_detail=changelog.detail(source), context=changelog.context)
        with context, loaded.scope():
            for batch_round in rounds(changes):
                applied += self._apply_round(batch_round, adapters, result)
            started = time.perf_counter()
            if source:  # what the source created, updated or asserted is its own (docs/resync.md)
                ownership.record(source, [(c.model, c.op, o) for c, o in applied])
            saved = time.perf_counter()
            result.add_time("save", saved - started)
        result.add_time("changelog", time.perf_counter() - saved)
        result.objects.extend(in_batch_order(changes, [o for _, o in applied]))

    def _apply_round(
        self,
        changes: list[Change],
        adapters: tuple[type[PartialNautobotAdapter], type[EventAdapter]],
        result: BatchResult,
    ) -> list[tuple[Change, ObjectResult]]:
        """Load, diff and apply one round's changes; returns each applied change with its outcome.

        Changes rejected while the remote side is built go to `result.rejected` and have no outcome.
        """
        from django.db import DataError

        clock = time.perf_counter
        started = clock()
        nautobot_cls, remote_cls = adapters
        try:
            nautobot = self._load(nautobot_cls, changes)
            loaded.offer(nautobot)  # what each object is before this round changes it, for the event broker
        except DataError as error:
            # A value the database cannot even compare (e.g. beyond a numeric column's range) fails the
            # round's one query: split it up so that the culprit fails alone.
            result.add_time("load", clock() - started)
            if len(changes) > 1:
                return [applied for change in changes for applied in self._apply_round([change], adapters, result)]
            change = changes[0]
            failed = ObjectResult(
                change.key, change.model.get_type(), Outcome.FAILED, reason(error), events=change.events
            )
            return [(change, failed)]
        load_done = clock()
        remote = remote_cls()
        pending = self._build_remote(changes, nautobot, remote, result)
        built = clock()
        objects = self._apply_all(pending, nautobot, remote)
        for name, seconds in (("load", load_done - started), ("diff", built - load_done), ("save", clock() - built)):
            result.add_time(name, seconds)
        return list(zip(pending, objects, strict=True))

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

    @staticmethod
    def _build_remote(
        changes: list[Change], nautobot: PartialNautobotAdapter, remote: EventAdapter, result: BatchResult
    ) -> list[Change]:
        """Add each upsert's wanted object to `remote`; returns the changes to apply, rejections go to `result`.

        Attributes an upsert omits take the object's current values (none for a recreated object).
        """
        pending: list[Change] = []
        for change in changes:
            if change.op is Op.UPSERT:
                existing = None if change.recreated else nautobot.get_or_none(change.model, change.ids)
                base = existing.get_attrs() if existing is not None else {}
                try:
                    remote.add(change.model(**change.ids, **{**base, **change.attrs}))
                except ValidationError as error:
                    if existing is None and not change.recreated:
                        # Incomplete for a create; the object may still appear earlier in this batch
                        # (interfaces from a device type's templates): decided when its turn comes.
                        pending.append(change)
                        continue
                    reason = f"{change.model.get_type()}: {describe(error)}"
                    result.rejected.extend(Rejection(event, RejectCode.WRONG_TYPE, reason) for event in change.events)
                    continue
            pending.append(change)
        return pending

    def _apply_all(
        self, changes: list[Change], nautobot: PartialNautobotAdapter, remote: EventAdapter
    ) -> list[ObjectResult]:
        """Creates and updates parents first, deletes children first; retry in-batch while that helps.

        A later pass catches what ordering by model cannot: a location whose parent location is
        in the same batch, a delete protected by a child that this batch also deletes.
        """
        rank = {model: i for i, model in enumerate(self.registry.in_order({c.model for c in changes}))}
        upserts = sorted((c for c in changes if c.op is Op.UPSERT), key=lambda c: rank[c.model])
        deletes = sorted((c for c in changes if c.op is Op.DELETE), key=lambda c: -rank[c.model])
        todo = upserts + deletes
        results: dict[str, ObjectResult] = {}
        while todo:
            retry = []
            for change in todo:
                outcome = self._apply_one(change, nautobot, remote)
                results[change.key] = outcome
                if outcome.outcome is Outcome.FAILED and outcome.retryable:
                    retry.append(change)
            if len(retry) == len(todo):
                break  # no progress: what is left fails for this batch
            todo = retry
        return [results[c.key] for c in changes]

    def _apply_one(self, change: Change, nautobot: PartialNautobotAdapter, remote: EventAdapter) -> ObjectResult:
        """Diff and apply one object in a savepoint: its failure is its own."""
        from django.db import transaction

        model_name = change.model.get_type()
        unique_id = change.model.create_unique_id(**change.ids)
        dst = nautobot.get_or_none(model_name, unique_id)
        src = remote.get_or_none(model_name, unique_id)

        def done(outcome: Outcome, reason: str = "", retryable: bool = False, pk: Any = None) -> ObjectResult:
            return ObjectResult(change.key, model_name, outcome, reason, retryable, change.events, pk)

        if (model_name, unique_id) in nautobot.ambiguous:
            return done(Outcome.FAILED, f"{model_name} {change.ids} matches more than one object in Nautobot")
        if change.op is Op.UPSERT and src is None:
            # Deferred at build time: complete it from the object if it has appeared since.
            dst = nautobot.load_one(change.model, change.ids)
            try:
                src = change.model(**change.ids, **{**(dst.get_attrs() if dst else {}), **change.attrs})
            except ValidationError as error:
                return done(Outcome.FAILED, f"{model_name}: {describe(error)}")
            remote.add(src)

        action: Callable[[], tuple[Outcome, Any]]
        if src is None:
            if dst is None:
                return done(Outcome.UNCHANGED)  # deleting what is already gone
            action = lambda: (self._delete(dst), dst.pk)  # noqa: E731
        elif dst is None:
            action = lambda: self._create_or_adopt(change, nautobot, src)  # noqa: E731
        else:
            changed = diff.changed(src.get_attrs(), dst.get_attrs())
            if not changed:
                return done(Outcome.UNCHANGED, pk=dst.pk)
            action = lambda: (_update(dst, changed), dst.pk)  # noqa: E731
        try:
            with transaction.atomic():
                outcome, pk = action()
        except Exception as error:  # one object's failure must not fail the batch...
            kind = classify(error)
            if kind is Fault.TRANSIENT:
                raise  # ...but the infrastructure's fails it: the whole batch is tried again
            return done(Outcome.FAILED, reason(error), kind is Fault.WAITING)
        if outcome is Outcome.DELETED and dst is not None:
            nautobot.remove(dst)
        return done(outcome, pk=pk)

    @staticmethod
    def _delete(dst: DiffSyncModel) -> Outcome:
        """Delete; an object already gone (cascaded with its parent earlier in the batch) counts as deleted."""
        try:
            dst.delete()
        except ObjectNotDeleted:
            if type(dst)._model.objects.filter(pk=dst.pk).exists():  # type: ignore[attr-defined]
                raise
        return Outcome.DELETED

    def _create_or_adopt(
        self, change: Change, nautobot: PartialNautobotAdapter, src: DiffSyncModel
    ) -> tuple[Outcome, Any]:
        """Create the object; if it exists by now (e.g. interfaces from a device type's templates), update it.

        Adopting updates only what the events name: the rest is the existing object's, not defaults.
        Returns the outcome and the object's primary key.
        """
        from django.db import transaction

        ids = src.get_identifiers()
        try:
            with transaction.atomic():
                created = change.model.create(adapter=nautobot, ids=ids, attrs=src.get_attrs())
        except Exception as error:
            if is_transient(error):
                raise
            existing = nautobot.load_one(change.model, change.ids)
            if existing is None:
                raise
            changed = diff.changed(change.attrs, existing.get_attrs())
            return (_update(existing, changed) if changed else Outcome.UNCHANGED), existing.pk
        # contrib's create() does not hand back the new row: one indexed lookup, for creates only.
        pk = change.model.get_queryset().filter(**ids).values_list("pk", flat=True).first()  # type: ignore[attr-defined]
        if created is not None:
            created.pk = pk  # type: ignore[attr-defined]
            with contextlib.suppress(ObjectAlreadyExists):
                nautobot.add(created)
        return Outcome.CREATED, pk
