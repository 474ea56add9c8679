"""Full resync: the state topic's picture of a source, diffed against Nautobot and applied.

    read (state topic to its end) → plan (one load per model) → summary → apply (engine, in chunks)
      → catch up (records workers added to the topic meanwhile)

The safety net for whatever streaming missed: hand edits in Nautobot, a restored database, a
snapshot's tombstones. Scope is what the source owns (streamsync.sync.ownership): objects the state
names are created or updated; owned objects the state does not name are deleted; an object
neither owned nor named is never touched. A planned delete is applied only to the very object
the plan found, still owned and unchanged (streamsync.ops.guard): the apply may come long after.

Built for a whole source at once (10,000s of objects): the topic is kept as raw bytes per key
and decoded one model at a time; Nautobot is read once per model, in chunks; unchanged objects
cost no query of their own; only the objects that differ go through `SyncEngine.apply`, which
records ownership like any batch. Every function here is synchronous, for the CLI and for a
Nautobot Job alike; `progress(phase, done, total)` reports how far each phase got.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from streamsync.contract.envelope import EnvelopeError, Event, Op, decode, describe
from streamsync.contract.topics import state_topic
from streamsync.kafka.admin import TopicRefused, TopicSpec, ensure_topics
from streamsync.kafka.connection import KafkaConnection
from streamsync.ops import cascade, guard
from streamsync.ops.columns import format_table
from streamsync.ops.guard import PlannedDelete
from streamsync.ops.statetopic import StateRead, read_state
from streamsync.sync import diff, ownership
from streamsync.sync.state import identifiers_of, model_of

if TYPE_CHECKING:
    from diffsync import DiffSyncModel

    from streamsync.sync.batch import BatchResult, ObjectResult
    from streamsync.sync.engine import SyncEngine
    from streamsync.sync.registry import ModelRegistry

# (phase, done, total): phases are "read", "plan", "cascade" and "apply".
Progress = Callable[[str, int, int], None]

# Objects per engine batch when applying: one transaction and change context each.
CHUNK_SIZE = 500
# Reads of the state topic's tail after an apply, while workers keep adding to it.
CATCH_UP_ROUNDS = 3


class ResyncError(RuntimeError):
    """A resync that cannot start (no state topic, or one that is not compacted); the message says what to do."""


@dataclass
class ModelCounts:
    """What a resync does to one model's objects."""

    create: int = 0
    update: int = 0
    delete: int = 0
    unchanged: int = 0
    claim: int = 0  # unchanged, not owned yet: becomes the source's

    @property
    def changes(self) -> int:
        """Objects written to."""
        return self.create + self.update + self.delete


@dataclass(frozen=True)
class Problem:
    """A state record or object the resync leaves alone, and why."""

    key: str
    reason: str


@dataclass
class ResyncPlan:
    """The difference between the state topic and Nautobot, for one source; `apply` carries it out."""

    source: str
    # The state as read: per live key its record (bytes), decoded again only for what is applied.
    state: dict[str, bytes]
    # Upserts in model dependency order (parents first): keys into `state`.
    upserts: list[str] = field(default_factory=list)
    # Owned objects the state lacks, children first: delete events by their current identifiers,
    # with the primary key and fingerprint of the object found, which the apply checks again.
    deletes: list[PlannedDelete] = field(default_factory=list)
    # Unowned objects that already match the state: (model, key, primary key) to claim.
    claims: list[tuple[type[DiffSyncModel], str, Any]] = field(default_factory=list)
    counts: dict[str, ModelCounts] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    records_read: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    # Where the state was read from, and up to which offset per partition: what `catch_up` reads on from.
    kafka: KafkaConnection | str | None = None
    topic: str = ""
    ends: dict[int, int] = field(default_factory=dict)

    @property
    def changes(self) -> int:
        """Objects the apply would write to."""
        return len(self.upserts) + len(self.deletes)

    def totals(self) -> ModelCounts:
        """The counts summed over every model."""
        total = ModelCounts()
        for counts in self.counts.values():
            for name in ("create", "update", "delete", "unchanged", "claim"):
                setattr(total, name, getattr(total, name) + getattr(counts, name))
        return total


@dataclass
class ResyncResult:
    """What the apply did: per model and outcome, and the objects that failed."""

    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    failed: list[ObjectResult] = field(default_factory=list)
    rejected: list[Problem] = field(default_factory=list)
    # Planned deletes not applied: the object changed, was replaced or is no longer owned since the plan.
    left_alone: list[Problem] = field(default_factory=list)
    claimed: int = 0
    # Keys applied again because workers changed them while the resync ran.
    caught_up: int = 0
    seconds: float = 0.0

    def count(self, outcome: str) -> int:
        """Objects with this outcome, over every model."""
        return sum(per.get(outcome, 0) for per in self.outcomes.values())


def read(kafka: KafkaConnection | str, source: str, prefix: str, progress: Progress | None = None) -> StateRead:
    """Read `source`'s state topic to its current end (the latest record per key)."""
    topic = state_topic(source, prefix)
    report = (lambda done, total: progress("read", done, total)) if progress else None
    try:
        # A state topic under retention has lost objects: applying it would delete them from Nautobot.
        asyncio.run(ensure_topics(kafka, [TopicSpec(topic, compacted=True)], create=False))
    except TopicRefused as error:
        raise ResyncError(str(error)) from None
    state = asyncio.run(read_state(kafka, topic, progress=report))
    if not state.exists:
        raise ResyncError(
            f"no state topic {topic}: a worker creates it for the sources it runs, "
            f"and `streamsync snapshot {source} --adapter ...` fills it from an existing adapter"
        )
    return state


def plan(source: str, registry: ModelRegistry, state: StateRead, progress: Progress | None = None) -> ResyncPlan:
    """Compare the state with Nautobot, model by model (parents first): one load per model."""
    started = time.perf_counter()
    live = state.live()
    result = ResyncPlan(
        source=source, state=live, records_read=state.records, kafka=state.kafka, topic=state.topic, ends=state.ends
    )
    by_model: dict[str, list[str]] = {}
    for key in live:
        by_model.setdefault(model_of(key), []).append(key)
    for name in sorted(set(by_model) - set(registry.names())):
        reason = f"model {name!r} is not one source {source!r} writes; its records are ignored"
        result.problems.append(Problem(f"{name}:*", f"{len(by_model[name])} record(s): {reason}"))

    models = registry.in_order(registry)
    done = 0
    deletes: list[list[PlannedDelete]] = []
    for model in models:
        name = model.get_type()
        deletes.append(_plan_model(result, model, registry, by_model.get(name, [])))
        done += len(by_model.get(name, []))
        if progress is not None:
            progress("plan", done, len(live))
    result.deletes = [event for per_model in reversed(deletes) for event in per_model]
    result.seconds["plan"] = time.perf_counter() - started
    return result


def _plan_model(
    plan: ResyncPlan, model: type[DiffSyncModel], registry: ModelRegistry, keys: list[str]
) -> list[PlannedDelete]:
    """Plan one model's upserts and claims into `plan`; returns its deletes."""
    from streamsync.sync.adapters import adapter_classes

    name = model.get_type()
    counts = plan.counts.setdefault(name, ModelCounts())
    wanted: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}  # unique id -> key, ids, attrs
    for key in keys:
        try:
            event = decode(plan.state[key])
            _, ids, attrs = registry.split(event)
        except EnvelopeError as error:
            plan.problems.append(Problem(key, error.reason))
            continue
        if event.source != plan.source:
            plan.problems.append(Problem(key, f"a record of source {event.source!r} on {plan.source!r}'s state topic"))
            continue
        wanted[model.create_unique_id(**ids)] = (key, ids, attrs)

    owned = ownership.owned_ids(plan.source, model)
    if not wanted and not owned:
        return []  # nothing of this model is the source's: no need to read the table
    nautobot_cls, _ = adapter_classes([model])
    nautobot = nautobot_cls(keys=None)
    nautobot.load()
    for unique_id, (key, ids, attrs) in wanted.items():
        if (name, unique_id) in nautobot.ambiguous:
            plan.problems.append(Problem(key, f"{name} {ids} matches more than one object in Nautobot"))
            continue
        dst = nautobot.get_or_none(model, unique_id)
        if dst is None:
            counts.create += 1
            plan.upserts.append(key)
            continue
        current = dst.get_attrs()
        try:
            # As the engine builds it: what the state names, over what Nautobot has.
            src = model(**ids, **{**current, **attrs})
        except ValidationError as error:
            plan.problems.append(Problem(key, f"{name}: {describe(error)}"))
            continue
        if diff.changed(src.get_attrs(), current):
            counts.update += 1
            plan.upserts.append(key)
        else:
            counts.unchanged += 1
            if dst.pk not in owned:
                counts.claim += 1
                plan.claims.append((model, key, dst.pk))

    doomed = [dst for dst in nautobot.get_all(model) if dst.pk in owned and dst.get_unique_id() not in wanted]
    # What each looks like now: the apply deletes it only if it still does (streamsync.ops.guard).
    marks = guard.fingerprints(model._model, [dst.pk for dst in doomed]) if doomed else {}  # type: ignore[attr-defined]
    deletes = []
    for dst in doomed:
        if dst.pk in marks:  # else deleted while this was planned
            event = Event(source=plan.source, model=name, op=Op.DELETE, key=to_jsonable_python(dst.get_identifiers()))
            counts.delete += 1
            deletes.append(PlannedDelete(event, dst.pk, marks[dst.pk]))
    return deletes


def cascade_of(plan: ResyncPlan, registry: ModelRegistry, progress: Progress | None = None) -> cascade.CascadeReport:
    """What the plan's deletes would take with them: Django's cascade, collected read-only (streamsync.ops.cascade)."""
    roots = [
        cascade.Root(registry.get(delete.event.model)._model, delete.pk, delete.key)  # type: ignore[attr-defined]
        for delete in plan.deletes
    ]
    report = (lambda done, total: progress("cascade", done, total)) if progress else None
    with cascade.read_only():
        return cascade.collect(roots, progress=report)


def apply(
    plan: ResyncPlan, engine: SyncEngine, progress: Progress | None = None, chunk_size: int = CHUNK_SIZE
) -> ResyncResult:
    """Carry out `plan` through the engine, `chunk_size` objects per transaction; claim what already matched.

    Deletes go first (children first), then creates and updates (parents first), never in one
    chunk: an owned object renamed by hand must be gone before the state's object takes its
    unique name. A planned delete is applied only if its object is still the one planned, owned
    and unchanged (`guard.admit`, under row locks in the chunk's transaction); the others are left
    alone and reported. Creates and updates are diffed again as they are applied, so an object
    that changed since the plan gets what the state says, not what the plan saw. Then the records
    that reached the state topic since it was read (workers kept going) are applied too (`catch_up`).
    """
    started = time.perf_counter()
    result = ResyncResult()
    total = plan.changes + len(plan.claims)

    def report(done: int) -> None:
        if progress is not None:
            progress("apply", done, total)

    deleted = _apply_deletes(plan.source, engine, result, plan.deletes, chunk_size, report)
    # Upserts are decoded a chunk at a time: the plan keeps only the state's bytes.
    upserts = (decode(plan.state[key]) for key in plan.upserts)
    done = deleted + _apply_events(plan.source, engine, result, upserts, chunk_size, lambda n: report(deleted + n))
    if plan.claims:
        result.claimed = _claim(plan)
        report(done + len(plan.claims))
    catch_up(plan, engine, result, chunk_size)
    result.seconds = time.perf_counter() - started
    return result


def _apply_events(
    source: str,
    engine: SyncEngine,
    result: ResyncResult,
    work: Iterator[Event],
    chunk_size: int,
    report: Callable[[int], None],
) -> int:
    """Apply upserts in chunks, one engine batch (and transaction) each; returns how many were applied."""
    done = 0
    while events := list(itertools.islice(work, chunk_size)):
        _tally(result, engine.apply(events, source=source))
        done += len(events)
        report(done)
    return done


def _apply_deletes(
    source: str,
    engine: SyncEngine,
    result: ResyncResult,
    deletes: Sequence[PlannedDelete],
    chunk_size: int,
    report: Callable[[int], None],
) -> int:
    """Apply planned deletes in chunks, each admitted under its row's lock in the chunk's transaction."""
    from django.db import transaction

    done = 0
    for start in range(0, len(deletes), chunk_size):
        chunk = deletes[start : start + chunk_size]
        with transaction.atomic():  # the locks `admit` takes hold until the engine has deleted
            admission = guard.admit(source, engine.registry, chunk)
            if admission.admitted:
                _tally(result, engine.apply([delete.event for delete in admission.admitted], source=source))
        for delete in admission.gone:  # nothing left to delete, as the engine counts it
            per_model = result.outcomes.setdefault(delete.event.model, {})
            per_model["unchanged"] = per_model.get("unchanged", 0) + 1
        result.left_alone += [Problem(delete.key, reason) for delete, reason in admission.left_alone]
        done += len(chunk)
        report(done)
    return done


def _tally(result: ResyncResult, batch: BatchResult) -> None:
    """Add one engine batch's outcomes, failures and rejections to `result`."""
    for obj in batch.objects:
        per_model = result.outcomes.setdefault(obj.model, {})
        per_model[obj.outcome.value] = per_model.get(obj.outcome.value, 0) + 1
    result.failed += batch.failed
    result.rejected += [Problem(r.event.canonical_key, r.reason) for r in batch.rejected]


def catch_up(plan: ResyncPlan, engine: SyncEngine, result: ResyncResult, chunk_size: int = CHUNK_SIZE) -> None:
    """Apply what workers put on the state topic while the resync ran, so the older state read does not win.

    A worker produces a key's record right after committing it: a record past the read's end means
    Nautobot had that change, and the resync may have written the older state over it. Its full
    state is applied again (a tombstone deletes the object if the source owns it), until a read of
    the tail finds nothing new (at most `CATCH_UP_ROUNDS` times).
    """
    from streamsync.models.bookkeeping import OwnedObject

    if plan.kafka is None:  # a plan not made from a read of the topic
        return
    ends = plan.ends
    for _ in range(CATCH_UP_ROUNDS):
        tail = asyncio.run(read_state(plan.kafka, plan.topic, since=ends))
        ends = {**ends, **tail.ends}
        if not tail.values:
            return
        upserts: list[Event] = []
        for key, value in tail.live().items():
            try:
                upserts.append(decode(value))
            except EnvelopeError as error:
                result.rejected.append(Problem(key, error.reason))
        gone = [key for key, value in tail.values.items() if value is None]
        owned = OwnedObject.objects.filter(source=plan.source, key__in=gone).values_list("key", "object_id")
        # By the owned object's primary key: the key's identifiers may name someone else's object by now.
        deletes = [
            PlannedDelete(Event(source=plan.source, model=model_of(key), op=Op.DELETE, key=identifiers_of(key)), pk)
            for key, pk in owned
            if model_of(key) in engine.registry
        ]
        result.caught_up += len(upserts) + len(deletes)
        _apply_deletes(plan.source, engine, result, deletes, chunk_size, lambda done: None)
        _apply_events(plan.source, engine, result, iter(upserts), chunk_size, lambda done: None)


def _claim(plan: ResyncPlan) -> int:
    from django.db import transaction

    with transaction.atomic():
        return ownership.claim(plan.source, plan.claims)


def format_summary(plan: ResyncPlan) -> str:
    """The plan as a table: per model, objects to create, update and delete, unchanged, and to claim."""
    header = ("MODEL", "CREATE", "UPDATE", "DELETE", "UNCHANGED", "CLAIM")
    rows = [(name, c) for name, c in plan.counts.items() if c.changes or c.unchanged or c.claim]
    body = [
        (name, str(c.create), str(c.update), str(c.delete), str(c.unchanged), str(c.claim))
        for name, c in [*rows, ("total", plan.totals())]
    ]
    return format_table(header, body, numeric_from=1)


def describe_problems(problems: Sequence[Problem], limit: int = 50) -> list[str]:
    """One line per problem (the first `limit`): "vlan:{...}: changed since the plan: left alone"."""
    lines = [f"{p.key}: {p.reason}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    return lines


def describe_failures(failed: Sequence[ObjectResult], limit: int = 50) -> list[str]:
    """One line per failed object (the first `limit`)."""
    lines = [f"{f.key}: {f.reason}" for f in failed[:limit]]
    if len(failed) > limit:
        lines.append(f"... and {len(failed) - limit} more")
    return lines
