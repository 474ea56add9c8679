"""Contrib models derived from Nautobot's own metadata, for Nautobot models no built-in model covers.

A source names one as `app_label.model` (`dcim.rack`). The derived model is an ordinary
`nautobot_ssot.contrib` model, made once per Nautobot model:

- identifiers: the model's natural key, Nautobot's `natural_key_field_lookups` (a related object
  by its own natural key, as contrib's `__` lookups: a rack is `name`, `rack_group__name`,
  `rack_group__location__name`);
- attributes: every other editable concrete field, a foreign key by the related model's natural
  key, many-to-many fields as lists of the related objects' natural keys (tags as `{"name"}`,
  content types as `{"app_label", "model"}`, as the built-in models spell them);
- an attribute is required when an upsert creates the object exactly when Nautobot requires it
  (not null, not blank, no default); a required status defaults to "Active", as the built-ins'.

A location is named by its name alone, as the built-in models name it: Nautobot's own natural key
of a location grows with the depth of the location tree in the database (`parent__parent__name`),
so a key derived from it would change under the producer. Nautobot calls the same
name-only key its `LOCATION_NAME_AS_NATURAL_KEY`.

What a derivation cannot guess is refused (`Refused`), never written in part: see `REFUSED` and
`refusal()`. Fields it cannot carry faithfully are left out and named in the model's description
(what `streamsync models` prints), so an event naming one is rejected as an undeclared attribute.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import threading
import types
from typing import Annotated, Any

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from nautobot.core.models import BaseModel
from nautobot.dcim.models import Location
from nautobot_ssot.contrib.typeddicts import ContentTypeDict, SortKey, TagDict
from pydantic import Field
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from streamsync.models import builtin_for, builtin_model
from streamsync.models.base import BuiltinModel

# Nautobot models whose behaviour a derived model would get wrong, and why (docs/models.md lists them).
_TEMPLATED = (
    "Nautobot creates it from its device or module type's templates and names it through its module's "
    "primary key, which no event can know"
)
REFUSED: dict[str, str] = {
    "dcim.cable": (
        "a cable terminates on two ends, each of several types (interface, front or rear port, console, "
        "power or circuit termination), and Nautobot names a cable by its primary key alone"
    ),
    "dcim.virtualchassis": (
        "its master is one of its member devices, which point back at it: the chassis and its members must "
        "be written together, in an order no derivation can tell"
    ),
    "dcim.consoleport": _TEMPLATED,
    "dcim.consoleserverport": _TEMPLATED,
    "dcim.powerport": _TEMPLATED,
    "dcim.poweroutlet": _TEMPLATED,
    "dcim.frontport": _TEMPLATED,
    "dcim.rearport": _TEMPLATED,
    "dcim.devicebay": _TEMPLATED,
    "dcim.inventoryitem": _TEMPLATED,
    "users.user": "a user's password is kept hashed and its permissions granted in Nautobot, not synced from a source",
    "users.token": "a token's key is a secret Nautobot makes, not data a source owns",
    "ipam.ipaddresstointerface": (
        "it assigns an IP address to an interface of a device or of a virtual machine, one of two foreign "
        "keys, and Nautobot names it by its primary key"
    ),
    "ipam.ipaddressrange": (
        "its end host is an IP address field, which derived attributes leave out, and Nautobot resolves its "
        "parent prefix from its hosts: a derived model could create none"
    ),
    "ipam.vrfdeviceassignment": (
        "it assigns a VRF to a device, a virtual machine or a virtual device context, one of three foreign "
        "keys, and Nautobot's natural key names the device alone: assignments to the others share one key"
    ),
}

# The foreign keys whose default the built-in models chose (a required status is "Active" there too).
_REFERENCE_DEFAULTS: dict[tuple[str, str], str] = {("extras.status", "name"): "Active"}

_SCALARS: dict[str, type] = {
    "CharField": str,
    "TextField": str,
    "SlugField": str,
    "URLField": str,
    "EmailField": str,
    "IntegerField": int,
    "SmallIntegerField": int,
    "BigIntegerField": int,
    "PositiveIntegerField": int,
    "PositiveSmallIntegerField": int,
    "PositiveBigIntegerField": int,
    "BooleanField": bool,
    "FloatField": float,
    "DecimalField": decimal.Decimal,
    "DateField": datetime.date,
    "DateTimeField": datetime.datetime,
    "VarbinaryIPField": str,  # an IP address's host, which Nautobot reads and filters as text
}
# Stored as text but read back as objects (a zone, a MAC address) that never equal an event's string.
_OBJECT_VALUED = {"TimeZoneField", "MACAddressCharField"}
_REQUIRED = object()  # no default: an upsert that creates the object must name it


class Refused(ValueError):
    """A Nautobot model a derived model cannot sync faithfully; the message names it and says why."""

    def __init__(self, label: str, why: str) -> None:
        super().__init__(f"{label} cannot be derived: {why}")
        self.label = label
        self.why = why


def nautobot_model(name: str) -> type[models.Model] | None:
    """The Nautobot (Django) model `name` spells as `app_label.model` (`dcim.rack`), or None if it names none."""
    from django.apps import apps

    app_label, dot, model_name = name.partition(".")
    if not dot or "." in model_name:
        return None
    try:
        return apps.get_model(app_label, model_name)
    except (LookupError, ValueError):
        return None


def refusal(orm: type[models.Model]) -> str | None:
    """Why `orm` cannot be derived, or None when it can."""
    return REFUSED.get(orm._meta.label_lower) or _unnameable(orm)


def _unnameable(orm: type[models.Model]) -> str | None:
    """Why an event cannot name an object of `orm` (to sync it, or to refer to it), or None when it can."""
    if orm is ContentType:
        return None
    if not issubclass(orm, BaseModel):
        return "it is not a Nautobot model: it has no natural key"
    generic = _generic_fields(orm)
    if generic:
        return f"its generic foreign key(s) {sorted(generic)} may point at any type of object: no natural key names it"
    try:
        key = natural_key(orm)
    except (AttributeError, FieldDoesNotExist) as error:
        return f"Nautobot knows no natural key for it ({error})"
    by_pk = [lookup for lookup in key if _by_pk(lookup)]
    if by_pk:
        return f"Nautobot names it by a primary key ({', '.join(by_pk)}), which no event can know"
    for lookup in key:
        field = _field(orm, lookup)
        if _scalar(field) is None:
            return f"its natural key {lookup} is a {type(field).__name__}, not a value an event can carry"
    return None


def derived_model(orm: type[models.Model]) -> type[BuiltinModel]:
    """The contrib model derived for `orm`, made once; `Refused` when it cannot be derived.

    Once per process, also in a threaded web server (the event broker resolves models there): two
    classes for one Nautobot model would be two models of one name to the registry.
    """
    with _deriving:
        return _derived(orm._meta.label_lower)


_deriving = threading.Lock()


@functools.cache
def _derived(label: str) -> type[BuiltinModel]:
    from django.apps import apps

    orm = apps.get_model(label)
    why = refusal(orm)
    if why is not None:
        raise Refused(label, why)
    identifiers = natural_key(orm)
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {}
    for lookup in identifiers:
        annotation, nullable = _lookup_type(orm, lookup)
        annotations[lookup] = annotation | None if nullable else annotation
        if nullable:
            namespace[lookup] = None
    attributes: list[str] = []
    skipped: dict[str, str] = {}
    for field in _editable(orm):
        fields = _attribute(field, set(identifiers))
        if isinstance(fields, str):
            skipped[field.name] = fields
            continue
        for name, (annotation, default) in fields.items():
            if name in annotations:
                continue
            attributes.append(name)
            annotations[name] = annotation
            if default is not _REQUIRED:
                namespace[name] = default
    namespace.update(
        {
            "__annotations__": annotations,
            "__module__": __name__,
            "__doc__": _doc(orm, identifiers, skipped),
            "_model": orm,
            "_modelname": orm._meta.model_name,
            "_identifiers": tuple(identifiers),
            "_attributes": tuple(attributes),
        }
    )
    name = f"Derived{orm.__name__}Model"
    return types.new_class(name, (BuiltinModel,), {}, lambda ns: ns.update(namespace))


def natural_key(orm: type[models.Model]) -> list[str]:
    """`orm`'s natural key lookups as Nautobot derives them, a location named by its name alone (see above)."""
    if orm is Location:
        return ["name"]
    if orm is ContentType:
        return ["app_label", "model"]
    if any("natural_key_field_lookups" in vars(klass) for klass in orm.__mro__[: orm.__mro__.index(BaseModel)]):
        return list(orm.natural_key_field_lookups)  # a model's own (a pk, for those Nautobot names so)
    lookups = []
    for name in _natural_key_names(orm):
        if _by_pk(name):
            lookups.append(name)
            continue
        owner, _, last = _walk(orm, name)
        field = owner._meta.get_field(last)
        if field.is_relation and field.related_model is not None:
            related = _reference(field.related_model)
            related = natural_key(field.related_model) if isinstance(related, str) else related
            lookups += [f"{name}__{lookup}" for lookup in related]
        else:
            lookups.append(name)
    return lookups


def _reference(orm: type[models.Model]) -> list[str] | str:
    """The lookups an event names an object of `orm` by where it refers to one, or why it cannot.

    Nautobot's natural key; where Nautobot names `orm` by a primary key (a VLAN, a module) but a
    built-in model keys it, that model's identifiers, as its own events spell them.
    """
    why = _unnameable(orm)
    if why is None:
        return natural_key(orm)
    builtin = builtin_for(orm._meta.label_lower)
    return why if builtin is None else list(builtin_model(builtin)._identifiers)


def named_by(orm: type[models.Model]) -> dict[str, Any] | str:
    """How an event names one object of `orm` anywhere it is not the event's own model, or why it cannot.

    The lookups of `_reference` (Nautobot's natural key, or a built-in model's key where Nautobot
    names `orm` by a primary key), each with the type of its value (None allowed where it may be null).
    """
    lookups = _reference(orm)
    if isinstance(lookups, str):
        return lookups
    if _unnameable(orm) is not None:  # named by a built-in model's key: its own types
        builtin = builtin_model(builtin_for(orm._meta.label_lower) or "")
        return {lookup: builtin.model_fields[lookup].annotation for lookup in lookups}
    typed = {}
    for lookup in lookups:
        scalar, nullable = _lookup_type(orm, lookup)
        typed[lookup] = scalar | None if nullable else scalar
    return typed


def _natural_key_names(orm: type[models.Model]) -> list[str]:
    """The fields Nautobot's `BaseModel.natural_key_field_lookups` starts from, chosen as it chooses them."""
    names = getattr(orm, "natural_key_field_names", None)
    if names:
        return list(names)
    for constraint in orm._meta.constraints:
        if isinstance(constraint, models.UniqueConstraint):
            return list(constraint.fields)
    if orm._meta.unique_together:
        return list(orm._meta.unique_together[0])
    unique = [field.name for field in orm._meta.fields if field.unique and field.name != "id"]
    if unique:
        return unique[:1]
    raise AttributeError(f"{orm.__name__} has no unique constraint, unique_together or unique field")


def _walk(orm: type[models.Model], lookup: str) -> tuple[type[models.Model], bool, str]:
    """The model `lookup`'s last part is a field of, whether a foreign key on the way may be null, that part."""
    *hops, last = lookup.split("__")
    nullable = False
    for hop in hops:
        field = orm._meta.get_field(hop)
        nullable = nullable or bool(field.null)
        orm = field.related_model
    return orm, nullable, last


def _by_pk(lookup: str) -> bool:
    return lookup.rsplit("__", 1)[-1] in {"pk", "id"}


def _field(orm: type[models.Model], lookup: str) -> Any:
    owner, _, last = _walk(orm, lookup)
    return owner._meta.get_field(last)


def _scalar(field: Any) -> type | None:
    return _SCALARS.get(field.get_internal_type()) or _SCALARS.get(type(field).__name__)


def _lookup_type(orm: type[models.Model], lookup: str) -> tuple[Any, bool]:
    """The Python type of a natural key lookup (`_unnameable` checked it has one), and whether it may be None."""
    _, nullable, _ = _walk(orm, lookup)
    field = _field(orm, lookup)
    scalar = _scalar(field)
    assert scalar is not None, lookup
    return scalar, nullable or bool(field.null)


def _generic_fields(orm: type[models.Model]) -> set[str]:
    """Fields of generic foreign keys that are part of what the model is (not Nautobot's config-context owner)."""
    fields = set()
    for private in orm._meta.private_fields:
        if isinstance(private, GenericForeignKey) and not private.ct_field.startswith("local_config_context"):
            fields.add(private.name)
    return fields


def _editable(orm: type[models.Model]) -> list[models.Field[Any, Any]]:
    """The fields an event may set: editable, concrete or many-to-many, none of Nautobot's internal ones."""
    generic = {
        name
        for private in orm._meta.private_fields
        if isinstance(private, GenericForeignKey)
        for name in (private.ct_field, private.fk_field)
    }
    fields = [*orm._meta.concrete_fields, *orm._meta.many_to_many]
    return [
        field
        for field in fields
        if field.editable and not field.primary_key and not field.name.startswith("_") and field.name not in generic
    ]


def _attribute(field: models.Field[Any, Any], identifiers: set[str]) -> dict[str, tuple[Any, Any]] | str:
    """An editable field as attributes: {name: (annotation, default)}, or why it is left out."""
    if field.many_to_many:
        return _many(field)
    if field.is_relation:
        return _foreign_key(field, identifiers)
    kind = field.get_internal_type()
    if type(field).__name__ in _OBJECT_VALUED:
        return f"a {type(field).__name__} is read back as an object, not the text an event carries"
    if kind == "JSONField":
        annotation: Any = Any
    elif kind in _SCALARS:
        annotation = _SCALARS[kind]
    else:
        return f"a {type(field).__name__} has no JSON form here"
    if field.null and annotation is not Any:
        annotation = annotation | None
    return {field.name: (annotation, _default(field, annotation))}


def _default(field: models.Field[Any, Any], annotation: Any) -> Any:
    """Nautobot's default for `field`, or _REQUIRED when Nautobot has none and refuses it empty."""
    if field.has_default():
        default = field.default
        if callable(default):
            return Field(default_factory=default) if default in (dict, list) else _REQUIRED
        return default
    if field.null:
        return None
    if field.blank and annotation is str:
        return ""
    if field.blank and field.get_internal_type() == "JSONField":
        return None
    return _REQUIRED


def _foreign_key(field: models.Field[Any, Any], identifiers: set[str]) -> dict[str, tuple[Any, Any]] | str:
    """A foreign key as its related object's natural key lookups (`rack_group__name`, `rack_group__location__name`)."""
    related = field.related_model
    assert related is not None
    key = _reference(related)
    if isinstance(key, str):
        return f"it refers to {related._meta.label_lower}, and {key}"
    names = {f"{field.name}__{lookup}": lookup for lookup in key}
    if set(names) <= identifiers:
        return {}
    attrs: dict[str, tuple[Any, Any]] = {}
    for name, lookup in names.items():
        annotation, nullable = _lookup_type(related, lookup)
        if field.null or nullable:
            attrs[name] = (annotation | None, None)
            continue
        preset = _REFERENCE_DEFAULTS.get((related._meta.label_lower, lookup))
        attrs[name] = (annotation, _REQUIRED if preset is None else preset)
    return attrs


def _many(field: models.Field[Any, Any]) -> dict[str, tuple[Any, Any]] | str:
    """A many-to-many field as a list of its related objects' natural keys."""
    related = field.related_model
    assert related is not None
    if field.name == "tags":
        return {"tags": (list[TagDict], Field(default_factory=list))}
    if related is ContentType:
        return {field.name: (list[ContentTypeDict], Field(default_factory=list))}
    through = field.remote_field.through
    if not through._meta.auto_created:
        return f"it is assigned through {through._meta.label_lower}, which holds fields of its own"
    key = _reference(related)
    if isinstance(key, str):
        return f"it refers to {related._meta.label_lower}, and {key}"
    keys: dict[str, Any] = {}
    for i, lookup in enumerate(key):
        annotation, nullable = _lookup_type(related, lookup)
        annotation = annotation | None if nullable else annotation
        keys[lookup] = Annotated[annotation, SortKey] if i == 0 else annotation
    item = TypedDict(f"{related.__name__}Dict", keys)  # type: ignore[misc]
    return {field.name: (types.GenericAlias(list, (item,)), Field(default_factory=list))}


def _doc(orm: type[models.Model], identifiers: list[str], skipped: dict[str, str]) -> str:
    key, label = ", ".join(identifiers), orm._meta.label_lower
    doc = f"A {orm._meta.verbose_name} ({label}), derived from Nautobot's metadata: identified by {key}."
    if skipped:
        doc += " Not synced: " + "; ".join(f"{name} ({why})" for name, why in sorted(skipped.items())) + "."
    return doc
