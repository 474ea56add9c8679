"""What a key waiting behind a failed create waits for: the objects its events name that Nautobot lacks.

A create that fails because an object it names is missing (an interface's device, a prefix's
namespace) cannot pass before that object is written. Recorded when the key starts to wait (and
with its parked rows), it lets the engine try the key again right after a step that writes one of
those objects, instead of after every step that changes a model the key refers to; and it lets the
retry timer leave a key alone, counting the attempt, while one of them is still missing. Without
it, a stream that brings children before their parents (a dump, a resync in any order) retries
every waiting key after almost every step, each a failed create of about 10 ms: quadratic.

An awaited object is named as a lookup on a Nautobot model (`("dcim.device", (("name", "sw1"),))`),
so a step writes it when it upserts an object of that model whose values match the lookup (a field
the upsert does not set may match). Objects Nautobot makes itself when another one is created are
written too: a device's or module's components, from its type's templates. A key whose failure
names nothing missing (a validation that depends on other objects, a many-to-many value) has
nothing recorded and waits as before, for any change of a model it refers to.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from diffsync import DiffSyncModel

from streamsync.sync.registry import ModelRegistry

# (Nautobot model label, the lookup that finds it: sorted (field, value) pairs)
Awaited = tuple[str, tuple[tuple[str, Any], ...]]

# Nautobot makes these when it creates a device or a module: its type's component templates,
# instantiated (Device.create_components, Module.create_components).
COMPONENTS = frozenset(
    {
        "dcim.consoleport",
        "dcim.consoleserverport",
        "dcim.powerport",
        "dcim.poweroutlet",
        "dcim.interface",
        "dcim.rearport",
        "dcim.frontport",
        "dcim.devicebay",
        "dcim.modulebay",
    }
)
MAKERS = frozenset({"dcim.device", "dcim.module"})


def label(model: type[DiffSyncModel]) -> str | None:
    """The Nautobot model label of a DiffSync model (None: not bound to one)."""
    orm = getattr(model, "_model", None)
    return None if orm is None else str(orm._meta.label_lower)


def missing(
    registry: ModelRegistry,
    model: type[DiffSyncModel],
    values: dict[str, Any],
    known: dict[Awaited, bool | None] | None = None,
) -> frozenset[Awaited]:
    """The objects `values` (an object of `model` to create) name that Nautobot does not have; a query each.

    A reference left empty (every looked-up value None) names nothing; a lookup the database cannot
    run (a value out of a column's range) is left out, as its object cannot be told missing.
    `known` holds what earlier calls found, by object, and is added to: pass one dict to the calls
    made while nothing is written (the failures of one pass, which often name the same parents).
    """
    known = {} if known is None else known
    found: set[Awaited] = set()
    for parent, lookup in registry.named(model, values):
        orm = getattr(parent, "_model", None)
        if orm is None or all(value is None for value in lookup.values()):
            continue
        if any(isinstance(value, list | dict) for value in lookup.values()):
            continue
        awaited = (str(orm._meta.label_lower), tuple(sorted(lookup.items())))
        if awaited not in known:
            known[awaited] = _exists(orm, lookup)
        if known[awaited] is False:
            found.add(awaited)
    return frozenset(found)


def still_missing(awaits: Iterable[Awaited]) -> bool:
    """Whether one of the awaited objects is still not in Nautobot (for the retry timer; a query each)."""
    from django.apps import apps

    for name, lookup in awaits:
        try:
            orm = apps.get_model(name)
        except LookupError:
            return False  # cannot tell: try the key
        found = _exists(orm, dict(lookup))
        if found is None:
            return False  # cannot tell: try the key
        if not found:
            return True
    return False


def _exists(orm: Any, lookup: dict[str, Any]) -> bool | None:
    """Whether Nautobot has the object `lookup` finds; None when the database cannot run the lookup.

    In a savepoint: a value out of a column's range fails the query, not the caller's transaction.
    """
    from django.db import DatabaseError, transaction

    try:
        with transaction.atomic():
            return bool(orm.objects.filter(**lookup).exists())
    except (DatabaseError, ValueError, TypeError):
        return None


def written(awaited: Awaited, upserts: Iterable[tuple[type[DiffSyncModel], dict[str, Any]]], created: set[str]) -> bool:
    """Whether `upserts` (models and values written) may have written the awaited object.

    `created`: labels of the models some of those upserts created, for what Nautobot makes with them.
    """
    name, lookup = awaited
    if name in COMPONENTS and created & MAKERS:
        return True
    for model, values in upserts:
        if label(model) == name and all(values[field] == value for field, value in lookup if field in values):
            return True
    return False


def lookups_of(
    registry: ModelRegistry, upserts: Iterable[tuple[type[DiffSyncModel], dict[str, Any]]], created: set[str]
) -> list[Any]:
    """What the upserts wrote, as parked rows name what they wait for (`to_json`), one entry per lookup.

    An object is named by every set of fields some registered model looks it up by; a create of a
    device or a module names every component model (by label alone), for what Nautobot makes with it.
    """
    entries: list[Any] = [[name] for name in sorted(COMPONENTS)] if created & MAKERS else []
    seen: set[str] = set()
    for model, values in upserts:
        name = label(model)
        for shape in registry.shapes(model) if name else ():
            if all(field in values for field in shape):
                entry = [name, [[field, values[field]] for field in shape]]
                if repr(entry) not in seen:
                    seen.add(repr(entry))
                    entries.append(entry)
    return entries


def to_json(awaits: frozenset[Awaited] | None) -> list[Any] | None:
    """As the parked rows keep it."""
    if not awaits:
        return None
    return [[name, [list(pair) for pair in lookup]] for name, lookup in sorted(awaits, key=repr)]


def from_json(stored: Any) -> frozenset[Awaited] | None:
    """From the parked rows; anything unreadable counts as not known."""
    if not isinstance(stored, list) or not stored:
        return None
    try:
        return frozenset((str(name), tuple((str(f), v) for f, v in lookup)) for name, lookup in stored)
    except (TypeError, ValueError):
        return None
