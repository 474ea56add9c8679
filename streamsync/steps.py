"""A batch cut into steps: runs of its events that can be applied together as if one by one.

The engine applies a step's upserts parents first, then its deletes children first, each key's
events folded into one change. That reorders the step's events; a step is cut so that the new
order cannot change the end state, whatever the batch's boundaries:

- an upsert after a delete starts a new step: the upsert may need what the delete removes or
  frees (its parent recreated, a unique name), and may not be moved before it;
- a delete of a key the step upserts starts a new step: that key's upsert then happens, and is
  seen by the other keys (a child created under it is cascaded or protects it), as it would be
  in a batch of its own; a key has one change per step, so nothing is recreated in place;
- an upsert of an object whose creation may create others as a side effect (a device, its
  type's interfaces) starts a new step when the step holds an upsert of such an object (its key
  names the parent) that cannot create it alone: moved before that upsert, it would make it an
  update, where the upsert in its own batch fails;
- an event the engine names ends its step: one that may let a key waiting behind a retryable
  failure go on, when that key must be tried right after it (as the retry timer would try it
  between batches of one event) and cannot simply join the next step.

Nothing here touches the database: the engine says which objects a key names, which events cannot
create their object alone, and which end their step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from diffsync import DiffSyncModel

from streamsync.envelope import Event, Op


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


# The objects an event's key names through its identifiers (an interface's device): per lookup,
# the model looked up and the values it is looked up by (`{"name": "sw1"}`).
KeyParents = Callable[["Item"], Sequence[tuple[type[DiffSyncModel], dict[str, Any]]]]


def next_step(
    items: Sequence[Item],
    key_parents: KeyParents,
    cannot_create_alone: Callable[[Item], bool],
    ends_step: Callable[[Item], bool] = lambda item: False,
) -> int:
    """How many of `items` (what is left of a batch, in order) make its next step; at least one.

    `key_parents(item)`: the objects its key names; `cannot_create_alone(item)`: an upsert's
    attributes cannot create its object; `ends_step(item)`: the event must be the last of its step
    (it may let a key waiting behind a retryable failure go on).
    """
    deleted = False
    upserted: set[str] = set()
    # Each key's first upsert in the step, under each object its key names: model looked up, values.
    children: dict[type[DiffSyncModel], list[tuple[Item, dict[str, Any]]]] = {}
    checked: dict[int, bool] = {}

    def incomplete(item: Item) -> bool:
        if item.index not in checked:
            checked[item.index] = cannot_create_alone(item)
        return checked[item.index]

    def makes(parent: Item, lookup: dict[str, Any]) -> bool:
        """Whether `parent` may be the object a lookup names (a value it does not identify by could match)."""
        return all(parent.ids.get(name, value) == value for name, value in lookup.items())

    for count, item in enumerate(items):
        if item.op is Op.UPSERT:
            if deleted:
                return count
            if any(makes(item, lookup) and incomplete(child) for child, lookup in children.get(item.model, ())):
                return count
            if item.key not in upserted:
                for model, lookup in key_parents(item):
                    children.setdefault(model, []).append((item, lookup))
            upserted.add(item.key)
        else:
            if item.key in upserted:
                return count
            deleted = True
        if ends_step(item):
            return count + 1
    return len(items)
