"""Nautobot's own changes into Kafka: an event broker that writes envelope-v1 events to the outbox.

Enabled in nautobot_config.py (docs/nautobot-events.md):

    EVENT_BROKERS = {"streamsync": {"CLASS": "streamsync.outbox.broker.StreamsyncEventBroker"}}

Nautobot calls `publish()` once per ObjectChange at the end of every change context (web and API
requests, jobs, `web_request_context`). For a Nautobot model that a configured source's DiffSync
model is bound to (`_model`), the broker builds the object's DiffSync view with contrib's own
loading code (`NautobotAdapter._load_single_object`, the same path the engine loads with) and writes
one `OutboxEvent` row per event: key = the model's identifiers, attrs = all its attributes.

Nothing here talks to Kafka: a row commits with the change when the change context runs inside a
transaction (streamsync's engine, jobs that use one), or right after it otherwise (web requests:
Nautobot calls brokers once the response is built), and the relay produces it.

Nautobot publishes a change context's ObjectChanges one by one, in order, once the context's
changes are all made. Inside a transaction, the first publish of a context reads its ObjectChanges
in one query, and the objects they name are loaded for the publishes to come a window at a time,
one query per model (plus its to-many prefetches), instead of two or three queries per object
(`_Dispatch`).

Deletes and identifier changes need the object as it was: while a change context is active, the
first save or delete of a bound object records its DiffSync view before the change (signals), and
`publish()` takes it from there.

Changes streamsync applied itself are published too, marked with a `streamsync-origin` header
naming the source they came from (see `origin()`), so that a consumer writing to that source skips
them and everyone else sees Nautobot's full change stream.

Nautobot loads event brokers before Django is set up: this module imports nothing of Django's
models or of streamsync's settings until it is used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nautobot.core.events import EventBroker

from streamsync.contract.envelope import Event, Op
from streamsync.contract.topics import NAUTOBOT, events_topic
from streamsync.sync import diff, loaded, outboxrows

log = logging.getLogger(__name__)

SOURCE = NAUTOBOT  # every event published here is Nautobot's own

# Kafka headers on streamsync.nautobot.events (the envelope itself is the v1 contract, unchanged).
HEADER_ORIGIN = "streamsync-origin"  # present only on changes streamsync applied: the source they came from
HEADER_REQUEST_ID = "nautobot-request-id"  # the change context (one web request, job run or engine batch)
HEADER_CHANGE_ID = "nautobot-change-id"  # the ObjectChange
HEADER_USER = "nautobot-user"
HEADER_CONTEXT = "nautobot-change-context"  # Web, ORM, Job, ...
HEADER_ACTION = "nautobot-action"  # create, update, delete: what Nautobot recorded

_OPS = {"create": Op.UPSERT, "update": Op.UPSERT, "delete": Op.DELETE}
# The engine's change contexts: "streamsync:<source>", or "streamsync" without one, then maybe " <note>"
# (streamsync.sync.engine.ChangeLog: "streamsync:ipam resync started by alice").
ENGINE_DETAIL = "streamsync"


def origin(headers: Iterable[tuple[str, bytes | str]] | Mapping[str, bytes] | None) -> str | None:
    """The source a message on streamsync.nautobot.events came from if streamsync applied it, else None.

    A consumer that writes Nautobot's changes to system S skips messages whose origin is S: those
    are S's own changes coming back.
    """
    for name, value in headers.items() if isinstance(headers, Mapping) else headers or ():
        if name == HEADER_ORIGIN:
            return value.decode() if isinstance(value, bytes) else value
    return None


def applied_by_streamsync(context_detail: str, user_name: str, streamsync_user: str) -> str | None:
    """The source of a change context streamsync's engine ran (its detail and its user both say so), else None.

    "" for an engine run without a source name.
    """
    if user_name != streamsync_user:
        return None
    head = context_detail.split(" ", 1)[0]  # source names are topic names: no spaces
    if head == ENGINE_DETAIL:
        return ""
    if head.startswith(ENGINE_DETAIL + ":"):
        return head[len(ENGINE_DETAIL) + 1 :]
    return None


@dataclass
class _Binding:
    """What the broker publishes, from streamsync's settings."""

    topic: str
    user: str
    # Nautobot (Django) model -> the DiffSync models bound to it, one per `_modelname`.
    models: dict[type, list[Any]]
    adapter_class: Any


def _binding(settings: Any) -> _Binding:
    from streamsync.sync.adapters import adapter_classes

    by_name: dict[str, Any] = {}
    registries = [settings.source(name).registry() for name in sorted(settings.sources)]
    registries += [settings.target(name).registry() for name in sorted(settings.targets)]
    for registry in registries:
        for model in registry:
            if getattr(model, "_model", None) is None:
                continue  # not bound to a Nautobot model
            known = by_name.setdefault(model.get_type(), model)
            if known is not model:
                log.warning(
                    "streamsync: two models named %r are bound (%s, %s); publishing %s",
                    model.get_type(),
                    known,
                    model,
                    known,
                )
    models: dict[type, list[Any]] = {}
    for model in by_name.values():
        models.setdefault(model._model, []).append(model)
    adapter_class = adapter_classes(by_name.values())[0] if by_name else None
    return _Binding(events_topic(SOURCE, settings.topic_prefix), settings.user, models, adapter_class)


@dataclass
class _Before:
    """DiffSync views of objects before a change context changed them, by change id, until published."""

    max_contexts: int = 1024
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _by_context: OrderedDict[str, dict[tuple[str, str], dict[str, Any]]] = field(default_factory=OrderedDict)

    def has(self, change_id: str, key: tuple[str, str]) -> bool:
        with self._lock:
            return key in self._by_context.get(change_id, {})

    def put(self, change_id: str, key: tuple[str, str], views: dict[str, Any]) -> None:
        with self._lock:
            objects = self._by_context.setdefault(change_id, {})
            self._by_context.move_to_end(change_id)
            objects.setdefault(key, views)
            # Contexts that never published (an exception before their ObjectChanges) are forgotten.
            while len(self._by_context) > self.max_contexts:
                self._by_context.popitem(last=False)

    def take(self, change_id: str, key: tuple[str, str]) -> dict[str, Any] | None:
        with self._lock:
            objects = self._by_context.get(change_id)
            if objects is None:
                return None
            views = objects.pop(key, None)
            if not objects:
                del self._by_context[change_id]
            return views


VIEW_WINDOW = 500  # objects of one model loaded together for the publishes to come


@dataclass
class _Dispatch:
    """One change context's ObjectChanges as Nautobot publishes them: read once, taken one by one.

    What a publish does not find here (a context published twice, a change recorded after the
    first publish) it reads on its own, as before: the memo saves queries, it never decides.
    """

    request_id: str
    # (Nautobot model, pk, action) -> the ObjectChange's id (the latest, when one object has two)
    change_ids: dict[tuple[type, str, str], str]
    # Nautobot model -> pks of its created or updated objects whose views are not loaded yet, in publish order
    pending: dict[type, list[str]]
    # (Nautobot model, pk) -> DiffSync views of the object as it is now, by model name (None: gone)
    views: dict[tuple[type, str], dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def read(cls, request_id: str, bound: Mapping[type, Any]) -> _Dispatch:
        from django.contrib.contenttypes.models import ContentType
        from nautobot.extras.models import ObjectChange

        types = {ContentType.objects.get_for_model(model).pk: model for model in bound}
        change_ids: dict[tuple[type, str, str], str] = {}
        pending: dict[type, list[str]] = {}
        rows = (
            ObjectChange.objects.filter(request_id=request_id, changed_object_type_id__in=list(types))
            .order_by("time")
            .values_list("pk", "changed_object_type_id", "changed_object_id", "action")
        )
        for change_id, type_id, object_id, action in rows:
            model, pk = types[type_id], str(object_id)
            seen = (model, pk, "create") in change_ids or (model, pk, "update") in change_ids
            if action != "delete" and not seen:
                pending.setdefault(model, []).append(pk)
            change_ids[(model, pk, action)] = str(change_id)
        return cls(request_id, change_ids, pending)

    def change_id(self, django_model: type, pk: str, action: str) -> str | None:
        return self.change_ids.pop((django_model, pk, action), None)

    def views_of(self, binding: _Binding, django_model: type, pk: str) -> dict[str, Any] | None:
        """The object's views now, loaded with the next window of its model's objects; None if not expected."""
        if (django_model, pk) not in self.views:
            pending = self.pending.get(django_model, [])
            if pk not in pending:
                return None
            start = pending.index(pk)
            window, pending[start:] = pending[start : start + VIEW_WINDOW], pending[start + VIEW_WINDOW :]
            models = binding.models[django_model]
            loaded = {model.get_type(): _load_many(binding, model, window, lock=True) for model in models}
            for one in window:
                self.views[(django_model, one)] = {name: found.get(one) for name, found in loaded.items()}
        return self.views.pop((django_model, pk))


_dispatch = threading.local()  # the _Dispatch of the change context this thread publishes


def _load_many(binding: _Binding, model: Any, pks: Sequence[str], lock: bool = False) -> dict[str, Any]:
    """DiffSync views of the objects that exist among `pks`, by pk, loaded as contrib's NautobotAdapter loads them.

    With `lock`, the rows stay locked until the transaction ends: a concurrent change of the same
    object waits until this event is written, so the event written last describes the state committed last.
    """
    queryset = model._get_queryset().filter(pk__in=pks).prefetch_related(*_to_many(model))
    if lock:
        queryset = queryset.select_for_update(of=("self",))
    adapter = binding.adapter_class(keys={})
    attributes = model.get_synced_attributes()
    return {str(row.pk): adapter._load_single_object(row, model, attributes) for row in queryset}


_change_context_state: Any = None


def _change_context() -> Any:
    """Nautobot's active change context, or None: runs on every save of any model, so it stays cheap."""
    global _change_context_state
    if _change_context_state is None:
        from nautobot.extras.signals import change_context_state

        _change_context_state = change_context_state
    return _change_context_state.get()


def _to_many(model: Any) -> list[str]:
    from streamsync.sync.adapters import to_many

    return to_many(model)


def _differ(left: dict[str, Any], right: dict[str, Any]) -> bool:
    return left.keys() != right.keys() or bool(diff.changed(left, right))


def _timestamp(text: str | None) -> datetime:
    try:
        ts = datetime.fromisoformat(text) if text else datetime.now(UTC)
    except ValueError:
        ts = datetime.now(UTC)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


class StreamsyncEventBroker(EventBroker):
    """Publishes Nautobot's changes of the models streamsync's sources and targets are bound to, through the outbox."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._binding: _Binding | None = None
        self._binding_error: str | None = None
        self._binding_lock = threading.Lock()
        self._before = _Before()
        self._connect_signals()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} topic={self._binding.topic if self._binding else '?'}>"

    # ------------------------------------------------------------------ configuration

    def configure(self, settings: Any = None) -> None:
        """(Re)read what to publish: from `settings` (a StreamsyncSettings), or PLUGINS_CONFIG and the environment."""
        from streamsync.settings import StreamsyncSettings

        with self._binding_lock:
            self._binding = _binding(settings or StreamsyncSettings.load())
            self._binding_error = None

    @property
    def topic(self) -> str:
        """The topic this broker's events are written for."""
        binding = self._bound()
        return binding.topic if binding else ""

    def _bound(self) -> _Binding | None:
        """The binding, read on first use (Django must be ready); None, logged once, if the settings are invalid."""
        if self._binding is not None or self._binding_error is not None:
            return self._binding
        try:
            self.configure()
        except Exception as error:  # never fail a user's change for streamsync's configuration
            self._binding_error = str(error)
            log.error("streamsync: Nautobot's changes are not published: %s", error)
        return self._binding

    # ------------------------------------------------------------------ the object as it was

    def _connect_signals(self) -> None:
        from django.db.models.signals import m2m_changed, post_save, pre_delete, pre_save

        uid = f"streamsync.outbox.broker.{id(self)}"
        pre_save.connect(self._on_pre_save, weak=False, dispatch_uid=uid + ".pre_save")
        post_save.connect(self._on_post_save, weak=False, dispatch_uid=uid + ".post_save")
        pre_delete.connect(self._on_pre_delete, weak=False, dispatch_uid=uid + ".pre_delete")
        m2m_changed.connect(self._on_m2m_changed, weak=False, dispatch_uid=uid + ".m2m_changed")

    def _on_pre_save(self, sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
        if not raw and not instance._state.adding:
            self._remember(type(instance), instance.pk)

    def _on_post_save(
        self, sender: Any, instance: Any, created: bool = False, raw: bool = False, **kwargs: Any
    ) -> None:
        if created and not raw:
            # Nothing existed before: no need to read it back when its tags are set next.
            self._remember(type(instance), instance.pk, created=True)

    def _on_pre_delete(self, sender: Any, instance: Any, **kwargs: Any) -> None:
        self._remember(type(instance), instance.pk)

    def _on_m2m_changed(
        self, sender: Any, instance: Any, action: str = "", reverse: bool = False, **kwargs: Any
    ) -> None:
        # Tags set without a save of the object; a reverse change (tag.<objects>.add) is not tracked.
        if action in ("pre_add", "pre_remove", "pre_clear") and not reverse:
            self._remember(type(instance), instance.pk)

    def _remember(self, django_model: type, pk: Any, created: bool = False) -> None:
        """Record a bound object's DiffSync views before the active change context changes it (first time only).

        An object the context created is recorded as having no views: there was nothing before.
        """
        context = _change_context()
        if context is None or pk is None:
            return
        binding = self._bound()
        if binding is None or django_model not in binding.models:
            return
        change_id = str(context.change_id)
        key = (django_model._meta.label_lower, str(pk))  # type: ignore[attr-defined]
        if self._before.has(change_id, key):
            return
        if created:
            self._before.put(change_id, key, {})
            return
        try:
            views = {
                model.get_type(): loaded.take(key[0], pk, model) or self._load(binding, model, pk)
                for model in binding.models[django_model]
            }
        except Exception:  # never fail a user's change; the update is then published without the comparison
            log.exception("streamsync: cannot read %s %s before its change", key[0], pk)
            return
        self._before.put(change_id, key, views)

    def _load(self, binding: _Binding, model: Any, pk: Any, lock: bool = False) -> Any:
        """The object's DiffSync view, loaded as contrib's NautobotAdapter loads it; None if it does not exist."""
        return _load_many(binding, model, [str(pk)], lock=lock).get(str(pk))

    def _dispatch_of(self, binding: _Binding, request_id: str) -> _Dispatch | None:
        """The memo of the change context `request_id` on this thread, read on its first publish.

        Only inside a transaction (streamsync's engine, atomic jobs): there the rows a window locks stay
        locked until the events are committed with the change. Outside one, each publish is its own
        transaction and loads (and locks) its object itself.
        """
        from django.db import connection

        if not request_id or not connection.in_atomic_block:
            _dispatch.current = None
            return None
        current: _Dispatch | None = getattr(_dispatch, "current", None)
        if current is None or current.request_id != request_id:
            current = _dispatch.current = _Dispatch.read(request_id, binding.models)
        return current

    # ------------------------------------------------------------------ publishing

    def publish(self, *, topic: str, payload: Any) -> None:
        """Write the events for one ObjectChange to the outbox (Nautobot calls this; `payload` is JSON text)."""
        parts = topic.split(".")
        if len(parts) != 4 or parts[0] != "nautobot" or parts[1] not in _OPS:
            return
        binding = self._bound()
        if binding is None:
            return
        from django.apps import apps

        try:
            django_model = apps.get_model(parts[2], parts[3])
        except LookupError:
            return
        models = binding.models.get(django_model)
        if not models:
            return
        data = json.loads(payload) if isinstance(payload, str | bytes) else payload
        self._publish(binding, django_model, models, parts[1], data)

    def _publish(self, binding: _Binding, django_model: Any, models: Sequence[Any], action: str, data: Any) -> None:
        from django.db import DatabaseError, connection, transaction

        snapshot = (data.get("postchange") or data.get("prechange") or {}) if isinstance(data, dict) else {}
        context = (data.get("context") or {}) if isinstance(data, dict) else {}
        pk = snapshot.get("id")
        if pk is None:
            log.error("streamsync: a %s change of %s without an object id", action, django_model._meta.label_lower)
            return
        # Inside the change's own transaction (streamsync's engine, atomic jobs) an outbox that cannot be
        # written fails the change with it; outside one the change is committed already and must stand.
        # (Only reads come before the one INSERT: no savepoint is needed inside a transaction.)
        in_transaction = connection.in_atomic_block
        try:
            with contextlib.nullcontext() if in_transaction else transaction.atomic():
                events = self._events(binding, django_model, models, action, str(pk), context)
                if events:
                    self._write(binding, events)
        except DatabaseError:
            if in_transaction:
                raise
            log.exception(
                "streamsync: events of %s %s %s could not be written to the outbox and are lost",
                action,
                django_model._meta.label_lower,
                pk,
            )
        except Exception:  # a model that cannot be loaded: never fail the user's change for it
            log.exception(
                "streamsync: cannot build the events of %s %s %s (ObjectChange of request %s)",
                action,
                django_model._meta.label_lower,
                pk,
                context.get("request_id"),
            )

    def _events(
        self,
        binding: _Binding,
        django_model: Any,
        models: Sequence[Any],
        action: str,
        pk: str,
        context: dict[str, Any],
    ) -> list[tuple[Event, list[tuple[str, str]]]]:
        """The events of one ObjectChange, each with its Kafka headers."""
        from django.contrib.contenttypes.models import ContentType
        from nautobot.extras.models import ObjectChange

        request_id = str(context.get("request_id") or "")
        dispatch = self._dispatch_of(binding, request_id)
        user_name = str(context.get("user_name") or "")
        ts = _timestamp(context.get("timestamp"))
        recorded = (django_model._meta.label_lower, pk)
        before_views: dict[str, Any] | None = {}
        after_views: dict[str, Any] = {}
        if action == "delete":
            before_views = self._before.take(request_id, recorded)
            if before_views == {}:
                return []  # created and deleted in this change context: nobody saw it
        else:
            memo = dispatch.views_of(binding, django_model, pk) if dispatch else None
            for model in models:
                name = model.get_type()
                after_views[name] = memo[name] if memo is not None else self._load(binding, model, pk, lock=True)
            if not any(after_views.values()):
                return []  # deleted since, in the same change context: its delete follows (and needs `recorded`)
            taken = self._before.take(request_id, recorded) or {}
            if action == "update":  # a create's views were recorded after it was created: nothing to compare
                before_views = taken
        change_id = (dispatch.change_id(django_model, pk, action) if dispatch else None) or (
            ObjectChange.objects.filter(
                request_id=request_id or None,
                changed_object_type=ContentType.objects.get_for_model(django_model),
                changed_object_id=pk,
                action=action,
            )
            .order_by("-time")
            .values_list("pk", flat=True)
            .first()
        )
        headers = [
            (HEADER_REQUEST_ID, request_id),
            (HEADER_CHANGE_ID, str(change_id or "")),
            (HEADER_USER, user_name),
            (HEADER_CONTEXT, str(context.get("change_context") or "")),
            (HEADER_ACTION, action),
        ]
        source = applied_by_streamsync(str(context.get("change_context_detail") or ""), user_name, binding.user)
        if source is not None:
            headers.append((HEADER_ORIGIN, source))

        events: list[tuple[Event, list[tuple[str, str]]]] = []
        for model in models:
            name = model.get_type()
            before, after = (before_views or {}).get(name), after_views.get(name)
            if action == "delete":
                if before is None:
                    if name not in (before_views or {}):  # recorded as None: not an object of this model
                        log.error("streamsync: %s %s was deleted, but its state before was not recorded", name, pk)
                    continue
                events.append(
                    (Event(source=SOURCE, model=name, op=Op.DELETE, key=before.get_identifiers(), ts=ts), headers)
                )
                continue
            if after is None:
                continue
            if before is not None:
                if before.get_identifiers() != after.get_identifiers():
                    # The key changed: the object under the old key is gone.
                    old = Event(source=SOURCE, model=name, op=Op.DELETE, key=before.get_identifiers(), ts=ts)
                    events.append((old, headers))
                elif not _differ(before.get_attrs(), after.get_attrs()):
                    continue  # nothing this model syncs changed
            upsert = Event(
                source=SOURCE, model=name, op=Op.UPSERT, key=after.get_identifiers(), attrs=after.get_attrs(), ts=ts
            )
            events.append((upsert, headers))
        return events

    def _write(self, binding: _Binding, events: list[tuple[Event, list[tuple[str, str]]]]) -> None:
        from streamsync.models.bookkeeping import OutboxEvent

        rows = [
            OutboxEvent(
                topic=binding.topic,
                key=event.canonical_key,
                value=event.to_bytes().decode(),
                headers=[list(header) for header in headers],
            )
            for event, headers in events
        ]
        if not outboxrows.offer(rows):  # inside streamsync's engine: one INSERT for its whole change context
            OutboxEvent.objects.bulk_create(rows)
