"""What the engine loaded in its change context: each object's DiffSync view before the context changes it.

Nautobot's event broker (streamsync/outbox/broker.py) records every changed object's view from
before its first change in a change context, to tell what changed and to delete the old key when
identifiers change. For the objects of a batch the engine has loaded exactly that view (the same
DiffSync model, contrib's loading code) a moment before: offered here, the broker takes a copy
instead of reading the object and its related rows again.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from diffsync import Adapter, DiffSyncModel

# (Nautobot model label, pk) -> {DiffSync model name: its view}, while the engine's change context runs.
_views: ContextVar[dict[tuple[str, str], dict[str, DiffSyncModel]] | None] = ContextVar(
    "streamsync_loaded_views", default=None
)


@contextmanager
def scope() -> Iterator[None]:
    """Offers made inside this block are taken inside it only."""
    token = _views.set({})
    try:
        yield
    finally:
        _views.reset(token)


def offer(adapter: Adapter) -> None:
    """Offer every object `adapter` has loaded; a later load of the same object replaces the earlier one."""
    views = _views.get()
    if views is None:
        return
    for name in adapter.get_all_model_names():
        for view in adapter.get_all(name):
            django_model, pk = getattr(view, "_model", None), getattr(view, "pk", None)
            if django_model is None or pk is None:
                continue
            views.setdefault((django_model._meta.label_lower, str(pk)), {})[name] = view


def take(label: str, pk: Any, model: type[DiffSyncModel]) -> DiffSyncModel | None:
    """A copy of the offered view of object (`label`, `pk`) as `model` loads it, or None.

    A copy: the engine goes on to update its view in place once the object is saved. Its values
    are copied, not the adapter it refers to: a deep copy of that is a copy of every view the
    round loaded, for each object saved.
    """
    views = _views.get()
    view = views.get((label, str(pk)), {}).get(model.get_type()) if views else None
    if view is None or type(view) is not model:
        return None
    values = {name: copy.deepcopy(value) for name, value in vars(view).items() if name != "adapter"}
    return view.model_copy(update=values)
