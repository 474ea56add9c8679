"""The measured work: seeding, streamsync batches, contrib full syncs and a plain validated_save loop.

This module imports Nautobot's models at import time: import it only once Nautobot is set up
(`bench.apply_bench` does that first).

Every measured call runs the way streamsync runs its writes: inside `transaction.atomic()` and one
`web_request_context` (change logging on), and every run checks afterwards that it did exactly the
changes it was meant to do, with one ObjectChange each, so the benchmark never times a no-op.
"""

from __future__ import annotations

import cProfile
import gc
import pstats
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, get_origin

from diffsync import Adapter
from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist
from django.db import connection, transaction
from nautobot.extras.context_managers import web_request_context
from nautobot.extras.models import ObjectChange, Status
from nautobot.ipam.models import VLAN, VLANGroup
from nautobot_ssot.contrib import NautobotAdapter

from streamsync.contract.envelope import Event, Op
from streamsync.models.ipam import VLANModel
from streamsync.sync.batch import BatchResult, Outcome
from streamsync.sync.engine import SyncEngine
from streamsync.sync.permissions import set_up_writer
from streamsync.sync.registry import ModelRegistry

PHASES = ("load", "diff", "save", "changelog")
VIDS_PER_GROUP = 4000  # VLAN ids stay in 1..4094: one VLAN group per 4,000 VLANs
SOURCE = "ipam"
USERNAME = "streamsync"
SEED_GROUP = "bench-seed-{:03d}"
NEW_GROUP = "bench-new-{:03d}"
# What `Workload.profile_streamsync` attributes a batch's time to: (label, file suffix, function or
# None for all time spent entering that file from outside it). Items may overlap.
PROFILE_ITEMS: tuple[tuple[str, str, str | None], ...] = (
    ("ObjectChange build + insert", "nautobot/extras/signals.py", "_create_or_update_object_change"),
    ("full_clean()", "django/db/models/base.py", "full_clean"),
    ("row INSERT/UPDATE", "django/db/models/base.py", "_save_table"),
    ("savepoints (atomic)", "django/db/transaction.py", "__enter__"),
    ("savepoints (atomic)", "django/db/transaction.py", "__exit__"),
    ("Redis cache reads", "django_redis/cache.py", "get"),
    ("change-context exit: snapshots", "nautobot/extras/models/change_logging.py", "get_snapshots"),
    ("change-context exit: webhook/job-hook lookups", "nautobot/extras/webhooks.py", "enqueue_webhooks"),
    ("change-context exit: webhook/job-hook lookups", "nautobot/extras/jobs.py", "enqueue_job_hooks"),
    ("event brokers (publish_event)", "nautobot/core/events/__init__.py", "publish_event"),
    ("streamsync/outbox/broker.py (its event broker)", "streamsync/outbox/broker.py", None),
)

Key = tuple[int, str]  # (vid, VLAN group name)


def _record_fields() -> tuple[str, ...]:
    """VLANModel's synced fields that `values()` can read: identifiers and non-list attributes.

    List attributes (tags, ...) keep the model's default (empty), which is what seeded VLANs have.
    """
    names = (*VLANModel._identifiers, *VLANModel._attributes)
    return tuple(n for n in names if get_origin(VLANModel.model_fields[n].annotation) is not list)


class BenchError(RuntimeError):
    """A measured run did not do what it was meant to do: its timing would mean nothing."""


def prefetch_fields() -> tuple[str, ...]:
    """VLANModel's list attributes backed by Django to-many fields (tags, ...) its queryset does not prefetch.

    contrib's `_get_queryset` prefetches only `a__b` foreign keys: each of these costs a load one
    query per object, unless the model's `get_queryset` prefetches it. Empty when the model does.
    """
    already = set(getattr(VLANModel.get_queryset(), "_prefetch_related_lookups", ()))
    names = []
    for name in VLANModel._attributes:
        if name in already or get_origin(VLANModel.model_fields[name].annotation) is not list:
            continue
        try:
            django_field = VLAN._meta.get_field(name)
        except FieldDoesNotExist:
            continue
        if django_field.many_to_many or django_field.one_to_many:
            names.append(name)
    return tuple(names)


class PrefetchingVLANModel(VLANModel):
    """VLANModel whose queryset prefetches its to-many attributes, as a tuned SSoT job's model would."""

    @classmethod
    def get_queryset(cls) -> Any:
        return super().get_queryset().prefetch_related(*prefetch_fields())


class FullNautobotAdapter(NautobotAdapter):
    """contrib's Nautobot side as an SSoT job builds it: every VLAN, loaded through the ORM."""

    vlan = VLANModel
    top_level: ClassVar[list[str]] = ["vlan"]


class FullRemoteAdapter(Adapter):
    """The remote side of a full sync: every VLAN the remote system holds."""

    vlan = VLANModel
    top_level: ClassVar[list[str]] = ["vlan"]


class TunedNautobotAdapter(FullNautobotAdapter):
    """The same, with the to-many attributes prefetched (one query each for all VLANs)."""

    vlan = PrefetchingVLANModel


class TunedRemoteAdapter(FullRemoteAdapter):
    """The remote side for the tuned variant (same model class on both sides)."""

    vlan = PrefetchingVLANModel


@dataclass
class Run:
    """One measured call: its changes, seconds per phase, database queries, traced peak."""

    changes: int
    total: float  # seconds for the whole call; the phases below cover all but bookkeeping (e.g. folding)
    phases: dict[str, float]
    queries: int
    peak_bytes: int | None = None


class _QueryCounter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        self.count += 1
        return execute(sql, params, many, context)


@contextmanager
def _measured(trace: bool) -> Iterator[tuple[_QueryCounter, list[int]]]:
    """Count queries; with `trace`, record tracemalloc's peak of what the block allocates."""
    counter = _QueryCounter()
    peak: list[int] = []
    gc.collect()
    if trace:
        tracemalloc.start()
        tracemalloc.reset_peak()
    try:
        with connection.execute_wrapper(counter):
            yield counter, peak
    finally:
        if trace:
            peak.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()


class Workload:
    """The database's VLANs and the keys the benchmark updates and creates."""

    def __init__(self) -> None:
        self.active = Status.objects.get(name="Active")
        registry, writer = ModelRegistry([VLANModel]), set_up_writer(USERNAME, [VLANModel])
        self.engine = SyncEngine(registry, writer)
        self.per_object = SyncEngine(registry, writer, bulk=False)  # the engine without its bulk creates and updates
        self.user = get_user_model().objects.get(username=USERNAME)
        self.groups: dict[str, VLANGroup] = {}
        self.seeded = 0  # seeded VLAN i is vid i % 4000 + 1 in seed group i // 4000
        self.created = 0  # created VLAN i is vid i % 4000 + 1 in new group i // 4000
        self._cursor = 0
        self._serial = 0

    # keys and groups ----------------------------------------------------------------------------

    def _group(self, name: str) -> VLANGroup:
        group = self.groups.get(name)
        if group is None:
            group = VLANGroup.objects.create(name=name)
            self.groups[name] = group
        return group

    def _serial_no(self) -> int:
        self._serial += 1
        return self._serial

    def update_keys(self, count: int) -> list[Key]:
        """Seeded VLANs to update, spread over all seed groups, none twice in a row."""
        keys = []
        for _ in range(count):
            i = (self._cursor * 7919) % self.seeded  # 7919 is prime: strides over the whole range
            self._cursor += 1
            keys.append((i % VIDS_PER_GROUP + 1, SEED_GROUP.format(i // VIDS_PER_GROUP)))
        return keys

    def new_keys(self, count: int) -> list[Key]:
        """Keys no VLAN has yet; their groups are created now, before anything is timed."""
        keys = []
        for i in range(self.created, self.created + count):
            name = NEW_GROUP.format(i // VIDS_PER_GROUP)
            self._group(name)
            keys.append((i % VIDS_PER_GROUP + 1, name))
        self.created += count
        return keys

    # seeding ------------------------------------------------------------------------------------

    @staticmethod
    def vlan_count() -> int:
        """VLANs in the database."""
        return VLAN.objects.count()

    def seed_to(self, total: int) -> float:
        """Bulk-create seed VLANs until the database holds `total` VLANs, then ANALYZE; seconds taken."""
        started = time.perf_counter()
        missing = total - self.vlan_count()
        batch: list[VLAN] = []
        for i in range(self.seeded, self.seeded + max(missing, 0)):
            group = self._group(SEED_GROUP.format(i // VIDS_PER_GROUP))
            vid = i % VIDS_PER_GROUP + 1
            batch.append(VLAN(vid=vid, name=f"seed-{group.name}-{vid}", vlan_group=group, status=self.active))
            if len(batch) == 5000:
                VLAN.objects.bulk_create(batch)
                batch = []
        if batch:
            VLAN.objects.bulk_create(batch)
        self.seeded += max(missing, 0)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # planner statistics as a database that grew over time has them
        return time.perf_counter() - started

    @staticmethod
    def remove_created() -> int:
        """Delete every VLAN the benchmark created (not the seeded ones), untimed; how many."""
        deleted, _ = VLAN.objects.filter(vlan_group__name__startswith=NEW_GROUP.split("{")[0]).delete()
        with connection.cursor() as cursor:
            cursor.execute(f'ANALYZE "{VLAN._meta.db_table}"')
        return deleted

    # the three paths ----------------------------------------------------------------------------

    def _events(self, updates: int, creates: int) -> list[Event]:
        """Upsert events, updates and creates interleaved; every update really changes something."""
        made = [_upsert(key, description=f"bench update {self._serial_no()}") for key in self.update_keys(updates)]
        new = [
            _upsert((vid, group), name=f"new-{group}-{vid}", description="bench create")
            for vid, group in self.new_keys(creates)
        ]
        events: list[Event] = []
        while made or new:
            if made:
                events.append(made.pop())
            if new:
                events.append(new.pop())
        return events

    def streamsync(self, updates: int, creates: int, *, trace: bool = False, bulk: bool = True) -> Run:
        """One batch through `SyncEngine.apply`, exactly as the worker's database thread calls it.

        `bulk=False`: through the engine with its bulk creates switched off (the per-object path).
        """
        events = self._events(updates, creates)
        before = ObjectChange.objects.count()
        with _measured(trace) as (queries, peak):
            result = (self.engine if bulk else self.per_object).apply(events, source=SOURCE)
        _check_batch(result, updates, creates)
        _check_changelog(before, updates + creates, "streamsync")
        phases = {p: result.timings.get(p, 0.0) for p in PHASES}
        return Run(len(events), result.timings["total"], phases, queries.count, *peak)

    def no_op(self, size: int) -> Run:
        """One batch of upserts that change nothing (the seeded VLANs' own names): what an in-sync replay costs."""
        events = [_upsert((vid, group), name=f"seed-{group}-{vid}") for vid, group in self.update_keys(size)]
        before = ObjectChange.objects.count()
        with _measured(False) as (queries, _):
            result = self.engine.apply(events, source=SOURCE)
        if result.count(Outcome.UNCHANGED) != size or result.failed or result.rejected:
            raise BenchError(f"no-op batch: {result.count(Outcome.UNCHANGED)} of {size} unchanged")
        _check_changelog(before, 0, "no-op batch")
        phases = {p: result.timings.get(p, 0.0) for p in PHASES}
        return Run(len(events), result.timings["total"], phases, queries.count)

    def profile_streamsync(self, creates: int) -> tuple[dict[str, float], dict[str, float]]:
        """cProfile one creates-only batch: shares of its total per phase, and per PROFILE_ITEMS entry."""
        events = self._events(0, creates)
        profiler = cProfile.Profile()
        profiler.enable()
        result = self.engine.apply(events, source=SOURCE)
        profiler.disable()
        _check_batch(result, 0, creates)
        stats: dict[Any, tuple[Any, ...]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        total = result.timings["total"]  # measured under the profiler too, so comparable
        phases = {p: result.timings.get(p, 0.0) / total for p in PHASES}
        items: dict[str, float] = {}
        for label, suffix, function in PROFILE_ITEMS:
            seconds = 0.0
            for (filename, _, name), (_, _, _, cumulative, callers) in stats.items():
                if not filename.endswith(suffix):
                    continue
                if function is None:  # time entering the file from outside it
                    seconds += sum(edge[3] for caller, edge in callers.items() if not caller[0].endswith(suffix))
                elif name == function:
                    seconds += cumulative
            items[label] = items.get(label, 0.0) + seconds / total
        return phases, items

    def remote_records(self, updates: int, creates: int) -> list[dict[str, Any]]:
        """What the remote system holds: every VLAN now in Nautobot, `updates` changed, `creates` added."""
        records = list(VLAN.objects.values(*_record_fields()))
        index = {(r["vid"], r["vlan_group__name"]): r for r in records}
        for key in self.update_keys(updates):
            index[key]["description"] = f"bench update {self._serial_no()}"
        for vid, group in self.new_keys(creates):
            records.append(
                {
                    "vid": vid,
                    "vlan_group__name": group,
                    "name": f"new-{group}-{vid}",
                    "status__name": "Active",
                    "description": "bench create",
                }
            )
        return records

    def full_sync(self, updates: int, creates: int, *, tuned: bool = False, trace: bool = False) -> Run:
        """An SSoT-style full sync through contrib: load both sides whole, diff_from, sync_from.

        The remote side is built from plain records already in memory (the least any remote
        system's load can cost); that build is part of `load`, as the event adapter's build is
        part of streamsync's `diff`. `tuned` prefetches the model's to-many attributes.
        """
        nautobot_cls, remote_cls = (
            (TunedNautobotAdapter, TunedRemoteAdapter) if tuned else (FullNautobotAdapter, FullRemoteAdapter)
        )
        model = remote_cls.vlan
        records = self.remote_records(updates, creates)
        before = ObjectChange.objects.count()
        clock = time.perf_counter
        with _measured(trace) as (queries, peak):
            started = clock()
            nautobot = nautobot_cls(job=None)
            nautobot.load()
            remote = remote_cls()
            for record in records:
                remote.add(model(**record))
            loaded = clock()
            diff = nautobot.diff_from(remote)
            diffed = clock()
            with transaction.atomic(), web_request_context(self.user, context_detail="bench:contrib"):
                nautobot.sync_from(remote, diff=diff)
                saved = clock()
            finished = clock()
        summary = diff.summary()
        wanted = {"create": creates, "update": updates, "delete": 0}
        if {k: summary[k] for k in wanted} != wanted:
            raise BenchError(f"contrib full sync: diff {summary}, expected {wanted}")
        _check_changelog(before, updates + creates, "contrib full sync")
        del nautobot, remote, diff, records
        phases = {
            "load": loaded - started,
            "diff": diffed - loaded,
            "save": saved - diffed,
            "changelog": finished - saved,
        }
        return Run(updates + creates, finished - started, phases, queries.count, *peak)

    def update_loop(self, updates: int) -> Run:
        """The update floor: each seeded VLAN read and `validated_save()`d with a new description, in one context."""
        keys = self.update_keys(updates)
        before = ObjectChange.objects.count()
        clock = time.perf_counter
        with _measured(False) as (queries, _):
            started = clock()
            with transaction.atomic(), web_request_context(self.user, context_detail="bench:loop"):
                for vid, group in keys:
                    vlan = VLAN.objects.get(vid=vid, vlan_group=self.groups[group])
                    vlan.description = f"bench update {self._serial_no()}"
                    vlan.validated_save()
                saved = clock()
            finished = clock()
        _check_changelog(before, updates, "validated_save update loop")
        phases = {"load": 0.0, "diff": 0.0, "save": saved - started, "changelog": finished - saved}
        return Run(updates, finished - started, phases, queries.count)

    def save_loop(self, creates: int) -> Run:
        """The floor: `validated_save()` of new VLANs in a loop, one change context, no diffing."""
        vlans = [
            VLAN(vid=vid, vlan_group=self.groups[group], name=f"new-{group}-{vid}", status=self.active)
            for vid, group in self.new_keys(creates)
        ]
        before = ObjectChange.objects.count()
        clock = time.perf_counter
        with _measured(False) as (queries, _):
            started = clock()
            with transaction.atomic(), web_request_context(self.user, context_detail="bench:loop"):
                for vlan in vlans:
                    vlan.description = "bench create"
                    vlan.validated_save()
                saved = clock()
            finished = clock()
        _check_changelog(before, creates, "validated_save loop")
        phases = {"load": 0.0, "diff": 0.0, "save": saved - started, "changelog": finished - saved}
        return Run(creates, finished - started, phases, queries.count)


def _upsert(key: Key, **attrs: Any) -> Event:
    vid, group = key
    return Event(source=SOURCE, model="vlan", op=Op.UPSERT, key={"vid": vid, "vlan_group__name": group}, attrs=attrs)


def _check_batch(result: BatchResult, updates: int, creates: int) -> None:
    if result.rejected or result.failed:
        reasons = [r.reason for r in result.rejected] + [o.reason for o in result.failed]
        raise BenchError(f"streamsync batch {result.batch_id}: rejected or failed: {reasons[:5]}")
    got = (result.count(Outcome.UPDATED), result.count(Outcome.CREATED))
    if got != (updates, creates):
        raise BenchError(f"streamsync batch: (updated, created) = {got}, expected {(updates, creates)}")


def _check_changelog(before: int, expected: int, what: str) -> None:
    logged = ObjectChange.objects.count() - before
    if logged != expected:
        raise BenchError(f"{what}: {logged} ObjectChange(s) recorded for {expected} change(s)")
