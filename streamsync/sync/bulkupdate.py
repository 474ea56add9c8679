"""Many updates of one model written in one UPDATE, as Nautobot writes them one by one.

An update through contrib (`NautobotModel.update`) reads its row (`get_from_db`), and its
`validated_save()` runs `full_clean()` (a query per foreign key and per unique check) and `save()`
in a savepoint; Nautobot's change logging reads the row once more before the save (when the object
has no change log yet: the pre-change data webhooks and event brokers are given) and inserts an
ObjectChange after it. Here, for a chunk of one model's updates:

- the rows are read in one query (`rows`), and the pre-change data of those without a change log
  serialised from them before they change, in one pass (`Rows.before`);
- each row takes its change with contrib's own parameter handling and is `full_clean()`-ed, the
  checks that cost a query per object made once for the chunk (`bulk.refused_rows`);
- then, in one savepoint (`write`): the pre-change data recorded in the change context as
  Nautobot's `pre_save` receiver records it, `pre_save` sent for each object to every other
  receiver, one `bulk_update` of the columns that changed (timestamps set as `save()` sets them),
  `post_save` (not created) for each, many-to-many fields set as contrib sets them, and the
  ObjectChanges (action update) inserted together (`bulk.change_logged`).

The models are those whose creates may be written in bulk (`bulk.bulk_safe`): the same methods and
receivers, which give the same result after the chunk's UPDATE. An object the change context has
logged already (created or changed earlier in the batch) is left to the per-object path
(`logged_already`): its single save updates that ObjectChange row instead of adding one.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamsync.sync.bulk import NotBulk, change_logged, foreign_keys, prepare, receiver_name, serialized

# Nautobot's pre_save receiver that reads an object's row again to keep its pre-change data: `Rows.before` does it
# once for the chunk, and `write` records it as the receiver would.
PRE_CHANGE = "nautobot.extras.signals._handle_changed_object_pre_save"


@dataclass
class Rows:
    """The rows a chunk updates, by pk, and the pre-change data of those Nautobot has no change log of."""

    by_pk: dict[str, Any]
    # pk -> (object_data, object_data_v2) of the row as read, for objects without an ObjectChange yet
    before: dict[str, tuple[dict[str, Any], Any]] = field(default_factory=dict)


@dataclass
class Update:
    """One row with its change applied and validated, its many-to-many values to set, and its columns as read."""

    instance: Any
    many: dict[str, list[Any]]
    read: dict[str, Any]  # attname -> value as read


def rows(django_model: type, pks: Iterable[Any]) -> Rows:
    """The rows of `pks` in one query (contrib's `get_from_db` reads them one by one), with their pre-change data.

    The data is serialised now, before any of them changes: Nautobot's `pre_save` receiver reads it
    from the database right before each save, and nothing writes these rows in between.
    """
    from nautobot.extras.models import ObjectChange
    from nautobot.extras.models.change_logging import ChangeLoggedModel

    # What the serializers read of each row, read with it: its foreign keys' rows, its to-many fields (a
    # many-to-many field contrib sets later drops its prefetched rows, and is read again).
    related = [f.name for f in foreign_keys(django_model)]
    many = [f.name for f in django_model._meta.many_to_many]  # type: ignore[attr-defined]
    queryset = django_model.objects.filter(pk__in=list(pks)).select_related(*related).prefetch_related(*many)  # type: ignore[attr-defined]
    found = {str(row.pk): row for row in queryset}
    logged = {
        str(pk)
        for pk in ObjectChange.objects.filter(changed_object_id__in=list(found)).values_list(
            "changed_object_id", flat=True
        )
    }
    fresh = [row for pk, row in found.items() if pk not in logged and hasattr(row, "to_objectchange")]
    out = Rows(found)
    if fresh and type(fresh[0]).to_objectchange is ChangeLoggedModel.to_objectchange:
        names = tag_names(fresh)
        data = serialized(fresh, lambda row: names.get(str(row.pk), []))
        out.before = {str(row.pk): data[id(row)] for row in fresh}
    else:
        for row in fresh:  # as Nautobot's receiver keeps it, one by one
            change = row.to_objectchange("update")
            if change is not None:
                out.before[str(row.pk)] = (change.object_data, change.object_data_v2)
    return out


def tag_names(instances: Sequence[Any]) -> dict[str, list[str]]:
    """Each taggable object's tag names by pk, in one query, in the order `serialize_object` reads them (by name)."""
    from django.contrib.contenttypes.models import ContentType
    from nautobot.core.models.utils import is_taggable
    from nautobot.extras.models import TaggedItem

    if not instances or not is_taggable(instances[0]):
        return {}
    content_type = ContentType.objects.get_for_model(type(instances[0]))
    tagged = TaggedItem.objects.filter(content_type=content_type, object_id__in=[i.pk for i in instances])
    out: dict[str, list[str]] = {str(instance.pk): [] for instance in instances}
    for pk, name in tagged.order_by("tag__name").values_list("object_id", "tag__name"):
        out[str(pk)].append(name)
    return out


def build(model: Any, adapter: Any, row: Any, attrs: dict[str, Any]) -> Update:
    """`row` with `attrs` set as contrib's update sets them, validated as `bulk.build` validates a create.

    Raises what contrib or Nautobot raise for it (the per-object path then writes it and reports
    the same reason), or NotBulk when it needs what is not reproduced here.
    """
    # A copy: contrib sets custom fields inside the row's own dict (`obj.cf[key] = value`).
    read = {f.attname: copy.deepcopy(getattr(row, f.attname)) for f in row._meta.concrete_fields}
    return Update(row, prepare(model, adapter, row, attrs), read)


def logged_already(updates: Sequence[Update]) -> set[int]:
    """Which updates (by index) are of objects the change context has logged already, as Nautobot keys them."""
    from django.contrib.contenttypes.models import ContentType
    from nautobot.extras.signals import change_context_state

    context = change_context_state.get()
    if context is None or not updates:
        return set(range(len(updates)))
    content_type = ContentType.objects.get_for_model(type(updates[0].instance))
    out = set()
    for i, update in enumerate(updates):
        user = context.get_user(update.instance)
        key = f"{content_type.pk}__{update.instance.pk}"
        if (f"{key}__{user.pk}" if user is not None else key) in context.deferred_object_changes:
            out.add(i)
    return out


def write(model: Any, updates: Sequence[Update], before: dict[str, tuple[dict[str, Any], Any]]) -> None:
    """Write `updates` (objects of `model`) in one savepoint with what their single saves would also write.

    Raises whatever fails (NotBulk when a row is gone); the savepoint is then rolled back and the
    change context is as it was, but for pre-change data, which Nautobot keeps too.
    """
    from django.db import router
    from django.db.models.signals import post_save, pre_save

    django_model = model._model
    using = router.db_for_write(django_model)
    instances = [update.instance for update in updates]
    names: dict[str, list[str]] = {}

    def tags(instance: Any) -> list[str]:
        if not names:  # read once the chunk's many-to-many fields are set
            names.update(tag_names(instances))
        return names[str(instance.pk)]

    pre_receivers = [r for r in _live(django_model, pre_save) if receiver_name(r) != PRE_CHANGE]
    with change_logged(instances, tags, using) as context:
        _record_before(context, [str(pk) for pk in (i.pk for i in instances)], before)
        for instance in instances:
            for receiver in pre_receivers:
                receiver(
                    signal=pre_save, sender=django_model, instance=instance, raw=False, using=using, update_fields=None
                )
        columns = _columns(updates)
        if django_model.objects.bulk_update(instances, columns) != len(instances):
            raise NotBulk("a row to update is gone")
        for instance in instances:
            post_save.send(
                sender=django_model, instance=instance, created=False, update_fields=None, raw=False, using=using
            )
        for update in updates:
            if update.many:  # contrib sets what the change names, replacing what was there
                model._set_many_to_many_fields(update.many, update.instance)


def _record_before(context: Any, pks: Sequence[str], before: dict[str, tuple[dict[str, Any], Any]]) -> None:
    """The chunk's pre-change data, kept in the change context as Nautobot's pre_save receiver keeps it."""
    if context.pre_object_data is None:
        context.pre_object_data = {}
    if context.pre_object_data_v2 is None:
        context.pre_object_data_v2 = {}
    for pk in pks:
        if pk in before:
            v1, v2 = before[pk]
            context.pre_object_data.setdefault(pk, v1)
            context.pre_object_data_v2.setdefault(pk, v2)


def _columns(updates: Sequence[Update]) -> list[str]:
    """The columns to write, values set as `save()` sets them (`Field.pre_save`: `auto_now` timestamps).

    A single save writes every column; those that no update of the chunk changes hold what was
    read, in this transaction, so writing the others ends the same.
    """
    concrete = [f for f in updates[0].instance._meta.concrete_fields if not f.primary_key]
    changed = set()
    for update in updates:
        for f in concrete:
            value = f.pre_save(update.instance, False)
            setattr(update.instance, f.attname, value)
            if value != update.read[f.attname]:
                changed.add(f.name)
    return [f.name for f in concrete if f.name in changed]


def _live(sender: type, signal: Any) -> list[Any]:
    """The receivers `signal` calls for `sender` now, sync ones (the bulk models have no others: `bulk.bulk_safe`)."""
    live = signal._live_receivers(sender)
    return list(live[0] if isinstance(live, tuple) else live)
