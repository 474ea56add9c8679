"""Every object of every model streamsync can sync, read from the database NAUTOBOT_DB_NAME names, as JSON.

    python -m tests.integration.roundtrip_export OUT.json [MODEL ...]

Run as its own process: the test process is bound to the run's database, and this reads another
(the generated data, or the database the worker wrote). Without MODEL arguments it picks the models
itself: every Django model with rows, as a source names it (a built-in model by name, else
`app_label.model`), and names the rest as skipped with the reason. Objects are read as a resync reads
Nautobot (streamsync.sync.adapters, every row, custom fields and relationships included), so
each is exactly what an upsert event of that model carries: identifiers and attributes.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

# Models streamsync could name but that are no data a source writes: every database has its own.
NOT_DATA = {
    "contenttypes.contenttype": "Django's registry of installed models, made by migrations in every database",
    "extras.job": (
        "Nautobot registers jobs from the installed code in every database; its model name `job` is also the "
        "attribute an SSoT adapter keeps its job in, so an adapter cannot hold it"
    ),
}


def _names(label: str) -> list[str]:
    """The source model names that sync Nautobot model `label`: its built-in models, else `label` itself."""
    from streamsync.models import BUILTIN_MODELS, builtin_model

    builtins = [
        name
        for name in BUILTIN_MODELS
        if getattr(getattr(builtin_model(name), "_model", None), "_meta", None) is not None
        and builtin_model(name)._model._meta.label_lower == label  # type: ignore[attr-defined]
    ]
    return builtins or [label]


def choose() -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The model names to export (built-in order first, then derived by label) and the skipped labels with why."""
    from django.apps import apps
    from django.db import connection

    from streamsync.models import BUILTIN_MODELS
    from streamsync.settings import ConfigError, resolve_model

    chosen: list[str] = []
    skipped: dict[str, dict[str, Any]] = {}
    tables = set(connection.introspection.table_names())
    for orm in apps.get_models():
        label = orm._meta.label_lower
        if orm._meta.app_label == "streamsync" or orm._meta.proxy or orm._meta.db_table not in tables:
            continue  # the synchronizer's own bookkeeping, and models without rows of their own
        count = orm._base_manager.count()
        if not count:
            continue
        if label in NOT_DATA:
            skipped[label] = {"count": count, "why": NOT_DATA[label]}
            continue
        for name in _names(label):
            try:
                resolve_model(name)
            except ConfigError as error:
                skipped[label] = {"count": count, "why": str(error)}
                continue
            chosen.append(name)
    order = list(BUILTIN_MODELS)
    chosen.sort(key=lambda name: (order.index(name) if name in order else len(order), name))
    return chosen, skipped


def to_many(model: Any) -> list[str]:
    """The model's to-many attributes (tags, content types, ...): lists Nautobot keeps without an order."""
    names = []
    for name in model._attributes:
        field = model.model_fields.get(name)
        annotation = field.annotation if field is not None else None
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        kinds = typing.get_args(annotation) if union else (annotation,)
        if any(typing.get_origin(kind) is list for kind in kinds):
            names.append(name)
    return names


def export(names: list[str]) -> dict[str, Any]:
    """Per model type: every object as {"key", "attrs"}, keys naming more than one object, to-many attributes."""
    from pydantic_core import to_jsonable_python

    from streamsync.settings import _registry
    from streamsync.sync.adapters import adapter_classes

    registry = _registry(names)
    objects: dict[str, list[dict[str, Any]]] = {}
    ambiguous: dict[str, list[str]] = {}
    many: dict[str, list[str]] = {}
    for model in registry:
        nautobot_cls, _ = adapter_classes([model])
        adapter = nautobot_cls(keys=None)
        adapter.load()
        name = model.get_type()
        objects[name] = [
            {"key": to_jsonable_python(obj.get_identifiers()), "attrs": to_jsonable_python(obj.get_attrs())}
            for obj in adapter.get_all(model)
        ]
        ambiguous[name] = sorted(unique_id for kind, unique_id in adapter.ambiguous if kind == name)
        many[name] = to_many(model)
    return {"objects": objects, "ambiguous": ambiguous, "to_many": many}


def main(out: str, names: list[str]) -> None:
    from streamsync.cli.nautobot_setup import setup

    setup()
    result: dict[str, Any] = {"skipped": {}}
    if not names:
        names, result["skipped"] = choose()
    result["models"] = names
    result.update(export(names))
    Path(out).write_text(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
