"""Apply a batch of Nautobot's change events to a target through its DiffSync models.

Like the engine that writes Nautobot, mirrored: fold the events per key, load only the batch's keys
from the target (`TargetAdapter.load_keys`), diff each object and call the target model's `create`
/ `update` / `delete`, parents before children (deletes the other way round), each object's failure
its own; an object deleted and created again in the batch is deleted, then created anew. Keys whose
DiffSync unique ids collide are loaded and applied in rounds of their own
(`streamsync.sync.batch.rounds`), one after the other, before the one commit. Nothing here knows
about Kafka.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from diffsync import DiffSyncModel

from streamsync.contract.envelope import Event, Op
from streamsync.contract.topics import NAUTOBOT
from streamsync.sync import diff
from streamsync.sync.batch import BatchResult, Change, ObjectResult, Outcome, fold, in_batch_order, rounds
from streamsync.sync.faults import is_transient, reason
from streamsync.sync.registry import ModelRegistry
from streamsync.targets.base import TargetAdapter


class TargetEngine:
    """Turns batches of Nautobot's change events into the smallest set of writes in one target."""

    def __init__(self, registry: ModelRegistry, make_adapter: Callable[[], TargetAdapter]) -> None:
        # Nautobot's DiffSync models of the events (they check each event), by the same names as the target's.
        self.registry = registry
        self.make_adapter = make_adapter

    def apply(self, events: Sequence[Event]) -> BatchResult:
        """Apply `events` (in partition order); TargetUnavailable means: nothing is settled, try the batch again."""
        started = time.perf_counter()
        result = BatchResult(batch_id=str(uuid.uuid4()), received=len(events))
        changes, result.rejected = fold(events, self.registry, NAUTOBOT)
        if changes:
            adapter = self.make_adapter()
            try:
                self._apply(adapter, list(changes.values()), result)
            finally:
                adapter.close()
        result.timings["total"] = time.perf_counter() - started
        return result

    def _apply(self, adapter: TargetAdapter, changes: list[Change], result: BatchResult) -> None:
        """Apply `changes` round by round (`rounds()`, by the target's own unique ids), then commit once."""
        objects: list[ObjectResult] = []
        for number, batch_round in enumerate(rounds(changes, lambda change: getattr(adapter, change.model.get_type()))):
            if number:
                _forget_loaded(adapter)  # the previous round's objects share unique ids with this round's
            objects += self._apply_round(adapter, batch_round, result)
        result.objects.extend(in_batch_order(changes, objects))
        started = time.perf_counter()
        adapter.commit()
        result.add_time("commit", time.perf_counter() - started)

    def _apply_round(self, adapter: TargetAdapter, changes: list[Change], result: BatchResult) -> list[ObjectResult]:
        """Load one round's keys from the target, then diff and write each object, parents first."""
        clock = time.perf_counter
        started = clock()
        keys: dict[str, list[dict[str, Any]]] = {}
        for change in changes:
            keys.setdefault(change.model.get_type(), []).append(change.ids)
        adapter.load_keys(keys)
        loaded = clock()
        rank = {model: i for i, model in enumerate(self.registry.in_order({c.model for c in changes}))}
        upserts = sorted((c for c in changes if c.op is Op.UPSERT), key=lambda c: rank[c.model])
        deletes = sorted((c for c in changes if c.op is Op.DELETE), key=lambda c: -rank[c.model])
        objects = [outcome for change in upserts + deletes for outcome in self._apply_one(adapter, change)]
        result.add_time("load", loaded - started)
        result.add_time("save", clock() - loaded)
        return objects

    @staticmethod
    def _apply_one(adapter: TargetAdapter, change: Change) -> list[ObjectResult]:
        """Diff one object against the target and write the difference; its failure is its own.

        An object deleted and created again in the batch is deleted, then created anew, as two
        batches would: the target's own identity and what it deletes along with it follow Nautobot.
        """
        name = change.model.get_type()
        model: type[DiffSyncModel] = getattr(adapter, name)
        unique_id = model.create_unique_id(**change.ids)
        dst = adapter.get_or_none(model, unique_id)
        if change.recreated and dst is not None:
            cut = max(i for i, event in enumerate(change.events) if event.op is Op.DELETE) + 1
            gone = dataclasses.replace(change, op=Op.DELETE, attrs={}, recreated=False, events=change.events[:cut])
            again = dataclasses.replace(change, recreated=False, events=change.events[cut:])
            return TargetEngine._apply_one(adapter, gone) + TargetEngine._apply_one(adapter, again)

        def done(outcome: Outcome, reason: str = "") -> list[ObjectResult]:
            return [ObjectResult(change.key, name, outcome, reason, events=change.events)]

        # The target keeps the attributes it declares; Nautobot's events carry all of the model's.
        attrs = {k: v for k, v in change.attrs.items() if k in model._attributes}
        write: Callable[[], DiffSyncModel | None]
        if change.op is Op.DELETE:
            if dst is None:
                return done(Outcome.UNCHANGED)  # deleting what the target does not have
            outcome, write = Outcome.DELETED, dst.delete
        elif dst is None:
            outcome = Outcome.CREATED
            write = lambda: model.create(adapter=adapter, ids=change.ids, attrs=attrs)  # noqa: E731
        else:
            changed = diff.changed(attrs, dst.get_attrs())
            if not changed:
                return done(Outcome.UNCHANGED)
            outcome, write = Outcome.UPDATED, lambda: dst.update(changed)
        try:
            with adapter.object_scope():
                if write() is None:  # diffsync's convention for a CRUD method that failed
                    return done(Outcome.FAILED, f"{name} {outcome.value[:-1]} returned None")
        except Exception as error:  # one object's failure must not fail the batch...
            if is_transient(error):
                raise  # ...but an unavailable target (or database) fails it: the batch is tried again
            return done(Outcome.FAILED, reason(error))
        if outcome is Outcome.DELETED and dst is not None:
            adapter.remove(dst)
        return done(outcome)


def _forget_loaded(adapter: TargetAdapter) -> None:
    """Remove every object from the adapter's in-memory store, so that the next `load_keys` starts empty."""
    for name in adapter.store.get_all_model_names():
        for obj in adapter.get_all(name):
            adapter.remove(obj)
