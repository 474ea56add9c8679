"""Apply a batch of change events to Nautobot as one incremental diff.

The hot path, in order: fold the events per key into one net change → load the batch's keys from Nautobot →
build the remote side from the events (omitted attributes keep Nautobot's values) → diff →
sync through nautobot_ssot.contrib's generic CRUD, inside one change context attributed to the
streamsync user. Nothing here knows about Kafka, so it can be run and tested on its own.
Runs synchronously: callers on an event loop run it in a worker thread.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from diffsync import DiffSyncModel
from diffsync.enum import DiffSyncFlags
from pydantic import ValidationError

from streamsync.adapters import adapter_classes
from streamsync.envelope import Event, Op
from streamsync.registry import ModelRegistry, RejectedEvent


@dataclass
class Rejection:
    """An event that was not applied, and why."""

    event: Event
    reason: str


@dataclass
class Change:
    """The net effect of a batch's events on one object."""

    model: type[DiffSyncModel]
    ids: dict[str, Any]
    op: Op
    attrs: dict[str, Any] = field(default_factory=dict)
    # A delete came earlier in the batch: attributes the later upserts omit take the model's
    # defaults, not the values of the object that was deleted.
    recreated: bool = False
    events: list[Event] = field(default_factory=list)


def fold(events: Sequence[Event], registry: ModelRegistry) -> tuple[dict[str, Change], list[Rejection]]:
    """Fold events (in partition order) into one change per canonical key.

    Upserts merge, later attributes winning; a delete wins over what came before it; an upsert
    after a delete recreates. Events that do not fit their model are rejected here.
    """
    changes: dict[str, Change] = {}
    rejected: list[Rejection] = []
    for event in events:
        try:
            model, ids, attrs = registry.split(event)
        except RejectedEvent as error:
            rejected.append(Rejection(event, error.reason))
            continue
        key = event.canonical_key
        previous = changes.get(key)
        if event.op is Op.DELETE:
            change = Change(model, ids, Op.DELETE)
        elif previous is None:
            change = Change(model, ids, Op.UPSERT, attrs)
        elif previous.op is Op.DELETE:
            change = Change(model, ids, Op.UPSERT, attrs, recreated=True)
        else:
            change = Change(model, ids, Op.UPSERT, {**previous.attrs, **attrs}, recreated=previous.recreated)
        change.events = [*(previous.events if previous else []), event]
        changes[key] = change
    return changes, rejected


@dataclass
class BatchResult:
    """What one batch did."""

    batch_id: str
    received: int
    applied: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    seconds: float = 0.0

    def as_log(self) -> dict[str, Any]:
        """Flat fields for a structured log line."""
        return {
            "batch_id": self.batch_id,
            "received": self.received,
            "applied": self.applied,
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
            "rejected": len(self.rejected),
            "seconds": round(self.seconds, 4),
        }


class SyncEngine:
    """Turns batches of events into the smallest set of writes in Nautobot."""

    def __init__(self, registry: ModelRegistry, username: str = "streamsync") -> None:
        self.registry = registry
        self.username = username

    def apply(self, events: Sequence[Event], *, source: str = "") -> BatchResult:
        """Apply `events` (in partition order) to Nautobot and report what happened."""
        from django.db import transaction
        from nautobot.extras.context_managers import web_request_context

        started = time.perf_counter()
        result = BatchResult(batch_id=str(uuid.uuid4()), received=len(events))

        changes, result.rejected = fold(events, self.registry)
        if not changes:
            result.seconds = time.perf_counter() - started
            return result

        models = {change.model for change in changes.values()}
        keys: dict[str, list[dict[str, Any]]] = {}
        for change in changes.values():
            keys.setdefault(change.model.get_type(), []).append(change.ids)

        nautobot_cls, remote_cls = adapter_classes(sorted(models, key=lambda m: m.get_type()))
        nautobot = nautobot_cls(keys=keys)
        nautobot.load()
        remote = remote_cls()
        applied = 0
        for change in changes.values():
            if change.op is Op.DELETE:
                applied += 1
                continue  # absent on the remote side: the diff deletes what Nautobot has
            existing = None if change.recreated else nautobot.get_or_none(change.model, change.ids)
            # Attributes the events omit keep Nautobot's values.
            base = existing.get_attrs() if existing is not None else {}
            try:
                remote.add(change.model(**change.ids, **{**base, **change.attrs}))
                applied += 1
            except ValidationError as error:
                reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
                result.rejected.extend(
                    Rejection(event, f"{change.model.get_type()}: {reason}") for event in change.events
                )

        diff = nautobot.diff_from(remote)
        summary = diff.summary()
        user = self._user()
        detail = f"streamsync:{source}" if source else "streamsync"
        with web_request_context(user, context_detail=detail), transaction.atomic():
            nautobot.sync_from(remote, diff=diff, flags=DiffSyncFlags.CONTINUE_ON_FAILURE)

        result.applied = applied
        result.created = summary.get("create", 0)
        result.updated = summary.get("update", 0)
        result.deleted = summary.get("delete", 0)
        result.unchanged = summary.get("no-change", 0)
        result.seconds = time.perf_counter() - started
        return result

    def _user(self) -> Any:
        """The Nautobot user the change log attributes streamsync's writes to."""
        from django.contrib.auth import get_user_model

        user, _ = get_user_model().objects.get_or_create(username=self.username)
        return user
