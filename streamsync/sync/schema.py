"""JSON Schema of what a source's events may carry: each model's `key` and `attrs`.

Producers in any language validate against it (`streamsync schema SOURCE`). It is read from the
same DiffSync models the registry checks events with, plus what Nautobot's own model knows: the
choices of a field such as an interface's `type`, which Nautobot refuses values outside of.
"""

from __future__ import annotations

from typing import Annotated, Any

from diffsync import DiffSyncModel
from django.core.exceptions import FieldDoesNotExist
from pydantic import BaseModel, TypeAdapter

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


# --- the same facts, one model at a time, for people (`streamsync models`) -----------------------


class FieldFacts(BaseModel):
    """One identifier or attribute as events spell it, read from its JSON Schema."""

    name: str
    type: str  # the JSON Schema type in words: "string or null", "list of {name: string}"
    choices: list[Any] | None = None  # the values Nautobot allows, when it has a fixed set
    default: Any = None  # what an upsert that creates the object gets when it omits the attribute
    has_default: bool = False
    required_on_create: bool = False
    description: str = ""


class ModelFacts(BaseModel):
    """What a producer must know of one model: its name in events, Nautobot's model, key and attrs."""

    model: str
    nautobot_model: str | None  # "ipam.vlan"; None for a model bound to no Nautobot model
    description: str
    key: list[FieldFacts]
    attrs: list[FieldFacts]


def model_facts(registry: ModelRegistry) -> list[ModelFacts]:
    """Each model of `registry`, parents first, with the facts its JSON Schema states (`model_schema`)."""
    facts = []
    for model in registry.in_order(registry):
        defs: dict[str, Any] = {}
        schema = model_schema(model, defs)
        required = set(schema["attrs"][REQUIRED_ON_CREATE])
        orm = getattr(model, "_model", None)
        facts.append(
            ModelFacts(
                model=model.get_type(),
                nautobot_model=orm._meta.label_lower if orm is not None else None,
                description=schema["description"],
                key=[_facts(name, field, defs) for name, field in schema["key"]["properties"].items()],
                attrs=[
                    _facts(name, field, defs, name in required) for name, field in schema["attrs"]["properties"].items()
                ],
            )
        )
    return facts


def _facts(name: str, schema: dict[str, Any], defs: dict[str, Any], required: bool = False) -> FieldFacts:
    choices = [value for value in schema["enum"] if value is not None] if "enum" in schema else None
    return FieldFacts(
        name=name,
        type=_words(schema, defs),
        choices=choices,
        default=schema.get("default"),
        has_default="default" in schema,
        required_on_create=required,
        description=schema.get("description", ""),
    )


def _words(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    """A JSON Schema type in a few words; what the words leave out, `streamsync schema` states in full."""
    if "$ref" in schema:
        return _words(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        options = [_words(option, defs) for option in schema["anyOf"]]
        return " or ".join(sorted(dict.fromkeys(options), key=lambda option: option == "null"))
    kind = schema.get("type")
    if kind == "array":
        return f"list of {_words(schema.get('items', {}), defs)}"
    if kind == "object" and "properties" in schema:
        inner = ", ".join(f"{name}: {_words(field, defs)}" for name, field in schema["properties"].items())
        return f"{{{inner}}}"
    if isinstance(kind, list):
        return " or ".join(kind)
    return kind or "any JSON value"
