"""Which Nautobot objects a source owns: the only ones a resync may delete.

The rule (docs/resync.md): a source owns an object once streamsync has created, updated or
adopted it for that source, or the source asserted it unchanged (an upsert, or a resync finding
it as the state says). Deleting it through streamsync releases it. A resync deletes owned objects
that the source's state no longer has, and never touches an object that is neither owned nor in
the state (made by hand, or by another source).

Ownership is one narrow row per (source, object) in `OwnedObject`, written in bulk once per batch
in the batch's own transaction: it commits with the change it describes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from streamsync.contract.envelope import Op
from streamsync.sync.batch import ObjectResult, Outcome

if TYPE_CHECKING:
    from diffsync import DiffSyncModel


def content_type_id(model: type[DiffSyncModel]) -> int:
    """The ContentType id of the Nautobot model a contrib model is bound to (cached by Django)."""
    from django.contrib.contenttypes.models import ContentType

    return int(ContentType.objects.get_for_model(model._model).pk)  # type: ignore[attr-defined]


def record(source: str, outcomes: Sequence[tuple[type[DiffSyncModel], Op, ObjectResult]]) -> None:
    """Claim the objects of upserts that were applied or found unchanged; release deleted ones.

    `outcomes` are in the order they happened, and the rows end as if each had been recorded in a
    batch of its own: a key deleted and then created again in one batch is released, then claimed
    (the new object).
    """
    claims: list[tuple[type[DiffSyncModel], str, Any]] = []
    released: list[tuple[type[DiffSyncModel], Any]] = []
    released_keys: list[str] = []
    for model, op, result in outcomes:
        if op is Op.DELETE:
            if result.outcome in (Outcome.DELETED, Outcome.UNCHANGED):
                claims = [c for c in claims if c[1] != result.key]  # released by key, as a later batch would
                released_keys.append(result.key)
                if result.pk is not None:
                    released.append((model, result.pk))
        elif result.outcome in (Outcome.CREATED, Outcome.UPDATED, Outcome.UNCHANGED) and result.pk is not None:
            claims.append((model, result.key, result.pk))
    release(source, released, released_keys)  # first: what is claimed after a release stands
    claim(source, claims)


def claim(source: str, objects: Iterable[tuple[type[DiffSyncModel], str, Any]]) -> int:
    """Mark (model, key, pk) objects as owned by `source` in one statement; returns how many objects."""
    from streamsync.models.bookkeeping import KEY_LENGTH, OwnedObject

    rows: dict[tuple[int, uuid.UUID], OwnedObject] = {}
    for model, key, pk in objects:
        object_id = pk if isinstance(pk, uuid.UUID) else uuid.UUID(str(pk))
        content_type = content_type_id(model)
        # The key only helps release an object by key; one too long for the column must not fail the batch.
        rows[(content_type, object_id)] = OwnedObject(
            source=source, content_type_id=content_type, object_id=object_id, key=key[:KEY_LENGTH]
        )
    changed = _changed(source, rows)
    if changed:
        # One row per object per statement: PostgreSQL refuses ON CONFLICT touching a row twice.
        OwnedObject.objects.bulk_create(
            list(changed.values()),
            batch_size=1000,
            update_conflicts=True,
            unique_fields=["source", "content_type", "object_id"],
            update_fields=["key"],
        )
    return len(rows)


def _changed(source: str, rows: dict[tuple[int, uuid.UUID], Any]) -> dict[tuple[int, uuid.UUID], Any]:
    """The rows not already recorded as they are: an upsert rewrites every row it touches, a read does not.

    A batch that finds its objects in sync (a replay, a resync) claims what it already owns; reading
    the claims first leaves those rows unwritten. A row another worker inserts meanwhile is still
    met by the upsert's ON CONFLICT.
    """
    from streamsync.models.bookkeeping import OwnedObject

    if not rows:
        return rows
    recorded = OwnedObject.objects.filter(_objects(rows), source=source).values_list(
        "content_type_id", "object_id", "key"
    )
    same = {
        (content_type, object_id)
        for content_type, object_id, key in recorded
        if rows[(content_type, object_id)].key == key
    }
    return {where: row for where, row in rows.items() if where not in same}


def release(source: str, objects: Sequence[tuple[type[DiffSyncModel], Any]], keys: Sequence[str] = ()) -> None:
    """Forget `source`'s ownership of these (model, primary key) objects and of these keys."""
    from django.db.models import Q

    from streamsync.models.bookkeeping import OwnedObject

    # (source, key) and (source, content type, object) are both indexed
    match = Q(key__in=list(keys)) | _objects((content_type_id(model), pk) for model, pk in objects)
    if objects or keys:
        OwnedObject.objects.filter(match, source=source).delete()


def _objects(objects: Iterable[tuple[int, Any]]) -> Any:
    """A filter on OwnedObject matching these (content type id, object id) pairs: one `IN` per content type."""
    from django.db.models import Q

    by_type: dict[int, list[Any]] = {}
    for content_type, object_id in objects:
        by_type.setdefault(content_type, []).append(object_id)
    match = Q()
    for content_type, object_ids in by_type.items():
        match |= Q(content_type_id=content_type, object_id__in=object_ids)
    return match


def owned_ids(source: str, model: type[DiffSyncModel]) -> set[uuid.UUID]:
    """Primary keys of the objects of `model` that `source` owns: one query."""
    from streamsync.models.bookkeeping import OwnedObject

    return set(
        OwnedObject.objects.filter(source=source, content_type_id=content_type_id(model)).values_list(
            "object_id", flat=True
        )
    )
