"""A batch cut into steps: events that can be applied together as if one by one, in the batch's order.

The engine applies a step's upserts parents first, then its deletes children first, each key's
events folded into one change. That reorders the step's events; the next step takes every
remaining event that this reordering cannot affect, and leaves the others for a later step:

- an event that must follow one left for later (the same key, or one it depends on) is left too;
- an upsert that depends on a delete of the step is left: it may need what the delete removes or
  frees (its parent created again, a unique name), and may not be moved before it;
- a delete of a key the step upserts is left: that key's upsert then happens, and is seen by the
  other keys (a child created under it is cascaded or protects it), as it would be in a batch of
  its own; a key has one change per step, so nothing is recreated in place;
- an upsert of an object that an earlier upsert of the step names (an interface's device, a
  device's type, a VLAN's group) is left: moved before the earlier upsert, it would change what
  that one sees (a parent created first, with its side effects: a new device makes its type's
  interfaces; a VLAN group's new range checked against a VLAN not yet there);
- an event the engine names ends the step: one that may let a key waiting behind a retryable
  failure go on, when that key must be tried right after it (as the retry timer would try it
  between batches of one event) and cannot simply join the next step;
- an upsert of a key the step upserts is left when an upsert of another key of the same model,
  taken after that key's first, may clash with it on a unique value: folded into its key's
  change, it would move before that one (a VLAN taking the name another VLAN of its group gives
  up between the two);
- an event that may change what a delete of the step sees is left when that delete depends on an
  event already left: deletes go last, so the event would reach the delete before the one left
  (a device type's delete letting its manufacturer's delete through before another device type
  is created again under it);
- an event that may let a waiting key go on is left when that key's events depend on an event
  already left: the key is tried with the step, so the event would move its retry before the one
  left (a device's delete lifting what protects a location's waiting delete, overtaking a VLAN
  group's move onto that location).

Two events of different keys depend on each other when their models are related (one refers to
the other, directly or not, or a model refers to itself), or when they may clash on a unique
value (two VLANs of one group and one name): the engine decides (`Relations`). Independent events
commute, so a key's upserts fold across the deletes and re-creations of other keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from diffsync import DiffSyncModel

from streamsync.contract.envelope import Event, Op


@dataclass(frozen=True)
class Item:
    """One event of a batch that fits its model, and its place in the batch."""

    index: int
    event: Event
    model: type[DiffSyncModel]
    ids: dict[str, Any]
    attrs: dict[str, Any]
    key: str

    @property
    def op(self) -> Op:
        """Upsert or delete."""
        return self.event.op


@dataclass(frozen=True)
class Relations:
    """How events of different keys may affect each other; the engine knows, from the models and the data.

    `related(a, b)`: objects of one model refer to the other's (or, for one model, to their own);
    `clash(a, b)`: two events of one model may want the same unique value; `named(item)`: the
    objects an upsert names through lookups (model, looked-up values), e.g. an interface's device
    `(DeviceModel, {"name": "sw1"})`.
    """

    related: Callable[[type[DiffSyncModel], type[DiffSyncModel]], bool]
    clash: Callable[[Item, Item], bool]
    named: Callable[[Item], Sequence[tuple[type[DiffSyncModel], dict[str, Any]]]]

    def depend(self, earlier: Item, later: Item) -> bool:
        """Whether two events of different keys may not trade places."""
        if earlier.model is later.model and not self.related(earlier.model, later.model):
            return self.clash(earlier, later)
        return self.related(earlier.model, later.model)


def next_step(
    items: Sequence[Item],
    relations: Relations,
    ends_step: Callable[[Item], bool] = lambda item: False,
    frees: Callable[[Item], Sequence[Item]] = lambda item: (),
) -> list[Item]:
    """The events of the next step, in order: never empty, the first of `items` always among them.

    `items` are what is left of a batch, in order; `ends_step(item)` says an event must be the last
    of its step (it may let a key waiting behind a retryable failure go on); `frees(item)`: the
    events of waiting keys an event may let go on, which are then applied with its step.
    """
    step: list[Item] = []
    left: dict[type[DiffSyncModel], list[Item]] = {}  # events left for later, by model
    left_keys: set[str] = set()
    deletes: dict[type[DiffSyncModel], list[Item]] = {}  # the step's deletes, by model
    upserted: dict[str, Item] = {}  # each upserted key's first event, in the order the step took them
    deleted: set[str] = set()
    # Objects the step's upserts name, by model and looked-up values; per model, which fields are looked up.
    wanted: set[tuple[type[DiffSyncModel], tuple[tuple[str, Any], ...]]] = set()
    fields: dict[type[DiffSyncModel], set[tuple[str, ...]]] = {}

    def after(events: dict[type[DiffSyncModel], list[Item]], item: Item) -> bool:
        """Whether `item` depends on one of `events` (of other keys)."""
        for model, earlier in events.items():
            maybe = model is item.model or relations.related(model, item.model)
            if maybe and any(relations.depend(e, item) for e in earlier if e.key != item.key):
                return True
        return False

    def is_named(item: Item) -> bool:
        values = {**item.attrs, **item.ids}
        for looked_up in fields.get(item.model, ()):
            if any(name not in values for name in looked_up):  # looked up by what it does not say: maybe
                return True
            if (item.model, tuple((name, values[name]) for name in looked_up)) in wanted:
                return True
        return False

    def folds_past(item: Item) -> bool:
        """Whether `item`, folded into its key's earlier upsert, would move before another key's it may clash with."""
        if item.key not in upserted:
            return False
        keys = list(upserted)
        later = (upserted[key] for key in keys[keys.index(item.key) + 1 :])
        return any(other.model is item.model and relations.clash(other, item) for other in later)

    def disturbs(item: Item) -> bool:
        """Whether `item` may change what a delete of the step sees that must follow an event left for later.

        The step's deletes go last: taken past the event left, `item` would reach that delete before it.
        """
        if not left:
            return False
        for model, taken in deletes.items():
            if model is item.model or relations.related(model, item.model):
                mine = (d for d in taken if d.key != item.key and relations.depend(d, item))
                if any(after(left, delete) for delete in mine):
                    return True
        return False

    def overtakes(item: Item) -> bool:
        """Whether `item` may let a waiting key go on whose events must follow one left for later."""
        return bool(left) and any(w.key in left_keys or after(left, w) for w in frees(item))

    for position, item in enumerate(items):
        if item.op is Op.UPSERT:
            wait = item.key in deleted or is_named(item) or after(deletes, item) or folds_past(item)
        else:
            wait = item.key in upserted
        if position and (wait or item.key in left_keys or after(left, item) or overtakes(item) or disturbs(item)):
            left.setdefault(item.model, []).append(item)
            left_keys.add(item.key)
            continue
        step.append(item)
        if item.op is Op.UPSERT:
            upserted.setdefault(item.key, item)
            for model, lookup in relations.named(item):
                looked_up = tuple(sorted(lookup))
                fields.setdefault(model, set()).add(looked_up)
                wanted.add((model, tuple((name, lookup[name]) for name in looked_up)))
        else:
            deleted.add(item.key)
            deletes.setdefault(item.model, []).append(item)
        if ends_step(item):
            break
    return step
