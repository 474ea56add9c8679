"""Nautobot relationships as list attributes: every kind, both ends, one spelling.

contrib's relationship annotations take a single peer on some ends and a list on others, cannot
clear a single peer, replace a one-to-one peer by creating the new association before deleting
the old (which Nautobot refuses), and see only one end of a symmetric relationship. Here every
relationship attribute is the list of the object's peers, each named as events name it; Nautobot's
own association validation refuses more peers than the relationship's type allows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from diffsync.exceptions import ObjectCrudException
from django.core.exceptions import FieldError
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
    return peers_of(relationship, end, [obj]).get(obj.pk, [])


def peers_of(relationship: Any, end: str, objects: Sequence[Any], fields: tuple[str, ...] = ()) -> dict[Any, list[Any]]:
    """Each object's peers by its primary key: one query for the associations, one for the peers.

    The peers come with the related rows `fields` name (as `as_value` reads them), so that naming
    them costs no query per peer either. A peer whose row is gone is left out.
    """
    from django.db.models import Q
    from nautobot.extras.models import RelationshipAssociation

    wanted = {obj.pk for obj in objects}
    if not wanted:
        return {}
    associations = RelationshipAssociation.objects.filter(relationship=relationship)
    if end == "source":
        associations = associations.filter(source_id__in=wanted)
    elif end == "destination":
        associations = associations.filter(destination_id__in=wanted)
    else:
        associations = associations.filter(Q(source_id__in=wanted) | Q(destination_id__in=wanted))
    links: list[tuple[Any, Any]] = []  # (object, peer) primary keys
    for source_id, destination_id in associations.values_list("source_id", "destination_id"):
        if end != "destination" and source_id in wanted:
            links.append((source_id, destination_id))
        if end != "source" and destination_id in wanted and not (end == "peer" and source_id == destination_id):
            links.append((destination_id, source_id))
    if not links:
        return {}
    related = sorted({field.rpartition("__")[0] for field in fields if "__" in field})
    rows = _peer_model(relationship, end)._base_manager.filter(pk__in={peer for _, peer in links})
    try:
        found = {row.pk: row for row in rows.prefetch_related(*related)}
    except (FieldError, AttributeError, ValueError):  # a path that is no relation: read as contrib reads it
        found = {row.pk: row for row in rows}
    out: dict[Any, list[Any]] = {}
    for obj_pk, peer_pk in links:
        if peer_pk in found:
            out.setdefault(obj_pk, []).append(found[peer_pk])
    return out


def relationship_attributes(diffsync_model: Any) -> list[tuple[str, RelationshipAnnotation]]:
    """The model's relationship attributes and their annotations."""
    out = []
    for name in diffsync_model.get_synced_attributes():
        annotation = diffsync_model.get_attr_annotation(name)
        if isinstance(annotation, RelationshipAnnotation):
            out.append((name, annotation))
    return out


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
    from django.contrib.contenttypes.models import ContentType

    other = relationship.source_type_id if end == "destination" else relationship.destination_type_id
    return ContentType.objects.get_for_id(other).model_class()  # Django's cache: no query per batch


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
