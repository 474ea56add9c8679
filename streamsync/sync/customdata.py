"""Custom fields and relationships as attributes of any model, from Nautobot's own definitions.

Users define custom fields and relationships in Nautobot's UI, so no model's code can name them.
When a registry is built (a worker's start, a Nautobot process's first event), each model gets an
attribute per custom field of its Nautobot model, `cf_<key>`, and per relationship it is on,
`rel_<key>`. Custom fields go through contrib's own annotation; relationships through
streamsync/sync/relationships.py. A definition added later is seen after a restart.
docs/models.md spells the values.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from diffsync import DiffSyncModel
from nautobot_ssot.contrib import CustomFieldAnnotation
from pydantic import AfterValidator
from typing_extensions import TypedDict

from streamsync.models.derived import named_by
from streamsync.sync.relationships import RelationshipAnnotation, RelationshipWrites, in_order

log = structlog.get_logger(__name__)

CUSTOM_FIELD = "cf_"
RELATIONSHIP = "rel_"


def as_nautobot_stores_it(value: str | None) -> str | None:
    """A date and time as Nautobot stores a custom field's: UTC, whole seconds, `Z` (else it would differ each diff)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value  # Nautobot refuses it, and says why
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# A custom field's type -> the JSON value an event holds (dates and date-times as Nautobot stores them: ISO text).
_VALUE_TYPES: dict[str, Any] = {
    "text": str,
    "markdown": str,
    "url": str,
    "select": str,
    "date": str,
    "datetime": Annotated[str, AfterValidator(as_nautobot_stores_it)],
    "integer": int,
    "boolean": bool,
    "multi-select": list[str],
    "json": Any,
}


@dataclass(frozen=True)
class Definitions:
    """The custom fields and relationships of each Nautobot model, as read once from the database."""

    # Nautobot model -> (attribute name, annotation, value type), sorted by name.
    attributes: dict[type, tuple[tuple[str, Any, Any], ...]]
    # Relationships no event can address, with why (logged once per registry).
    skipped: tuple[str, ...]


def definitions(models: typing.Iterable[type]) -> Definitions:
    """Read the custom fields and relationships of these Nautobot models: two queries in all."""
    from django.contrib.contenttypes.models import ContentType
    from nautobot.extras.models import CustomField, Relationship

    wanted = {ContentType.objects.get_for_model(model): model for model in models}
    found: dict[type, list[tuple[str, Any, Any]]] = {model: [] for model in wanted.values()}
    for field in CustomField.objects.filter(content_types__in=list(wanted)).prefetch_related("content_types"):
        value_type = _VALUE_TYPES.get(field.type)
        if value_type is None:
            continue
        annotation = CustomFieldAnnotation(key=field.key)
        for content_type in field.content_types.all():
            if content_type in wanted:
                found[wanted[content_type]].append((CUSTOM_FIELD + field.key, annotation, value_type))
    skipped: list[str] = []
    relationships = Relationship.objects.select_related("source_type", "destination_type")
    for relationship in relationships.filter(source_type__in=list(wanted)) | relationships.filter(
        destination_type__in=list(wanted)
    ):
        for model, name, annotation, value_type in _relationship_attributes(relationship, wanted, skipped):
            found[model].append((name, annotation, value_type))
    return Definitions(
        {model: tuple(sorted(attrs, key=lambda a: a[0])) for model, attrs in found.items()},
        tuple(skipped),
    )


def _relationship_attributes(
    relationship: Any, wanted: dict[Any, type], skipped: list[str]
) -> list[tuple[type, str, Any, Any]]:
    """The attributes a relationship gives the wanted models on its ends (none where its peers have no key).

    `rel_<key>` on each end; a relationship between objects of one model gives it both ends, as
    `rel_<key>_destinations` and `rel_<key>_sources`, unless it is symmetric (one end, `peer`).
    """
    source, destination = relationship.source_type, relationship.destination_type
    if relationship.symmetric:
        ends = [("peer", source, destination, "")]
    else:
        both = source == destination
        ends = [
            ("source", source, destination, "_destinations" if both else ""),
            ("destination", destination, source, "_sources" if both else ""),
        ]
    attributes = []
    for end, mine, other, suffix in ends:
        if mine not in wanted:
            continue
        model = wanted[mine]
        peer = other.model_class()
        typed = named_by(peer) if peer is not None else "it is no model Django knows"
        if isinstance(typed, str):
            skipped.append(
                f"relationship {relationship.key!r} on {model._meta.label_lower}: "  # type: ignore[attr-defined]
                f"no event can name its peers ({other.app_label}.{other.model}): {typed}"
            )
            continue
        fields = tuple(typed)
        peer_dict = TypedDict(f"{peer.__name__}Peer", typed, total=False)  # type: ignore[misc]
        annotation = RelationshipAnnotation(key=relationship.key, end=end, peer_fields=fields)
        attributes.append((model, RELATIONSHIP + relationship.key + suffix, annotation, list[peer_dict]))
    return attributes


_CLASSES: dict[tuple[type, str], type[DiffSyncModel]] = {}


def with_custom_data(model: type[DiffSyncModel], found: Definitions) -> type[DiffSyncModel]:
    """`model` with an attribute per custom field and relationship of its Nautobot model (itself if none).

    One class per model and set of definitions, so registries built twice hold the same classes.
    An attribute the model declares itself is kept as it is.
    """
    orm = getattr(model, "_model", None)
    extra = tuple(a for a in found.attributes.get(orm, ()) if a[0] not in model.model_fields)  # type: ignore[arg-type]
    if not extra:
        return model
    signature = repr(extra)  # contrib's annotations do not hash
    cached = _CLASSES.get((model, signature))
    if cached is not None:
        return cached
    annotations: dict[str, Any] = {}
    for name, annotation, value_type in extra:
        if isinstance(annotation, RelationshipAnnotation):
            annotations[name] = Annotated[value_type | None, AfterValidator(in_order), annotation]
        else:
            annotations[name] = Annotated[value_type | None, annotation]
    namespace: dict[str, Any] = {
        "__module__": model.__module__,
        "__qualname__": model.__qualname__,
        "__annotations__": annotations,
        "_attributes": (*model._attributes, *annotations),
        **dict.fromkeys(annotations),
    }
    bases: tuple[type, ...] = (model,)
    if any(isinstance(annotation, RelationshipAnnotation) for _, annotation, _ in extra):
        bases = (RelationshipWrites, model)
    made = typing.cast(type[DiffSyncModel], type(model.__name__, bases, namespace))
    _CLASSES[(model, signature)] = made
    return made


def extended(models: typing.Iterable[type[DiffSyncModel]]) -> list[type[DiffSyncModel]]:
    """`models`, each with its Nautobot model's custom fields and relationships (see `with_custom_data`)."""
    models = list(models)
    bound = {orm for orm in (getattr(model, "_model", None) for model in models) if orm is not None}
    found = definitions(bound)
    for reason in found.skipped:
        log.warning("relationship not offered", reason=reason)
    return [with_custom_data(model, found) for model in models]
