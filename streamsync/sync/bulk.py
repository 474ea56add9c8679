"""Many creates of one model written in one INSERT, as Nautobot writes them one by one.

A create through contrib (`NautobotModel.create`) costs a savepoint, an INSERT and an ObjectChange
INSERT per object. Here the objects are built one by one exactly as contrib builds them (its own
parameter handling) and validated as `full_clean()` validates them, the checks that cost a query
per object (foreign keys, unique checks) made once for the chunk (`refused`); then written together:

- `pre_save` sent for each, one `bulk_create`, `post_save` (created) sent for each: every receiver
  Nautobot and the installed apps connect runs as for a single save;
- many-to-many fields (tags, content types) set per object through the model's own
  `_set_many_to_many_fields`, which fires `m2m_changed` as a single create does;
- the ObjectChanges recorded by Nautobot's own change-logging receivers in its deferred mode (the
  one its bulk edit uses) and inserted with one `bulk_create`: same action, user, request id,
  context and detail, and object data serialised from the final object (in one pass for the
  chunk), as a single save's ends up after its tags are set. The change context then remembers
  them as a single save's would, so a later save of the object in the same context updates that
  row instead of adding another.

Only models whose `save()` adds nothing to Django's and whose receivers are known to give the same
result when run after the INSERT are written this way (`bulk_safe`): a new receiver (a Nautobot
upgrade, an installed app) sends its model back to the per-object path by itself.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from streamsync.sync.adapters import matching

# Nautobot models that may be written in bulk (app label.model name), if their receivers allow it.
# The others, and why, are listed in docs/architecture.md ("The bulk write path").
CANDIDATES = frozenset(
    {
        "tenancy.tenant",
        "extras.role",
        "ipam.vlangroup",
        "ipam.vlan",
        "ipam.namespace",
        "dcim.manufacturer",
        "dcim.platform",
        # Assignments (explicit many-to-many through models): Nautobot logs a change to both objects
        # they join, serialised whole; in bulk each joined object is serialised once per chunk.
        "ipam.prefixlocationassignment",
        "ipam.vlanlocationassignment",
        "cloud.cloudnetworkprefixassignment",
        "cloud.cloudservicenetworkassignment",
        "vpn.vpnprofilephase1policyassignment",
        "vpn.vpnprofilephase2policyassignment",
        "extras.jobqueueassignment",
        "wireless.controllermanageddevicegroupradioprofileassignment",
        "wireless.controllermanageddevicegroupwirelessnetworkassignment",
    }
)

# Receivers that give what a single save gives when they run after the whole chunk is inserted,
# not between one object's INSERT and the next: they look at the one object, never at its siblings.
# Nautobot's change logging (nothing to do before a create; the ObjectChange after it), the check
# that a VLAN's or prefix's locations may hold it, and streamsync's event broker (it notes that the
# object is new, or what it was before a many-to-many change).
KNOWN_RECEIVERS = frozenset(
    {
        "nautobot.extras.signals._handle_changed_object_pre_save",
        "nautobot.extras.signals._handle_changed_object",
        "nautobot.ipam.signals.assert_locations_content_types",
        "streamsync.outbox.broker.StreamsyncEventBroker._on_pre_save",
        "streamsync.outbox.broker.StreamsyncEventBroker._on_post_save",
        "streamsync.outbox.broker.StreamsyncEventBroker._on_m2m_changed",
    }
)

# Where a model's methods may come from: Django's own, or overrides known to add nothing for the
# objects built here. VLAN's save() sets its legacy `location` only when one was given, which
# `build` refuses; Nautobot's full_clean() only leaves out sensitive fields it did not load.
DJANGO = "django.db.models.base.Model"
KNOWN_METHODS = {
    "save": frozenset({DJANGO, "nautobot.ipam.models.VLAN"}),
    "full_clean": frozenset({DJANGO, "nautobot.core.models.BaseModel"}),
    "clean_fields": frozenset({DJANGO}),
    "validate_unique": frozenset({DJANGO}),
    "_perform_unique_checks": frozenset({DJANGO}),
}

# contrib's relationship buckets that need a saved object and are not reproduced here.
UNSUPPORTED = ("custom_relationship_foreign_keys", "custom_relationship_many_to_many_fields", "object_metadata_fields")


class NotBulk(Exception):
    """An object that cannot be written in bulk: the per-object path writes it."""


@dataclass
class Create:
    """One object ready to be inserted, and its many-to-many values to set once it is."""

    instance: Any
    many: dict[str, list[Any]]


def receivers(django_model: type, signal: Any) -> list[str]:
    """Dotted names of the receivers `signal` calls for `django_model` now."""
    live = signal._live_receivers(django_model)
    if isinstance(live, tuple):  # Django >= 5: (sync receivers, async receivers)
        live = [*live[0], *live[1]]
    return [receiver_name(receiver) for receiver in live]


def receiver_name(receiver: Any) -> str:
    """A receiver's dotted name, as KNOWN_RECEIVERS spells it."""
    function = getattr(receiver, "__func__", receiver)
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"


def _owner(django_model: type, method: str) -> str:
    owner = next(klass for klass in django_model.__mro__ if method in vars(klass))
    return f"{owner.__module__}.{owner.__name__}"


def unsafe_because(django_model: type) -> str | None:
    """Why `django_model` must stay on the per-object path, or None when it may be written in bulk."""
    from django.db.models.signals import m2m_changed, post_save, pre_save

    label = django_model._meta.label_lower  # type: ignore[attr-defined]
    if label not in CANDIDATES:
        return f"{label} is not a bulk candidate"
    for method, known in KNOWN_METHODS.items():
        if _owner(django_model, method) not in known:
            return f"{label}.{method}() is {_owner(django_model, method)}'s"
    if django_model()._get_unique_checks()[1]:
        return f"{label} has unique_for_date checks"
    throughs = [field.remote_field.through for field in django_model._meta.many_to_many]  # type: ignore[attr-defined]
    checks = [(pre_save, django_model), (post_save, django_model), *((m2m_changed, through) for through in throughs)]
    for signal, sender in checks:
        unknown = sorted(set(receivers(sender, signal)) - KNOWN_RECEIVERS)
        if unknown:
            return f"{label}: unknown receivers {unknown}"
    return None


@functools.cache
def bulk_safe(django_model: type) -> bool:
    """Whether creates of `django_model` may be written in bulk; once per process (receivers connect at start-up)."""
    return unsafe_because(django_model) is None


def build(model: Any, adapter: Any, parameters: dict[str, Any]) -> Create:
    """An unsaved, validated object of `model` from its parameters, as contrib's create builds it before saving.

    Raises what contrib or Nautobot raise for it (the per-object path then writes it and reports
    the same reason), or NotBulk when it needs what is not reproduced here.
    """
    instance = model._model()
    return Create(instance, prepare(model, adapter, instance, parameters))


def prepare(model: Any, adapter: Any, obj: Any, parameters: dict[str, Any]) -> dict[str, list[Any]]:
    """Set `parameters` on `obj` as contrib does and validate it as a save would; its many-to-many values.

    Raises what contrib or Nautobot raise (the per-object path then reports the same reason), or
    NotBulk when the object needs what the bulk paths do not reproduce.
    """
    if getattr(adapter, "metadata_type", None):
        raise NotBulk("object metadata")
    fields: dict[str, Any] = {
        "foreign_keys": defaultdict(dict),
        "many_to_many_fields": defaultdict(list),
        **{name: defaultdict(dict) for name in UNSUPPORTED},
    }
    for name, value in parameters.items():
        model._handle_single_field(name, obj, value, fields, adapter)
    if any(fields[name] for name in UNSUPPORTED) or getattr(obj, "_location", None) is not None:
        raise NotBulk("relationships or a legacy location")
    model._lookup_and_set_foreign_keys(fields["foreign_keys"], obj, adapter)
    # full_clean() but what costs a query per object (a foreign key's existence, each unique check):
    # `refused` checks those for the whole chunk. A foreign key's other checks are its emptiness.
    foreign = foreign_keys(type(obj))
    obj.full_clean(exclude={f.name for f in foreign}, validate_unique=False, validate_constraints=False)
    for f in foreign:
        if getattr(obj, f.attname) in f.empty_values and not f.blank:
            raise NotBulk(f"{f.name} is empty")  # the per-object path says so as Nautobot does
    obj.validate_constraints()
    return dict(fields["many_to_many_fields"])


def foreign_keys(django_model: type) -> list[Any]:
    """The model's foreign keys (and one-to-one fields), whose existence `refused_rows` checks per chunk."""
    return [f for f in django_model._meta.concrete_fields if f.many_to_one or f.one_to_one]  # type: ignore[attr-defined]


def refused(creates: Sequence[Create]) -> set[int]:
    """Which of the chunk's new objects (by index) fail the checks `build` leaves out (`refused_rows`)."""
    return refused_rows([create.instance for create in creates])


def refused_rows(instances: Sequence[Any]) -> set[int]:
    """Which of the chunk's objects (by index) fail the checks left out of `full_clean()`, one query per check.

    A foreign key must name an existing row its field allows (`limit_choices_to`); no unique check
    may match another row in the database or an earlier object of the chunk (which the per-object
    path would have written first). Each is checked as Django's `ForeignKey.validate` and
    `_perform_unique_checks` check it (an object already saved never clashes with its own row); a
    refused object goes to the per-object path, which says why.

    Raises NotBulk when an object of the chunk wants a value another one of the chunk holds now:
    whether it is free depends on which is written first, which only the per-object path keeps.
    """
    from django.db import connection, router

    if not instances:
        return set()
    out: set[int] = set()
    first = instances[0]
    for f in foreign_keys(type(first)):
        wanted = {getattr(instance, f.attname) for instance in instances} - {None}
        if not wanted:
            continue
        remote = f.remote_field
        rows = remote.model._base_manager.using(router.db_for_read(remote.model, instance=first))
        rows = rows.filter(**{f"{remote.field_name}__in": wanted}).complex_filter(f.get_limit_choices_to())
        found = set(rows.values_list(remote.field_name, flat=True))
        out |= {i for i, instance in enumerate(instances) if getattr(instance, f.attname) not in found | {None}}
    saved = {instance.pk for instance in instances if not instance._state.adding}
    unique_checks, _ = first._get_unique_checks()
    for model_class, names in unique_checks:
        keys: list[tuple[int, tuple[Any, ...]]] = []
        for i, instance in enumerate(instances):
            values = tuple(getattr(instance, instance._meta.get_field(name).attname) for name in names)
            if any(v is None or (v == "" and connection.features.interprets_empty_strings_as_nulls) for v in values):
                continue  # as Django: a NULL never clashes
            keys.append((i, values))
        if not keys:
            continue
        candidates = [dict(zip(names, values, strict=True)) for _, values in keys]
        holders: dict[tuple[Any, ...], set[Any]] = defaultdict(set)  # rows holding the values now
        for pk, *values in model_class._default_manager.filter(matching(candidates)).values_list("pk", *names):
            holders[tuple(values)].add(pk)
        wants = {instances[i].pk: values for i, values in keys}
        claimed: set[tuple[Any, ...]] = set()
        for i, values in keys:
            others = holders[values] - {instances[i].pk}  # a saved object never clashes with its own row
            if any(wants.get(pk) != values for pk in others & saved):
                raise NotBulk(f"{names} {values} is held now by an object of the chunk that changes it")
            if others or values in claimed:
                out.add(i)
            claimed.add(values)  # a later object of the chunk with the same values fails after this one
    return out


def write(model: Any, creates: Sequence[Create]) -> None:
    """Insert `creates` (objects of `model`) in one savepoint with what their single saves would also write.

    Raises whatever fails; the savepoint is then rolled back and the change context is as it was.
    """
    from django.db import router
    from django.db.models.signals import post_save, pre_save

    django_model = model._model
    using = router.db_for_write(django_model)
    # A new object's tags are those just set; more than one are read back in the database's order.
    tags = {id(c.instance): [t.name for t in c.many.get("tags", [])] for c in creates}
    known = {key: names for key, names in tags.items() if len(names) < 2}
    with change_logged([create.instance for create in creates], lambda instance: known.get(id(instance)), using):
        for create in creates:
            pre_save.send(sender=django_model, instance=create.instance, raw=False, using=using, update_fields=None)
        django_model.objects.bulk_create([create.instance for create in creates])
        for create in creates:
            instance = create.instance
            post_save.send(
                sender=django_model, instance=instance, created=True, update_fields=None, raw=False, using=using
            )
        for create in creates:
            if any(create.many.values()):  # a new object has none: contrib's set([]) sets nothing either
                model._set_many_to_many_fields(create.many, create.instance)


TagNames = Callable[[Any], "list[str] | None"]  # an object's tag names, or None: read them from the database


@contextmanager
def change_logged(instances: Sequence[Any], tags: TagNames, using: str) -> Iterator[Any]:
    """One savepoint around a chunk's writes, their change log deferred and its ObjectChanges written at the end.

    Nautobot's deferred change logging (the mode its bulk edit uses) records what the chunk's
    signals log, and the rows are built from it as Nautobot's flush builds them (`object_changes`),
    the objects of one model serialised together: the chunk's own and the objects an assignment
    joins, which Nautobot logs as changed once per assignment and which are serialised here once
    per chunk, as the last assignment left them. An object the context had logged before the chunk
    has its row updated as a single save updates it (`relog`) instead of getting a second one.
    The change context then remembers the chunk's objects as it remembers single saves, so a later
    save of one of them in the context updates its row instead of adding another. Raises whatever
    fails; the savepoint is then rolled back and the change context is as it was. Yields the change
    context.
    """
    from django.db import transaction
    from nautobot.extras.models import ObjectChange
    from nautobot.extras.signals import change_context_state

    context = change_context_state.get()
    if context is None:
        raise NotBulk("no change context")
    kept, deferring = context.deferred_object_changes, context.defer_object_changes
    context.deferred_object_changes, context.defer_object_changes = {}, True
    try:
        with transaction.atomic(using=using):
            yield context
            recorded, context.deferred_object_changes = context.deferred_object_changes, {}
            new = {key: entries for key, entries in recorded.items() if key not in kept}
            ObjectChange.objects.bulk_create(object_changes(context, new, instances, tags))
            relog(context, [entries[-1] for key, entries in recorded.items() if key in kept])
    finally:
        context.deferred_object_changes, context.defer_object_changes = kept, deferring
    for key, entries in recorded.items():  # as a single save: what the context logged already stays
        kept.setdefault(key, entries)


def object_changes(
    context: Any, recorded: dict[str, list[dict[str, Any]]], instances: Sequence[Any], tags: TagNames
) -> list[Any]:
    """The ObjectChanges of the change-log records `recorded` in deferred mode, as Nautobot's flush builds them.

    Nautobot's `ChangeContext.create_object_changes` serialises each object on its own (a REST
    serializer built per object); here the objects of one model are serialised together
    (`logged_data`), with the very serializers and the same results. The chunk's own `instances`
    have their tag names from `tags`. Anything else recorded is built as Nautobot builds it.
    """
    from nautobot.extras.constants import CHANGELOG_MAX_CHANGE_CONTEXT_DETAIL, CHANGELOG_MAX_OBJECT_REPR
    from nautobot.extras.models import ObjectChange

    ours = {id(instance) for instance in instances}
    data = logged_data(
        [entry["instance"] for entries in recorded.values() for entry in entries],
        lambda instance: tags(instance) if id(instance) in ours else None,
    )
    changes = []
    for entries in recorded.values():
        for entry in entries:
            instance = entry["instance"]
            if id(instance) in data:
                v1, v2 = data[id(instance)]
                change = ObjectChange(
                    changed_object=instance,
                    object_repr=str(instance)[:CHANGELOG_MAX_OBJECT_REPR],
                    action=entry["action"],
                    object_data=v1,
                    object_data_v2=v2,
                    related_object=None,
                )
            else:
                change = instance.to_objectchange(entry["action"])
                if change is None:
                    continue
            change.user = entry["user"]
            change.user_name = change.user.username
            change.request_id = context.change_id
            change.change_context = context.context
            change.change_context_detail = context.context_detail[:CHANGELOG_MAX_CHANGE_CONTEXT_DETAIL]
            if not change.changed_object_id:  # as Nautobot: the changed object was deleted
                change.changed_object = None
                change.changed_object_id = entry.get("changed_object_id")
                change.changed_object_type = entry.get("changed_object_type")
            changes.append(change)
    return changes


def relog(context: Any, entries: Sequence[dict[str, Any]]) -> None:
    """Update the ObjectChange rows the context wrote before for these objects, as a single save updates them.

    Nautobot's change logging, for an object it has logged already in the context: its latest row
    of the context (same object, user and request) gets the object's data now, and a delete
    becomes an update; without such a row, nothing. One query reads the rows, one writes them.
    """
    from django.contrib.contenttypes.models import ContentType
    from django.db.models import Q
    from nautobot.extras.choices import ObjectChangeActionChoices
    from nautobot.extras.models import ObjectChange

    # (content type, object, user) of each entry: what Nautobot's lookup of the row filters on
    keyed = {
        (
            ContentType.objects.get_for_model(entry["instance"]).pk,
            entry["instance"].pk,
            getattr(entry["user"], "pk", None),
        ): entry
        for entry in entries
        if entry["instance"].pk is not None
    }
    if not keyed:
        return
    wanted = Q()
    for content_type, pk, user in keyed:
        wanted |= Q(changed_object_type_id=content_type, changed_object_id=pk, user_id=user)
    latest: dict[tuple[Any, Any, Any], Any] = {}
    for row in ObjectChange.objects.filter(wanted, request_id=context.change_id).order_by("time"):
        latest[(row.changed_object_type_id, row.changed_object_id, row.user_id)] = row
    data = logged_data([entry["instance"] for entry in keyed.values()], lambda _: None)
    rows = []
    for key, entry in keyed.items():
        instance, row = entry["instance"], latest.get(key)
        if row is None:
            continue
        if id(instance) in data:
            row.object_data, row.object_data_v2 = data[id(instance)]
        else:
            change = instance.to_objectchange(ObjectChangeActionChoices.ACTION_UPDATE)
            if change is None:
                continue
            row.object_data, row.object_data_v2 = change.object_data, change.object_data_v2
        if row.action == ObjectChangeActionChoices.ACTION_DELETE:
            row.action = ObjectChangeActionChoices.ACTION_UPDATE
        rows.append(row)
    ObjectChange.objects.bulk_update(rows, ["action", "object_data", "object_data_v2"])


def logged_data(instances: Sequence[Any], tags: TagNames) -> dict[int, tuple[dict[str, Any], Any]]:
    """What `serialized` gives, by id(instance), for the objects Nautobot logs with its default `to_objectchange`.

    The objects of each model are serialised in one pass; the others (a model of its own change
    record) are left to their `to_objectchange`.
    """
    from nautobot.extras.models.change_logging import ChangeLoggedModel

    by_model: dict[type, list[Any]] = defaultdict(list)
    for instance in instances:
        if type(instance).to_objectchange is ChangeLoggedModel.to_objectchange:
            by_model[type(instance)].append(instance)
    out: dict[int, tuple[dict[str, Any], Any]] = {}
    for group in by_model.values():
        out.update(serialized(group, tags))
    return out


def serialized(instances: Sequence[Any], tags: TagNames) -> dict[int, tuple[dict[str, Any], Any]]:
    """`serialize_object` and `serialize_object_v2` of each object, by id(instance), in one pass each.

    `tags` gives an object's tag names in the database's order when known; otherwise they are read
    as `serialize_object` reads them.
    """
    from django.core.serializers import serialize
    from nautobot.core.api.exceptions import SerializerNotFound
    from nautobot.core.api.utils import get_serializer_for_model
    from nautobot.core.models.utils import is_taggable, serialize_object

    if not instances:
        return {}
    try:
        serializer = get_serializer_for_model(type(instances[0]))
        context = {"request": None, "depth": 1, "exclude_m2m": False}
        with prefetched(instances):
            second = list(serializer(instances, many=True, context=context).data)
    except SerializerNotFound:
        second = [serialize_object(instance) for instance in instances]
    first = [row["fields"] for row in json.loads(serialize("json", instances))]
    out = {}
    for instance, data, v2 in zip(instances, first, second, strict=True):
        if hasattr(instance, "_custom_field_data"):
            data["custom_fields"] = data.pop("_custom_field_data")
        if is_taggable(instance):
            names = tags(instance)
            data["tags"] = names if names is not None else [t.name for t in instance.tags.only("name")]
        for key in list(data):
            if isinstance(key, str) and key.startswith("_"):  # private fields are not logged
                data.pop(key)
        out[id(instance)] = (data, v2)
    return out


@contextmanager
def prefetched(instances: Sequence[Any]) -> Iterator[None]:
    """The objects' many-to-many rows read for all of them at once, while the serializer reads them.

    A serializer reads each object's to-many fields (tags, locations) with one query per object and
    field; prefetched, it reads the same rows in the same order from one query per field. What is
    prefetched here is dropped again afterwards, so nothing later reads rows older than its writes.
    """
    from django.db.models import prefetch_related_objects

    names = [f.name for f in type(instances[0])._meta.many_to_many]
    added = {
        id(instance): [name for name in names if name not in getattr(instance, "_prefetched_objects_cache", {})]
        for instance in instances
    }
    prefetch_related_objects(list(instances), *names)
    try:
        yield
    finally:
        for instance in instances:
            cache = getattr(instance, "_prefetched_objects_cache", {})
            for name in added[id(instance)]:
                cache.pop(name, None)
