"""What deleting objects takes with it: Django's cascade, collected as the admin's delete confirmation does.

Deleting a Nautobot object through the ORM (contrib's `delete()` is `Model.delete()`) removes with
it every row Django's `Collector` reaches over CASCADE foreign keys and generic relations (a
device's interfaces, their IP address assignments, ...), whoever made them; Nautobot's pre_delete
handler removes their notes as well. `NestedObjects`, the collector behind django.contrib.admin's
confirmation page, gathers all of them without deleting anything, and records the objects that
PROTECT or RESTRICT the delete: while those exist, the delete fails.

Bounded for many objects: roots are collected a chunk at a time (one query per relation and chunk),
only counts and the first few names per model are kept, and only the first `detailed` roots are
also collected one by one, for a list of their own. What stays in memory grows with the number of
objects deleted (their model and primary key, to count each once), never with their rows.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamsync.ops.columns import format_table

# Roots per collection: one query per relation of the model, for the whole chunk.
CHUNK_SIZE = 100
# Roots whose cascade is listed object by object (the rest are only counted).
DETAILED = 20
# Names listed per model and root.
NAMES = 10
# A name longer than this is cut.
NAME_LENGTH = 80
# Objects of one model and root beyond this are listed in primary key order, not by name.
SORT_BY_NAME = 1000

# (done, total) roots collected.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Root:
    """An object that would be deleted: its Django model, primary key, and how output names the reason."""

    model: Any  # a Django model class
    pk: Any
    label: str


@dataclass
class Tally:
    """Objects per model (`app_label.model`): how many, and the first few names."""

    counts: Counter[str] = field(default_factory=Counter)
    names: dict[str, list[str]] = field(default_factory=dict)

    def add(self, label: str, name: str | Callable[[], str], limit: int = NAMES) -> None:
        """Count one object, and keep its name (`name()` is called only then) while the model has fewer than `limit`."""
        self.counts[label] += 1
        kept = self.names.setdefault(label, [])
        if len(kept) < limit:
            kept.append(name if isinstance(name, str) else name())


@dataclass
class RootCascade:
    """One root's own cascade: what its delete removes with it, and what would make it fail."""

    root: Root
    name: str
    cascade: Tally = field(default_factory=Tally)
    protected: Tally = field(default_factory=Tally)


@dataclass
class CascadeReport:
    """Every root's delete together: each object counted once, per model."""

    deleted: Counter[str] = field(default_factory=Counter)  # the roots themselves
    cascade: Counter[str] = field(default_factory=Counter)  # everything else their deletes remove
    protected: Counter[str] = field(default_factory=Counter)  # objects that make a delete fail
    details: list[RootCascade] = field(default_factory=list)
    undetailed: int = 0  # roots counted but not listed
    # model label -> (verbose name, verbose name plural)
    names: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """No root exists: nothing would be deleted."""
        return not self.deleted


@contextlib.contextmanager
def read_only() -> Iterator[None]:
    """A transaction that cannot write: READ ONLY when outermost; inside another, a savepoint rolled back."""
    from django.db import connection, transaction

    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION READ ONLY")
        yield
        if not outermost:
            transaction.set_rollback(True)


def collect(
    roots: Sequence[Root], *, detailed: int = DETAILED, chunk_size: int = CHUNK_SIZE, progress: Progress | None = None
) -> CascadeReport:
    """Collect what deleting every root takes with it; the first `detailed` roots get a list of their own.

    Reads only; roots that no longer exist are left out. Run it in `read_only()`.
    """
    report = CascadeReport()
    root_ids = {(_label(root.model), root.pk) for root in roots}
    seen: set[tuple[str, Any]] = set()  # counted objects (cascaded or protecting), each once
    done = 0
    by_model: dict[Any, list[Root]] = {}
    for root in roots:
        by_model.setdefault(root.model, []).append(root)
    for model, of_model in by_model.items():
        for chunk in _chunks(of_model, chunk_size):
            instances = list(model._base_manager.filter(pk__in=[root.pk for root in chunk]))
            found, protected = _collect(instances)
            for obj in (obj for objs in found.values() for obj in objs):
                ident = _ident(obj)
                _name(report, obj)
                if ident in root_ids:
                    if ident not in seen:
                        seen.add(ident)
                        report.deleted[ident[0]] += 1
                elif ident not in seen:
                    seen.add(ident)
                    report.cascade[ident[0]] += 1
            for obj in protected:
                label, pk = _ident(obj)
                _name(report, obj)
                if (f"protects {label}", pk) not in seen:
                    seen.add((f"protects {label}", pk))
                    report.protected[label] += 1
            done += len(chunk)
            if progress is not None:
                progress(done, len(roots))
    existing = [root for root in roots if (_label(root.model), root.pk) in seen]
    report.details = [detail for root in existing[:detailed] if (detail := _one(report, root)) is not None]
    report.undetailed = len(existing) - len(report.details)
    return report


def _one(report: CascadeReport, root: Root) -> RootCascade | None:
    """One root collected on its own: its cascade and what protects it, by model (None if it is gone)."""
    instance = root.model._base_manager.filter(pk=root.pk).first()
    if instance is None:
        return None
    found, protected = _collect([instance])
    detail = RootCascade(root, _text(instance))
    found[type(instance)] = {obj for obj in found.get(type(instance), set()) if obj.pk != instance.pk}
    by_model: dict[Any, set[Any]] = {}
    for obj in protected:
        by_model.setdefault(type(obj), set()).add(obj)
    for objs, tally in ((found, detail.cascade), (by_model, detail.protected)):
        for model, of_model in objs.items():
            for obj in _named_first(of_model):
                _name(report, obj)
                tally.add(_label(model), functools.partial(_text, obj))
    return detail


def _named_first(objs: set[Any]) -> list[Any]:
    """Objects in the order their names are listed: by name, or for many (naming each may query) by key."""
    if len(objs) <= SORT_BY_NAME:
        return sorted(objs, key=_text)
    return sorted(objs, key=lambda obj: str(obj.pk))


def _collect(instances: list[Any]) -> tuple[dict[Any, set[Any]], set[Any]]:
    """Everything deleting `instances` (of one model) deletes, by model, and what protects them."""
    from django.contrib.admin.utils import NestedObjects
    from django.db import router

    if not instances:
        return {}, set()
    collector = NestedObjects(using=router.db_for_write(type(instances[0])))
    collector.collect(instances)
    found: dict[Any, set[Any]] = {model: set(objs) for model, objs in collector.model_objs.items()}
    notes = _notes(found)
    if notes:
        found.setdefault(type(notes[0]), set()).update(notes)
    return found, set(collector.protected)


def _notes(found: dict[Any, set[Any]]) -> list[Any]:
    """Notes on the collected objects: Nautobot's pre_delete handler deletes them, not Django's cascade."""
    from django.contrib.contenttypes.models import ContentType
    from nautobot.extras.models import Note
    from nautobot.extras.models.mixins import NotesMixin

    notes: list[Any] = []
    for model, objs in found.items():
        if model is not Note and issubclass(model, NotesMixin) and objs:
            content_type = ContentType.objects.get_for_model(model)
            pks = [obj.pk for obj in objs]
            notes += Note.objects.filter(assigned_object_type=content_type, assigned_object_id__in=pks)
    return notes


def _chunks(items: Sequence[Root], size: int) -> Iterator[Sequence[Root]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _label(model: Any) -> str:
    return str(model._meta.label_lower)


def _ident(obj: Any) -> tuple[str, Any]:
    return _label(type(obj)), obj.pk


def _text(obj: Any) -> str:
    text = str(obj)
    return text if len(text) <= NAME_LENGTH else text[: NAME_LENGTH - 3] + "..."


def _name(report: CascadeReport, obj: Any) -> None:
    label = _label(type(obj))
    if label not in report.names:
        meta = type(obj)._meta
        report.names[label] = (str(meta.verbose_name), str(meta.verbose_name_plural))


def counted(report: CascadeReport, counts: Iterable[tuple[str, int]]) -> str:
    """`[("dcim.interface", 3), ...]` as "3 interfaces and 1 IP address assignment"."""
    parts = [f"{n} {report.names.get(label, (label, label))[0 if n == 1 else 1]}" for label, n in counts if n]
    if not parts:
        return "nothing"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def headline(report: CascadeReport) -> str:
    """The deletes in one phrase: "1 device, cascading to 3 interfaces and 1 IP address assignment"."""
    text = counted(report, sorted(report.deleted.items()))
    if report.cascade:
        text += f", cascading to {counted(report, sorted(report.cascade.items()))}"
    if report.protected:
        text += f" (some protected by {counted(report, sorted(report.protected.items()))}: those deletes fail)"
    return text


def format_report(report: CascadeReport) -> str:
    """The table per model (deleted, deleted with them, protecting), then each detailed root's own list."""
    labels = sorted(set(report.deleted) | set(report.cascade) | set(report.protected))
    header = ("MODEL", "DELETE", "CASCADE", "PROTECTED-BY")
    body = [
        (label, str(report.deleted[label]), str(report.cascade[label]), str(report.protected[label]))
        for label in labels
    ]
    total = ("total", *(str(sum(c.values())) for c in (report.deleted, report.cascade, report.protected)))
    lines = [format_table(header, [*body, total], numeric_from=1)]
    for detail in report.details:
        lines.append(f"{detail.root.label}: {_label(detail.root.model)} {detail.name}")
        lines += _tally_lines(report, detail.cascade, "")
        lines += _tally_lines(report, detail.protected, "protected by ")
        if not detail.cascade.counts and not detail.protected.counts:
            lines.append("    nothing else")
    if report.undetailed:
        lines.append(f"... and {report.undetailed} more delete(s), counted in the table")
    return "\n".join(lines)


def _tally_lines(report: CascadeReport, tally: Tally, prefix: str) -> list[str]:
    lines = []
    for label, count in sorted(tally.counts.items()):
        names = tally.names.get(label, [])
        more = f", ... ({count - len(names)} more)" if count > len(names) else ""
        lines.append(f"    {prefix}{counted(report, [(label, count)])}: {', '.join(names)}{more}")
    return lines
