"""A batch cut into steps: runs of its events that can be applied together as if one by one.

The engine applies a step's upserts parents first, then its deletes children first, each key's
events folded into one change. That reorders the step's events; a step is cut so that the new
order cannot change the end state, whatever the batch's boundaries:

- an upsert after a delete starts a new step: the upsert may need what the delete removes or
  frees (its parent recreated, a unique name), and may not be moved before it;
- a delete of a key the step upserts starts a new step: that key's upsert then happens, and is
  seen by the other keys (a child created under it is cascaded or protects it), as it would be
  in a batch of its own; a key has one change per step, so nothing is recreated in place;
- an upsert of an object that an earlier upsert of the step names (an interface's device, a
  device's type, a VLAN's group) starts a new step: moved before the earlier upsert, it would
  change what that one sees (a parent created first, with its side effects: a new device makes
  its type's interfaces; a VLAN group's new range checked against a VLAN not yet there);
- an event the engine names ends its step: one that may let a key waiting behind a retryable
  failure go on, when that key must be tried right after it (as the retry timer would try it
  between batches of one event) and cannot simply join the next step.

Nothing here touches the database: the engine says which objects an event names, and which events
end their step.
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


# The objects an upsert names through lookups in its key or attributes (an interface's device): per
# lookup, the model looked up and the values it is looked up by (`{"name": "sw1"}`).
Named = Callable[["Item"], Sequence[tuple[type[DiffSyncModel], dict[str, Any]]]]


def next_step(items: Sequence[Item], named: Named, ends_step: Callable[[Item], bool] = lambda item: False) -> int:
    """How many of `items` (what is left of a batch, in order) make its next step; at least one.

    `named(item)`: the objects an upsert names; `ends_step(item)`: the event must be the last of
    its step (it may let a key waiting behind a retryable failure go on).
    """
    deleted = False
    upserted: set[str] = set()
    # Objects the step's upserts name, by model and looked-up values; per model, which fields are looked up.
    wanted: set[tuple[type[DiffSyncModel], tuple[tuple[str, Any], ...]]] = set()
    fields: dict[type[DiffSyncModel], set[tuple[str, ...]]] = {}
    for count, item in enumerate(items):
        if item.op is Op.UPSERT:
            if deleted:
                return count
            values = {**item.attrs, **item.ids}
            for looked_up in fields.get(item.model, ()):
                if any(name not in values for name in looked_up):  # looked up by what it does not say: maybe
                    return count
                if (item.model, tuple((name, values[name]) for name in looked_up)) in wanted:
                    return count
            for model, lookup in named(item):
                looked_up = tuple(sorted(lookup))
                fields.setdefault(model, set()).add(looked_up)
                wanted.add((model, tuple((name, lookup[name]) for name in looked_up)))
            upserted.add(item.key)
        else:
            if item.key in upserted:
                return count
            deleted = True
        if ends_step(item):
            return count + 1
    return len(items)
