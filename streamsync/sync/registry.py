"""Which DiffSync models an event may address, and turning an event into model fields.

An event can write nothing outside the registered models and their declared identifiers and
attributes: this is the gate between untrusted bytes on a topic and Nautobot's ORM.
"""

from __future__ import annotations

import graphlib
import itertools
from collections.abc import Iterable, Iterator
from typing import Annotated, Any

from diffsync import DiffSyncModel
from django.core.exceptions import FieldDoesNotExist
from pydantic import BaseModel, TypeAdapter, ValidationError

from streamsync.contract.envelope import EnvelopeError, Event, RejectCode, describe, unstorable

# Per model, a set of models (those its objects refer to, or those that refer to it).
Graph = dict[type[DiffSyncModel], frozenset[type[DiffSyncModel]]]


class RejectedEvent(EnvelopeError):
    """An event that is a valid envelope but does not fit the model it names."""


class ModelRegistry:
    """DiffSync model classes by `_modelname`."""

    def __init__(self, models: Iterable[type[DiffSyncModel]]) -> None:
        self._models: dict[str, type[DiffSyncModel]] = {}
        for model in models:
            name = model.get_type()
            if name in self._models and self._models[name] is not model:
                raise ValueError(f"two models registered as {name!r}: {self._models[name]} and {model}")
            self._models[name] = model
        self._order, self.cycles = _ordered(list(self._models.values()))
        refers = references(self._models.values())
        self._ancestors = _reachable(refers)
        self._descendants = _reachable(_reversed(refers))
        self._lookups = {model: _lookups(model, self._models.values()) for model in self._models.values()}
        self._unique = {model: _unique(model) for model in self._models.values()}
        self._shapes = _shapes(self._models.values(), self._lookups)
        self._adapters: dict[tuple[type[DiffSyncModel], str, bool], TypeAdapter[Any]] = {}

    def in_order(self, models: Iterable[type[DiffSyncModel]]) -> list[type[DiffSyncModel]]:
        """`models` sorted so that a model comes after every registered model it refers to."""
        wanted = set(models)
        return [model for model in self._order if model in wanted]

    def ancestors(self, model: type[DiffSyncModel]) -> frozenset[type[DiffSyncModel]]:
        """Registered models that `model`'s objects refer to, directly or not (itself, if it does)."""
        return self._ancestors.get(model, frozenset())

    def descendants(self, model: type[DiffSyncModel]) -> frozenset[type[DiffSyncModel]]:
        """Registered models whose objects refer to `model`'s, directly or not (what a delete may cascade to)."""
        return self._descendants.get(model, frozenset())

    def related(self, one: type[DiffSyncModel], other: type[DiffSyncModel]) -> bool:
        """Whether objects of one model refer to the other's, directly or not (for one model: to their own)."""
        return one in self._ancestors.get(other, ()) or other in self._ancestors.get(one, ())

    def unique(self, model: type[DiffSyncModel]) -> list[tuple[str, ...]]:
        """Unique constraints that two objects of different keys may clash on, as the model's field names.

        A VLAN's group and name: two VLANs of one group, different VIDs, may not share a name.
        Constraints over fields the model does not sync are left out: its events cannot change them.
        """
        return self._unique.get(model, [])

    def named(
        self, model: type[DiffSyncModel], values: dict[str, Any]
    ) -> list[tuple[type[DiffSyncModel], dict[str, Any]]]:
        """The objects `values` (identifiers and attributes of `model`) name through lookups: model and values.

        `{"name": "eth0", "device__name": "sw1"}` names the device `{"name": "sw1"}`; a lookup the
        values do not hold names nothing.
        """
        named = []
        for parent, pairs in self._lookups.get(model, []):
            if all(name in values for name, _ in pairs):
                named.append((parent, {field: values[name] for name, field in pairs}))
        return named

    def shapes(self, model: type[DiffSyncModel]) -> frozenset[tuple[str, ...]]:
        """The sets of fields (sorted) registered models look up objects of `model`'s Nautobot model by."""
        return self._shapes.get(model, frozenset())

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __iter__(self) -> Iterator[type[DiffSyncModel]]:
        return iter(self._models.values())

    def names(self) -> list[str]:
        """Registered model names."""
        return sorted(self._models)

    def get(self, name: str) -> type[DiffSyncModel]:
        """The model class for `name`, or RejectedEvent naming the known ones."""
        try:
            return self._models[name]
        except KeyError:
            raise RejectedEvent(
                RejectCode.UNKNOWN_MODEL, f"unknown model {name!r}; this source accepts {self.names()}"
            ) from None

    def split(self, event: Event) -> tuple[type[DiffSyncModel], dict[str, Any], dict[str, Any]]:
        """Check an event against its model: (model class, identifiers, attributes it sets)."""
        model = self.get(event.model)
        identifiers = set(model._identifiers)
        missing = identifiers - event.key.keys()
        extra = event.key.keys() - identifiers
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing identifier(s) {sorted(missing)}")
            if extra:
                parts.append(f"unknown identifier(s) {sorted(extra)}")
            raise RejectedEvent(
                RejectCode.BAD_KEY, f"{event.model}: {', '.join(parts)}; identifiers are {sorted(identifiers)}"
            )
        undeclared = event.attrs.keys() - set(model._attributes)
        if undeclared:
            declared = sorted(model._attributes)
            raise RejectedEvent(
                RejectCode.UNDECLARED_ATTRIBUTE,
                f"{event.model}: undeclared attribute(s) {sorted(undeclared)}; declared: {declared}",
            )
        # Identifiers are checked strictly: the key's JSON is the canonical key, "100" is not 100.
        ids = {name: self._check(model, name, value, strict=True) for name, value in event.key.items()}
        attrs = {name: self._check(model, name, value, strict=False) for name, value in event.attrs.items()}
        for name, value in (*ids.items(), *attrs.items()):
            problem = unstorable(value)  # decoded events were checked on the wire; events made in Python too
            if problem:
                raise RejectedEvent(RejectCode.UNSTORABLE_STRING, f"{event.model}.{name}: {problem}")
        for name, value in ids.items():
            # contrib reads a foreign key whose lookup values are all empty as "no object": an identifier
            # of "" would create an object with no parent that no later event could find again.
            if "__" in name and value == "":
                raise RejectedEvent(
                    RejectCode.BAD_KEY, f"{event.model}.{name}: empty string names no object; send null for none"
                )
        return model, ids, attrs

    def _check(self, model: type[DiffSyncModel], name: str, value: Any, strict: bool) -> Any:
        adapter = self._adapters.get((model, name, strict))
        if adapter is None:
            field = model.model_fields[name]
            annotation: Any = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
            adapter = TypeAdapter(annotation, config={"strict": strict})
            self._adapters[(model, name, strict)] = adapter
        try:
            return adapter.validate_python(value)
        except ValidationError as error:
            raise RejectedEvent(RejectCode.WRONG_TYPE, f"{model.get_type()}.{name}: {describe(error)}") from None


class Cycle(BaseModel):
    """Models whose objects refer to each other in a circle, and where parents-first order was broken.

    `child` goes before `parent` although its `fields` refer to it: a `child` object that arrives
    before its `parent` is retried until the parent exists (in the batch, then with back-off). When
    every reference around the circle is required on create, objects that refer to each other can
    never be written (neither can exist first): `retried` is False and `why` says so.
    """

    models: list[str]  # the circle, each one referring to the next
    child: str
    parent: str
    fields: list[str]
    retried: bool
    why: str


def dependency_order(models: Iterable[type[DiffSyncModel]]) -> list[type[DiffSyncModel]]:
    """Models sorted parents first, from the Nautobot foreign keys their `a__b__c` fields go through.

    A cycle (a module bay of a device holds a module, a module holds bays) is broken where it goes
    against registration order: the model registered first goes first. The engine's in-batch retry
    covers what order cannot (a bay of a module before its module); `dependency_cycles` says where.
    """
    return _ordered(list(models))[0]


def dependency_cycles(models: Iterable[type[DiffSyncModel]]) -> list[Cycle]:
    """Each cycle `dependency_order` broke: what is retried, and what can never be written."""
    return _ordered(list(models))[1]


def _ordered(models: list[type[DiffSyncModel]]) -> tuple[list[type[DiffSyncModel]], list[Cycle]]:
    by_orm = {getattr(model, "_model", None): model for model in models}
    graph: dict[type[DiffSyncModel], set[type[DiffSyncModel]]] = {model: set() for model in models}
    via: dict[tuple[type[DiffSyncModel], type[DiffSyncModel]], list[str]] = {}
    for model in models:
        orm = getattr(model, "_model", None)
        if orm is None:
            continue
        for name in (*model._identifiers, *model._attributes):
            for related in _path(orm, name):
                parent = by_orm.get(related)
                if parent is not None and parent is not model:
                    graph[model].add(parent)
                    names = via.setdefault((model, parent), [])
                    if name not in names:
                        names.append(name)
    position = {model: i for i, model in enumerate(models)}
    cycles: list[Cycle] = []
    while True:
        try:
            return list(graphlib.TopologicalSorter(graph).static_order()), cycles
        except graphlib.CycleError as error:
            cycle = error.args[1]  # each one a parent of the next, the first repeated at the end
            parent, child = next((p, c) for p, c in itertools.pairwise(cycle) if position[p] > position[c])
            graph[child].discard(parent)
            cycles.append(_cycle(cycle, child, parent, via))


def _cycle(
    cycle: list[type[DiffSyncModel]],
    child: type[DiffSyncModel],
    parent: type[DiffSyncModel],
    via: dict[tuple[type[DiffSyncModel], type[DiffSyncModel]], list[str]],
) -> Cycle:
    """A broken cycle, retried unless every reference around it is required when an object is created."""
    names = [model.get_type() for model in cycle]
    links = [(c, p) for p, c in itertools.pairwise(cycle)]
    required = [[name for name in via[link] if _required(link[0], name)] for link in links]
    retried = not all(required)
    if retried:
        why = (
            f"a {child.get_type()} that arrives before its {parent.get_type()} is retried until the "
            f"{parent.get_type()} exists"
        )
    else:
        fields = "; ".join(f"{c.get_type()}.{' and '.join(r)}" for (c, _), r in zip(links, required, strict=True))
        why = (
            f"every reference around {' -> '.join(names)} is required on create ({fields}): objects that refer "
            "to each other cannot be written, since neither can exist first"
        )
    return Cycle(
        models=names,
        child=child.get_type(),
        parent=parent.get_type(),
        fields=via[(child, parent)],
        retried=retried,
        why=why,
    )


def _required(model: type[DiffSyncModel], name: str) -> bool:
    """Whether an object of `model` cannot be created without `name` (an identifier that may be null has a default)."""
    return model.model_fields[name].is_required()


def _path(orm: Any, name: str) -> list[Any]:
    """The Nautobot models a field refers to: `parent_module_bay__parent_device__name`, a bay and a device."""
    related = []
    for part in name.split("__"):
        try:
            orm = orm._meta.get_field(part).related_model
        except FieldDoesNotExist:  # a custom field or relationship: no ordering constraint
            break
        if orm is None:
            break
        related.append(orm)
    return related


def references(models: Iterable[type[DiffSyncModel]]) -> Graph:
    """Per model, the models whose Nautobot objects its own refer to through any foreign key.

    Every foreign key and many-to-many field counts, synced or not: a delete cascades along them,
    is protected by them, and takes the object out of many-to-many relations. A model not bound to
    Nautobot refers to nothing.
    """
    models = list(models)
    by_orm: dict[Any, list[type[DiffSyncModel]]] = {}
    for model in models:
        orm = getattr(model, "_model", None)
        if orm is not None:
            by_orm.setdefault(orm, []).append(model)
    graph: Graph = {}
    for model in models:
        orm = getattr(model, "_model", None)
        related = set()
        if orm is not None:
            for field in orm._meta.get_fields():
                forward = (field.many_to_one or field.one_to_one) and field.concrete
                forward = forward or (field.many_to_many and not field.auto_created)
                if forward and field.related_model in by_orm:
                    related.update(by_orm[field.related_model])
        graph[model] = frozenset(related)
    return graph


def _reversed(graph: Graph) -> Graph:
    back: dict[type[DiffSyncModel], set[type[DiffSyncModel]]] = {model: set() for model in graph}
    for model, targets in graph.items():
        for target in targets:
            back.setdefault(target, set()).add(model)
    return {model: frozenset(sources) for model, sources in back.items()}


def _reachable(graph: Graph) -> Graph:
    """Per model, every model reachable from it in one step or more (itself only through a cycle)."""
    reach: Graph = {}
    for start in graph:
        seen: set[type[DiffSyncModel]] = set()
        todo = list(graph[start])
        while todo:
            model = todo.pop()
            if model not in seen:
                seen.add(model)
                todo.extend(graph.get(model, ()))
        reach[start] = frozenset(seen)
    return reach


def _lookups(
    model: type[DiffSyncModel], models: Iterable[type[DiffSyncModel]]
) -> list[tuple[type[DiffSyncModel], list[tuple[str, str]]]]:
    """Per foreign key `model`'s fields look up through: a model it may name, and (field, its field) pairs.

    `device_type__model` and `device_type__manufacturer__name` look up one device type together.
    """
    orm = getattr(model, "_model", None)
    if orm is None:
        return []
    pairs: dict[str, list[tuple[str, str]]] = {}
    for name in (*model._identifiers, *model._attributes):
        field, _, rest = name.partition("__")
        if rest:
            pairs.setdefault(field, []).append((name, rest))
    lookups = []
    for field, names in pairs.items():
        try:
            related = orm._meta.get_field(field).related_model
        except FieldDoesNotExist:
            continue
        lookups += [(parent, names) for parent in models if getattr(parent, "_model", None) is related]
    return lookups


def _shapes(
    models: Iterable[type[DiffSyncModel]],
    lookups: dict[type[DiffSyncModel], list[tuple[type[DiffSyncModel], list[tuple[str, str]]]]],
) -> dict[type[DiffSyncModel], frozenset[tuple[str, ...]]]:
    """`ModelRegistry.shapes()` of every model: the field sets its Nautobot model is looked up by."""
    by_orm: dict[Any, set[tuple[str, ...]]] = {}
    for found in lookups.values():
        for parent, pairs in found:
            by_orm.setdefault(getattr(parent, "_model", None), set()).add(tuple(sorted(f for _, f in pairs)))
    return {model: frozenset(by_orm.get(getattr(model, "_model", None), ())) for model in models}


def _unique(model: type[DiffSyncModel]) -> list[tuple[str, ...]]:
    """`ModelRegistry.unique()`, worked out from the Nautobot model's unique fields and constraints."""
    from django.db.models import UniqueConstraint

    orm = getattr(model, "_model", None)
    if orm is None:
        return []
    groups: list[tuple[str, ...]] = [tuple(fields) for fields in orm._meta.unique_together]
    groups += [
        tuple(c.fields)
        for c in orm._meta.constraints
        if isinstance(c, UniqueConstraint) and c.fields and not c.condition
    ]
    groups += [(f.name,) for f in orm._meta.concrete_fields if f.unique and not f.primary_key]
    synced = (*model._identifiers, *model._attributes)
    constraints = []
    for fields in groups:
        names = [[n for n in synced if n == f or n.startswith(f + "__")] for f in fields]
        if not all(names):
            continue  # a field the model does not sync: its events cannot change it
        flat = tuple(n for group in names for n in group)
        if not set(model._identifiers) <= set(flat):  # objects of different keys differ on a field of it
            constraints.append(flat)
    return constraints
