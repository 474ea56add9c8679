"""A resync's planned delete is applied only to the object the plan saw: still the source's, and unchanged.

A resync plans its deletes by identifiers and applies them after a confirmation, minutes or hours
later. Meanwhile a user may have changed the object, or deleted it and made another with the same
identifiers, which the source does not own; deleting by identifiers would destroy their work. So a
planned delete carries the object's primary key and a fingerprint (its `last_updated`, or for a
model without one a digest of its row), and `admit`, in the apply's own transaction, locks the
planned rows and lets a delete through only if its row still has that fingerprint, the source
still owns it, and its identifiers still name that row and no other. The lock holds until the
transaction ends, so nothing can change the row between the check and the delete.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamsync.contract.envelope import Event

if TYPE_CHECKING:
    from streamsync.sync.registry import ModelRegistry


@dataclass(frozen=True)
class PlannedDelete:
    """A delete of one object the plan found: its event (by identifiers), primary key and fingerprint."""

    event: Event
    pk: Any
    # What the row looked like when planned; None: no plan saw it (catch-up), only ownership and identity count.
    fingerprint: str | None = None

    @property
    def key(self) -> str:
        """The object's canonical key."""
        return self.event.canonical_key


@dataclass
class Admission:
    """Planned deletes sorted under their rows' locks."""

    admitted: list[PlannedDelete] = field(default_factory=list)  # to delete, in the plan's order
    gone: list[PlannedDelete] = field(default_factory=list)  # deleted since, nothing else at their identifiers
    left_alone: list[tuple[PlannedDelete, str]] = field(default_factory=list)  # with the reason


def fingerprints(model: Any, pks: Collection[Any], *, lock: bool = False) -> dict[Any, str]:
    """Per primary key of a Django `model`, what its row looks like now; `lock` takes the rows' locks (FOR UPDATE).

    `last_updated` where the model has it (every save sets it); otherwise a digest of every column.
    """
    names = [f.attname for f in model._meta.concrete_fields]
    columns = ["last_updated"] if "last_updated" in names else names
    rows = model._base_manager.filter(pk__in=list(pks)).order_by("pk")
    if lock:
        rows = rows.select_for_update()
    return {row[0]: _digest(row[1:]) for row in rows.values_list("pk", *columns)}


def _digest(values: Sequence[Any]) -> str:
    if len(values) == 1 and hasattr(values[0], "isoformat"):
        return str(values[0].isoformat())
    return hashlib.sha256(json.dumps(list(values), default=str).encode()).hexdigest()


def admit(source: str, registry: ModelRegistry, planned: Sequence[PlannedDelete]) -> Admission:
    """Lock the planned rows (in the caller's transaction) and sort the deletes: admitted, gone, or left alone."""
    from django.contrib.contenttypes.models import ContentType

    from streamsync.models.bookkeeping import OwnedObject

    by_model: dict[str, list[PlannedDelete]] = {}
    for delete in planned:
        by_model.setdefault(delete.event.model, []).append(delete)
    verdicts: dict[int, str | None] = {}  # id(planned delete) -> why it is left alone; None: admitted
    gone: set[int] = set()
    for name, deletes in by_model.items():
        model = registry.get(name)
        django_model = model._model  # type: ignore[attr-defined]
        now = fingerprints(django_model, [delete.pk for delete in deletes], lock=True)
        owned = set(
            OwnedObject.objects.filter(
                source=source,
                content_type=ContentType.objects.get_for_model(django_model),
                object_id__in=list(now),
            ).values_list("object_id", flat=True)
        )
        for delete in deletes:
            # The engine deletes by identifiers: they must name the locked row, and nothing else.
            named = list(model.get_queryset().filter(**delete.event.key).values_list("pk", flat=True)[:2])  # type: ignore[attr-defined]
            if delete.pk not in now and not named:
                gone.add(id(delete))
            verdicts[id(delete)] = _verdict(delete, now, owned, named, source)
    result = Admission()
    for delete in planned:
        reason = verdicts[id(delete)]
        if id(delete) in gone:
            result.gone.append(delete)
        elif reason is None:
            result.admitted.append(delete)
        else:
            result.left_alone.append((delete, f"{reason}: left alone"))
    return result


def _verdict(delete: PlannedDelete, now: dict[Any, str], owned: set[Any], named: list[Any], source: str) -> str | None:
    """Why `delete` must not be applied, or None when its row is the one planned, unchanged and owned."""
    if delete.pk not in now:
        return "replaced since the plan by another object with its identifiers"
    if delete.fingerprint is not None and now[delete.pk] != delete.fingerprint:
        return "changed since the plan"
    if delete.pk not in owned:
        return f"no longer owned by source {source!r}"
    if named != [delete.pk]:
        return "its identifiers name another object now" if named else "its identifiers changed since the plan"
    return None
