"""Nautobot relationships as list attributes: every kind, both ends, one spelling.

contrib's relationship annotations take a single peer on some ends and a list on others, cannot
clear a single peer, replace a one-to-one peer by creating the new association before deleting
the old (which Nautobot refuses), and see only one end of a symmetric relationship. Here every
relationship attribute is the list of the object's peers, each named as events name it; Nautobot's
own association validation refuses more peers than the relationship's type allows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from diffsync.exceptions import ObjectCrudException
from nautobot_ssot.contrib.types import CustomAnnotation
from nautobot_ssot.utils.orm import orm_attribute_lookup

# Where `_handle_single_field` collects relationship values until the object is saved (bulk writes
# refuse objects with anything in it and leave them to the per-object path).
PENDING = "custom_relationship_many_to_many_fields"


@dataclass(frozen=True)
class RelationshipAnnotation(CustomAnnotation):
    """The object's end of a relationship: `source`, `destination`, or `peer` (symmetric: either end)."""

    key: str
    end: str
    peer_fields: tuple[str, ...]


def peers(relationship: Any, end: str, obj: Any) -> list[Any]:
    """The objects at the other end of `obj`'s associations of `relationship`."""
    from django.db.models import Q
    from nautobot.extras.models import RelationshipAssociation

    associations = RelationshipAssociation.objects.filter(relationship=relationship)
    if end == "source":
        return [a.destination for a in associations.filter(source_id=obj.pk)]
    if end == "destination":
        return [a.source for a in associations.filter(destination_id=obj.pk)]
    both = associations.filter(Q(source_id=obj.pk) | Q(destination_id=obj.pk))
    return [a.destination if a.source_id == obj.pk else a.source for a in both]


def in_order(value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """A list of peers in one order, without repeats: the order events list them in means nothing."""
    if value is None:
        return None
    unique = {json.dumps(peer, sort_keys=True, default=str): peer for peer in value}
    return [unique[text] for text in sorted(unique)]


def as_value(peer: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """A peer as events name it: its identifier fields, looked up as contrib loads `__` attributes."""
    return {field: orm_attribute_lookup(peer, field) for field in fields}


def relationship_of(adapter: Any, annotation: RelationshipAnnotation) -> Any:
    """The annotation's relationship, through the adapter's ORM cache: one query per batch, not per object."""
    from nautobot.extras.models import Relationship

    return adapter.get_from_orm_cache({"key": annotation.key}, Relationship)


def _peer_model(relationship: Any, end: str) -> Any:
    other = relationship.source_type if end == "destination" else relationship.destination_type
    return other.model_class()


class RelationshipWrites:
    """Mixin for a contrib model with relationship attributes: sets each one's associations after the save."""

    @classmethod
    def _handle_single_field(cls, field: str, obj: Any, value: Any, relationship_fields: Any, adapter: Any) -> None:
        annotation = cls.get_attr_annotation(field)  # type: ignore[attr-defined]
        if not isinstance(annotation, RelationshipAnnotation):
            super()._handle_single_field(field, obj, value, relationship_fields, adapter)  # type: ignore[misc]
            return
        relationship = relationship_of(adapter, annotation)
        model = _peer_model(relationship, annotation.end)
        found = []
        for parameters in value or []:
            try:
                found.append(model.objects.get(**parameters))
            except model.DoesNotExist as error:
                raise ObjectCrudException(
                    f"{field}: no {model._meta.verbose_name} {parameters} (relationship {relationship.label!r})"
                ) from error
            except model.MultipleObjectsReturned:
                raise ObjectCrudException(
                    f"{field}: more than one {model._meta.verbose_name} is {parameters}"
                    f" (relationship {relationship.label!r})"
                ) from None
        relationship_fields[PENDING][field] = (annotation, relationship, found)

    @classmethod
    def _set_custom_relationship_to_many_fields(cls, pending: Any, obj: Any, adapter: Any) -> None:
        for field, entry in pending.items():
            if not isinstance(entry, tuple):  # a contrib annotation the model declares itself
                super()._set_custom_relationship_to_many_fields({field: entry}, obj, adapter)  # type: ignore[misc]
                continue
            annotation, relationship, wanted = entry
            _set_peers(field, annotation, relationship, obj, wanted)


def _set_peers(field: str, annotation: RelationshipAnnotation, relationship: Any, obj: Any, wanted: list[Any]) -> None:
    """Make `obj`'s peers exactly `wanted`: removed associations go first, so a one-to-one peer can change."""
    from django.core.exceptions import ValidationError
    from django.db.models import Q
    from nautobot.extras.models import RelationshipAssociation

    keep = {peer.pk for peer in wanted}
    have = set()
    mine = Q(source_id=obj.pk) | Q(destination_id=obj.pk)
    for association in RelationshipAssociation.objects.filter(mine, relationship=relationship):
        if annotation.end != "destination" and association.source_id == obj.pk:
            other = association.destination_id
        elif annotation.end != "source" and association.destination_id == obj.pk:
            other = association.source_id
        else:
            continue
        if other in keep and other not in have:
            have.add(other)
        else:
            association.delete()
    for peer in wanted:
        if peer.pk in have:
            continue
        have.add(peer.pk)
        source, destination = (peer, obj) if annotation.end == "destination" else (obj, peer)
        association = RelationshipAssociation(
            relationship=relationship,
            source_type=relationship.source_type,
            source_id=source.pk,
            destination_type=relationship.destination_type,
            destination_id=destination.pk,
        )
        try:
            association.validated_save()
        except ValidationError as error:
            raise ObjectCrudException(f"{field} (relationship {relationship.label!r}): {error}") from error
