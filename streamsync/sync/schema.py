"""JSON Schema of what a source's events may carry: each model's `key` and `attrs`.

Producers in any language validate against it (`streamsync schema SOURCE`). It is read from the
same DiffSync models the registry checks events with, plus what Nautobot's own model knows: the
choices of a field such as an interface's `type`, which Nautobot refuses values outside of.
"""

from __future__ import annotations

from typing import Annotated, Any

from diffsync import DiffSyncModel
from django.core.exceptions import FieldDoesNotExist
from pydantic import TypeAdapter

from streamsync.contract.schema import envelope_schema
from streamsync.sync.registry import ModelRegistry

# Attributes an upsert must name when it creates the object (they have no default); an annotation,
# since an upsert that updates may leave them out. Validators ignore keywords they do not know.
REQUIRED_ON_CREATE = "x-required-on-create"


def _field_schema(model: type[DiffSyncModel], name: str, defs: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of one field, its shared definitions (tags, content types) moved into `defs`.

    An attribute's default is what Nautobot gets when an upsert that creates the object omits it;
    an identifier has none that matters, since a key names every identifier.
    """
    field = model.model_fields[name]
    annotation: Any = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    schema = TypeAdapter(annotation).json_schema(ref_template="#/$defs/{model}")
    defs.update(schema.pop("$defs", {}))
    if field.description:
        schema["description"] = field.description
    if not field.is_required() and name not in model._identifiers:
        schema["default"] = field.get_default(call_default_factory=True)
    choices = _choices(model, name)
    if choices is not None:
        schema["enum"] = choices + ([None] if _accepts_none(schema) else [])
    return schema


def _accepts_none(schema: dict[str, Any]) -> bool:
    return any(option.get("type") == "null" for option in schema.get("anyOf", []))


def _choices(model: type[DiffSyncModel], name: str) -> list[Any] | None:
    """The values Nautobot allows for the model field `name` is bound to, when it has a fixed set."""
    orm = getattr(model, "_model", None)
    if orm is None or "__" in name:
        return None
    try:
        field = orm._meta.get_field(name)
    except FieldDoesNotExist:
        return None
    if not getattr(field, "choices", None):
        return None
    values = [value for value, _ in field.flatchoices]
    if field.blank and "" not in values:
        values.append("")
    return values


def model_schema(model: type[DiffSyncModel], defs: dict[str, Any]) -> dict[str, Any]:
    """`key` and `attrs` of one model's events."""
    key = {name: _field_schema(model, name, defs) for name in model._identifiers}
    attrs = {name: _field_schema(model, name, defs) for name in model._attributes}
    required = [name for name in model._attributes if model.model_fields[name].is_required()]
    doc = (model.__doc__ or "").strip().split("\n\n")[0]
    return {
        "description": " ".join(doc.split()),
        "key": {
            "description": "every identifier, compared as written",
            "type": "object",
            "properties": key,
            "required": list(model._identifiers),
            "additionalProperties": False,
        },
        "attrs": {
            "description": "the attributes an upsert sets; those in x-required-on-create when it creates the object",
            "type": "object",
            "properties": attrs,
            "additionalProperties": False,
            REQUIRED_ON_CREATE: required,
        },
    }


def source_schema(source: str, registry: ModelRegistry) -> dict[str, Any]:
    """The envelope's schema narrowed to `source`: its name, its models, and each model's key and attrs."""
    envelope = envelope_schema()
    defs: dict[str, Any] = dict(envelope.pop("$defs"))
    models = {model.get_type(): model_schema(model, defs) for model in registry.in_order(registry)}
    rules = [
        {
            "if": {"properties": {"model": {"const": name}}},
            "then": {"properties": {"key": schema["key"], "attrs": schema["attrs"]}},
            "description": schema["description"],
        }
        for name, schema in models.items()
    ]
    return {
        "$schema": envelope.pop("$schema"),
        "title": f"{envelope.pop('title')} for source {source}",
        "description": (
            f"Events of source {source!r} on <prefix>.{source}.events: the envelope, and per model (parents "
            f"first) its key and attrs. x-required-on-create lists the attributes an upsert that creates the "
            "object must name."
        ),
        "allOf": [envelope, {"properties": {"source": {"const": source}, "model": {"enum": list(models)}}}, *rules],
        "$defs": defs,
    }
