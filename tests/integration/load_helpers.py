"""What a partial load of the batches' keys costs, for tests that it does not grow with the objects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from diffsync import DiffSyncModel
from django.db import connection
from django.test.utils import CaptureQueriesContext

from streamsync.contract.envelope import Event
from streamsync.sync.adapters import adapter_classes


def load_queries(models: Sequence[type[DiffSyncModel]], worlds: list[list[Event]], n: int) -> int:
    """Queries a partial load of the first `n` worlds' keys takes; every keyed object must be loaded."""
    nautobot_cls, _ = adapter_classes(models)
    keys: dict[str, list[dict[str, Any]]] = {}
    for event in (e for events in worlds[:n] for e in events):
        keys.setdefault(event.model, []).append(dict(event.key))
    adapter = nautobot_cls(keys=keys)
    with CaptureQueriesContext(connection) as captured:
        adapter.load()
    assert sum(len(adapter.get_all(model.get_type())) for model in models) == len(worlds[0]) * n
    return len(captured.captured_queries)
