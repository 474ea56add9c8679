"""`streamsync snapshot`: an existing DiffSync / nautobot-ssot remote adapter, loaded once, as a source's state.

How an SSoT integration moves over without rewriting its adapter: its `load()` runs once, every
object it holds becomes that object's full state on `<prefix>.<source>.state`, and keys the state
had that the snapshot no longer has get tombstones. `streamsync resync` then brings Nautobot there.

The adapter is constructed as an SSoT job would, with `job=None` and `sync=None` when its
constructor names them, and with no arguments otherwise; it runs with Nautobot set up, since SSoT
adapters often need it. Its models must match the source's (same `_modelname`, identifiers and
declared attributes): every object is checked like an event, and one that does not fit stops the
snapshot before anything is written. Models the source does not write are skipped and named.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from diffsync import Adapter, DiffSyncModel
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from streamsync.contract.envelope import Event, Op, describe
from streamsync.sync.state import StateRecord, model_of

if TYPE_CHECKING:
    from streamsync.sync.batch import Change
    from streamsync.sync.registry import ModelRegistry


class SnapshotError(RuntimeError):
    """The adapter cannot be used, or what it loaded does not fit the source: nothing was written."""


def load_adapter(path: str) -> Adapter:
    """Import `package.module.Adapter` and construct it as an SSoT job would, or bare."""
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise SnapshotError(f"--adapter must be a dotted path (package.module.Adapter), not {path!r}")
    try:
        adapter_class: Any = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise SnapshotError(f"cannot import adapter {path!r}: {error}") from error
    if not (inspect.isclass(adapter_class) and issubclass(adapter_class, Adapter)):
        raise SnapshotError(f"{path!r} is not a diffsync.Adapter subclass")
    # An SSoT adapter takes its job (and sync): there is none here. A plain DiffSync adapter takes neither.
    parameters = inspect.signature(adapter_class).parameters
    kwargs = {name: None for name in ("job", "sync") if name in parameters}
    factory: Any = adapter_class
    try:
        adapter: Adapter = factory(**kwargs)
    except Exception as error:
        raise SnapshotError(
            f"constructing {path}({', '.join(f'{k}=None' for k in kwargs)}) failed: {error!r}"
        ) from error
    return adapter


def declared_models(adapter: Adapter) -> set[str]:
    """Model names the adapter declares (class attributes naming DiffSync models) or holds."""
    names = {
        name
        for name, value in inspect.getmembers(type(adapter))
        if inspect.isclass(value) and issubclass(value, DiffSyncModel)
    }
    return names | set(adapter.get_all_model_names())


@dataclass
class Snapshot:
    """What an adapter loaded, as the source's state: changes per key, and what was left out."""

    changes: dict[str, Change]
    # Model names the snapshot speaks for (declared by the adapter and written by the source).
    covered: set[str]
    # Objects of models the source does not write, per model name.
    skipped: dict[str, int] = field(default_factory=dict)
    tombstones: list[str] = field(default_factory=list)

    def records(self, upserts: list[StateRecord]) -> list[StateRecord]:
        """The upserts followed by the tombstones."""
        return upserts + [StateRecord(key, None) for key in self.tombstones]


def collect(adapter: Adapter, registry: ModelRegistry, source: str) -> Snapshot:
    """Every object the (loaded) adapter holds, checked against the source's models like an event."""
    from streamsync.sync.batch import fold

    events: list[Event] = []
    problems: list[str] = []
    skipped: dict[str, int] = {}
    for name in sorted(adapter.get_all_model_names()):
        objects = adapter.get_all(name)
        if name not in registry:
            skipped[name] = len(objects)
            continue
        for obj in objects:
            try:
                events.append(_event(source, name, obj))
            except ValidationError as error:
                problems.append(f"{name} {obj.get_unique_id()}: {describe(error)}")
    from streamsync.models.bookkeeping import KEY_LENGTH

    changes, rejected = fold(events, registry, source)
    problems += [f"{r.event.canonical_key}: {r.reason}" for r in rejected]
    problems += [f"{key[:120]}...: key longer than {KEY_LENGTH} characters" for key in changes if len(key) > KEY_LENGTH]
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise SnapshotError(f"{len(problems)} object(s) do not fit source {source!r}; nothing written:\n  {shown}")
    covered = declared_models(adapter) & set(registry.names())
    return Snapshot(changes=changes, covered=covered, skipped=skipped)


def _event(source: str, model: str, obj: DiffSyncModel) -> Event:
    return Event(
        source=source,
        model=model,
        op=Op.UPSERT,
        key=to_jsonable_python(obj.get_identifiers()),
        attrs=to_jsonable_python(obj.get_attrs()),
    )


def find_tombstones(snapshot: Snapshot, source: str, known: Collection[str]) -> list[str]:
    """Keys of the covered models that the state has (its table, or `known` from its topic) and the snapshot lacks."""
    from streamsync.models.bookkeeping import SourceState

    stored = SourceState.objects.filter(source=source, model__in=sorted(snapshot.covered)).values_list("key", flat=True)
    present = snapshot.changes
    snapshot.tombstones = sorted(
        {key for key in (*stored, *known) if model_of(key) in snapshot.covered and key not in present}
    )
    return snapshot.tombstones


def write(snapshot: Snapshot, source: str) -> list[StateRecord]:
    """Replace the source's state rows with the snapshot (one transaction); the records to produce."""
    from streamsync.sync.state import replace

    return snapshot.records(replace(source, snapshot.changes, snapshot.tombstones))


def describe_skipped(skipped: dict[str, Any]) -> str:
    """`name (n objects), ...` for a message."""
    return ", ".join(f"{name} ({count} object(s))" for name, count in sorted(skipped.items()))
