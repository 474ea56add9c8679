"""Partial DiffSync adapters: a batch's events on one side, only the batch's keys of Nautobot on the other.

A full SSoT run loads everything on both sides. Streaming loads just the objects a batch names,
so the diff of the two adapters is exactly the batch's work: an object the events name and
Nautobot lacks is created, one both have is updated, one named by a delete is deleted.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Iterable, Iterator, Mapping
from functools import reduce
from typing import Any, ClassVar

from diffsync import Adapter, DiffSyncModel
from diffsync.exceptions import ObjectAlreadyExists
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Prefetch, Q
from nautobot_ssot.contrib import NautobotAdapter
from nautobot_ssot.utils.orm import load_typed_dict
from nautobot_ssot.utils.typing import get_inner_type

from streamsync.sync.relationships import (
    RelationshipAnnotation,
    as_value,
    in_order,
    peers,
    peers_of,
    relationship_attributes,
    relationship_of,
)

# Where the load puts an object's prefetched to-many rows: a plain list, see to_many.
PREFETCHED = "_streamsync_prefetched_"
# Where it puts an object's peers of a relationship attribute, read for all loaded objects at once.
PEERS = "_streamsync_peers_"


class PartialNautobotAdapter(NautobotAdapter):
    """Loads from Nautobot only the objects whose identifiers are in `keys`: one query per model.

    `keys=None` loads every object of the adapter's models (a resync), reading the table in chunks
    so that Django's row cache and the DiffSync objects are not both held whole.
    """

    top_level: ClassVar[list[str]] = []
    chunk_size: ClassVar[int] = 2000

    def __init__(self, *args: Any, keys: Mapping[str, list[dict[str, Any]]] | None, **kwargs: Any) -> None:
        self._keys = keys
        # (model name, unique id) of keys that match more than one row: no event may write those.
        self.ambiguous: set[tuple[str, str]] = set()
        super().__init__(*args, job=None, **kwargs)

    def _load_objects(self, diffsync_model: Any) -> None:
        parameter_names = diffsync_model.get_synced_attributes()
        queryset = diffsync_model._get_queryset().prefetch_related(*to_many(diffsync_model))
        rows: Iterable[Any]
        if self._keys is None:
            rows = queryset.iterator(chunk_size=self.chunk_size)
        else:
            keys = self._keys.get(diffsync_model.get_type(), [])
            if not keys:
                return
            rows = queryset.filter(matching(keys))
        for database_object in self._with_peers(diffsync_model, rows):
            try:
                self._load_single_object(database_object, diffsync_model, parameter_names)
            except ObjectAlreadyExists as error:
                # Nautobot allows it (e.g. two devices of one name in different locations): which one
                # an event means is unknowable, so that object fails instead of the batch.
                existing = error.existing_object
                if isinstance(existing, DiffSyncModel):
                    self.ambiguous.add((diffsync_model.get_type(), existing.get_unique_id()))

    def _with_peers(self, diffsync_model: Any, rows: Iterable[Any]) -> Iterator[Any]:
        """The rows, each with its relationship attributes' peers read for a chunk of rows at once."""
        attributes = relationship_attributes(diffsync_model)
        if not attributes:
            yield from rows
            return
        iterator = iter(rows)
        while chunk := list(itertools.islice(iterator, self.chunk_size)):
            for name, annotation in attributes:
                found = peers_of(relationship_of(self, annotation), annotation.end, chunk, annotation.peer_fields)
                for database_object in chunk:
                    setattr(database_object, PEERS + name, found.get(database_object.pk, []))
            yield from chunk

    def load_one(self, diffsync_model: Any, ids: dict[str, Any]) -> Any:
        """Load one object by identifiers after the batch's load (it may have appeared since); None if absent."""
        database_object = diffsync_model._get_queryset().filter(**ids).first()
        if database_object is None:
            return None
        return self._load_single_object(database_object, diffsync_model, diffsync_model.get_synced_attributes())

    def _handle_children(self, database_object: Any, diffsync_model: Any) -> None:
        """Streaming diffs are per object: an event about a parent never touches children it does not name."""

    def _handle_to_many_relationship(self, database_object: Any, diffsync_model: Any, parameter_name: str) -> Any:
        """contrib's, reading the list the load prefetched (an object loaded otherwise goes through contrib)."""
        prefetched = getattr(database_object, PREFETCHED + parameter_name, None)
        if prefetched is None:
            return super()._handle_to_many_relationship(database_object, diffsync_model, parameter_name)
        inner_type = _inner_type(diffsync_model, parameter_name)
        loaded = (load_typed_dict(inner_type, related) for related in prefetched)
        return [row for row in loaded if any(row.values())]

    def _handle_custom_relationship_to_many_relationship(
        self, database_object: Any, diffsync_model: Any, parameter_name: str, annotation: Any
    ) -> Any:
        """A relationship attribute (streamsync/sync/relationships.py): the object's peers as events name them."""
        if not isinstance(annotation, RelationshipAnnotation):
            return super()._handle_custom_relationship_to_many_relationship(
                database_object, diffsync_model, parameter_name, annotation
            )
        found = getattr(database_object, PEERS + parameter_name, None)
        if found is None:  # an object loaded on its own
            found = peers(relationship_of(self, annotation), annotation.end, database_object)
        return in_order([as_value(peer, annotation.peer_fields) for peer in found])


def matching(keys: list[dict[str, Any]]) -> Q:
    """A filter for exactly the rows with these identifiers, as few terms as it takes.

    One term per key made a 500-key load spend most of its time building and compiling SQL. Keys
    that differ in one identifier only are one term: the others equal, that one `__in` the values
    (the identifier with the most distinct values). A null value is compared as IS NULL (what a
    null identifier means), never through `__in`, which cannot match NULL.
    """
    names = sorted({name for key in keys for name in key})
    if len(keys) < 2 or any(len(key) != len(names) for key in keys):
        return reduce(operator.or_, (Q(**key) for key in keys))
    varying = max(names, key=lambda name: len({repr(key[name]) for key in keys}))
    groups: dict[str, tuple[dict[str, Any], list[Any]]] = {}
    single: list[Q] = []
    for key in keys:
        if key[varying] is None:
            single.append(Q(**key))
            continue
        rest = {name: value for name, value in key.items() if name != varying}
        groups.setdefault(repr(sorted(rest.items())), (rest, []))[1].append(key[varying])
    terms = [Q(**rest, **{f"{varying}__in": values}) for rest, values in groups.values()]
    return reduce(operator.or_, terms + single)


@functools.cache
def _inner_type(diffsync_model: Any, parameter_name: str) -> Any:
    """The TypedDict a to-many attribute holds: `typing.get_type_hints` per object was half a 10,000-VLAN load."""
    return get_inner_type(diffsync_model, parameter_name)


def to_many(diffsync_model: Any) -> list[Prefetch]:
    """Synced to-many fields (tags, content types): contrib prefetches only foreign keys.

    Without this, every list attribute costs one query per loaded object. Prefetched into a plain
    list (`to_attr`): into the related manager, Django builds a queryset per object to hold the
    rows, which for taggit's tags cost about 0.3 ms each, two thirds of a 10,000-VLAN load.
    """
    fields = []
    for name in diffsync_model.get_synced_attributes():
        try:
            field = diffsync_model._model._meta.get_field(name)
        except FieldDoesNotExist:  # a foreign-key path or a custom field
            continue
        if field.many_to_many or field.one_to_many:
            fields.append(Prefetch(name, to_attr=PREFETCHED + name))
    return fields


class EventAdapter(Adapter):
    """The remote side of one batch, built from its events rather than loaded from a system."""

    top_level: ClassVar[list[str]] = []


def adapter_classes(models: Iterable[type[DiffSyncModel]]) -> tuple[type[PartialNautobotAdapter], type[EventAdapter]]:
    """A matching pair of adapter classes for these models (diffsync wants models as class attributes)."""
    attrs: dict[str, Any] = {model.get_type(): model for model in models}
    top_level = list(attrs)
    nautobot = type("BatchNautobotAdapter", (PartialNautobotAdapter,), {**attrs, "top_level": top_level})
    remote = type("BatchEventAdapter", (EventAdapter,), {**attrs, "top_level": top_level})
    return nautobot, remote
