"""Apply-path benchmark: streamsync's incremental apply against nautobot-ssot contrib's full sync.

    python -m bench.apply_bench [--quick]

Everything is measured in one run, on one freshly cloned Nautobot database (`streamsync_bench`,
dropped at the end), with change logging on (one `web_request_context` per call, as streamsync
writes), and diffsync's per-object INFO logs filtered to WARNING for every path alike:

(a) streamsync `SyncEngine.apply`: batches of 1, 10, 100 and 500 VLAN upserts (half updates of
    existing VLANs, half creates), creates-only batches, and one-update latency at each N;
(b) nautobot-ssot contrib's full path: `NautobotAdapter(job=None)` loading all N VLANs, a remote
    adapter holding all of them with 1 changed (or 100 added), `diff_from` + `sync_from`, at
    N = 2,000, 10,000 and 100,000; when VLANModel's queryset does not prefetch its list attributes
    (tags), also a variant that does, as a tuned SSoT job would;
(c) a plain `validated_save()` loop under one change context: the ORM + change log floor.

`--quick` is a smoke run: N = 2,000 and 10,000, fewer repeats, no batch of 500.

The batch-size rows run first; at each N, streamsync's runs are then interleaved with contrib's,
so that the ratios compare calls made under the same machine load. The table goes to stdout,
progress to stderr. This is a benchmark, not a test: the machine's load moves absolute numbers,
the ratios (all measured in the same run) are what to compare.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from bench.common import progress, scratch_database

if TYPE_CHECKING:
    from bench.workload import Run, Workload

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "streamsync_bench"
PHASES = ("load", "diff", "save", "changelog")
MIB = 1024 * 1024

LATENCY_TARGETS = {10_000: 30.0, 100_000: 300.0}  # contrib full sync / streamsync, one change
THROUGHPUT_TARGET = 4.0  # streamsync's best batched creates/s over contrib's full-path creates/s
BULK_TARGET = 5.0  # creates/s, the engine's bulk path over its per-object path (bulk=False), same batch size
BULK_UPDATE_TARGET = 4.0  # plain-field updates/s, the same comparison
NO_OP_TARGET = 5_000.0  # events/s of a batch that changes nothing
FULL_SYNC_CHANGES = 100  # the contrib variant with as many changes as a streamsync batch of 100
PLAIN, TUNED = "plain", "tuned"  # contrib as is; contrib with the model's to-many attributes prefetched


class Counts(NamedTuple):
    """What to run of one contrib variant at one N."""

    updates: int  # one-update full syncs
    creates: int  # 100-create full syncs
    traced: bool  # one more one-update full sync, untimed, under tracemalloc


@dataclass(frozen=True)
class Plan:
    """How much of everything to run."""

    sizes: tuple[int, ...]
    batches: dict[int, int]  # batch size -> mixed batches
    create_batches: int  # creates-only batches per size measured
    creates_at_best: bool  # creates-only batches at the best mixed batch size too, not only at 100
    ns: tuple[int, ...]
    latency_runs: int  # streamsync one-update runs per N
    contrib: dict[int, dict[str, Counts]]  # N -> contrib variant -> what to run
    traced_ns: tuple[int, ...]  # N where one extra, untimed streamsync call measures peak memory
    loop_runs: int
    loop_size: int
    profile_creates: int
    bulk_sizes: tuple[int, ...] = (100, 500)  # creates-only batches, bulk path beside the per-object path
    bulk_batches: int = 2  # of each size and path, interleaved
    no_op_size: int = 500
    no_op_runs: int = 3


FULL = Plan(
    sizes=(1, 10, 100, 500),
    batches={1: 40, 10: 20, 100: 6, 500: 4},
    create_batches=3,
    creates_at_best=True,
    ns=(2_000, 10_000, 100_000),
    latency_runs=30,
    contrib={
        2_000: {PLAIN: Counts(5, 3, True), TUNED: Counts(5, 3, True)},
        10_000: {PLAIN: Counts(2, 2, True), TUNED: Counts(3, 3, True)},
        # Plain contrib costs minutes per run at 100k when it loads tags one VLAN at a time.
        100_000: {PLAIN: Counts(1, 1, False), TUNED: Counts(2, 1, True)},
    },
    traced_ns=(2_000, 10_000, 100_000),
    loop_runs=3,
    loop_size=200,
    profile_creates=100,
)
QUICK = Plan(  # a smoke run: every path once, in under 2 minutes; the batch of 500 alone would take ~30 s
    sizes=(1, 10, 100),
    batches={1: 6, 10: 2, 100: 1},
    create_batches=1,
    creates_at_best=False,
    ns=(2_000, 10_000),
    latency_runs=6,
    contrib={
        2_000: {PLAIN: Counts(1, 0, False), TUNED: Counts(1, 1, True)},
        10_000: {PLAIN: Counts(0, 0, False), TUNED: Counts(1, 1, False)},
    },
    traced_ns=(2_000,),
    loop_runs=1,
    loop_size=50,
    profile_creates=30,
    bulk_batches=1,
    no_op_runs=2,
)


@dataclass
class Row:
    """One line of the table: runs of the same call at the same N."""

    section: str
    label: str
    n: int
    runs: list[Run] = field(default_factory=list)
    peak_bytes: int | None = None

    @property
    def changes(self) -> int:
        return sum(r.changes for r in self.runs)

    @property
    def seconds(self) -> float:
        return sum(r.total for r in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.total for r in self.runs) * 1000

    @property
    def ms_per_change(self) -> float:
        return self.seconds / self.changes * 1000

    @property
    def per_s(self) -> float:
        return self.changes / self.seconds

    def phase_ms_per_change(self, phase: str) -> float:
        return sum(r.phases[phase] for r in self.runs) / self.changes * 1000

    def shares(self) -> str:
        """Where the time goes, as shares of the total."""
        total = self.seconds
        return ", ".join(f"{p} {sum(r.phases[p] for r in self.runs) / total:.0%}" for p in PHASES)

    @property
    def queries_per_change(self) -> float:
        return sum(r.queries for r in self.runs) / self.changes


@dataclass
class Results:
    """All rows, plus the ones the ratios are computed from."""

    rows: list[Row] = field(default_factory=list)
    mixed: dict[int, Row] = field(default_factory=dict)  # batch size -> streamsync, half updates half creates
    creates: dict[int, Row] = field(default_factory=dict)  # batch size -> streamsync, creates only
    latency: dict[int, Row] = field(default_factory=dict)  # N -> streamsync, one update
    update: dict[tuple[str, int], Row] = field(default_factory=dict)  # (variant, N) -> contrib, one update
    create: dict[tuple[str, int], Row] = field(default_factory=dict)  # (variant, N) -> contrib, 100 creates
    stream_creates: dict[int, Row] = field(default_factory=dict)  # N -> streamsync creates, beside contrib's
    best_size: int = FULL_SYNC_CHANGES  # the creates-only batch size with the best throughput
    loop: Row | None = None
    paths: dict[tuple[bool, int], Row] = field(default_factory=dict)  # (bulk, batch size) -> creates only
    update_paths: dict[tuple[bool, int], Row] = field(default_factory=dict)  # (bulk, batch size) -> updates only
    update_loop: Row | None = None
    no_op: Row | None = None
    profile_phases: dict[str, float] = field(default_factory=dict)  # shares of a profiled creates-only batch
    profile: dict[str, float] = field(default_factory=dict)  # and of what inside it (PROFILE_ITEMS)
    prefetched: tuple[str, ...] = ()  # what the tuned contrib variant prefetches
    seed_seconds: dict[int, float] = field(default_factory=dict)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def contrib_label(self, variant: str) -> str:
        return "contrib full sync" if variant == PLAIN else f"contrib full sync, {'+'.join(self.prefetched)} prefetched"


def measure(plan: Plan, work: Workload) -> Results:
    """Run every row of the plan.

    The batch-size rows run first, at the first N; the VLANs they created are removed again
    (untimed), so that the N-dependent rows start at N. At each N, streamsync's samples are
    interleaved with contrib's runs, so that both see the same machine load.
    """
    from bench.workload import prefetch_fields

    res = Results(prefetched=prefetch_fields())
    res.seed_seconds[plan.ns[0]] = work.seed_to(plan.ns[0])
    progress(f"seeded {plan.ns[0]:,} VLANs in {res.seed_seconds[plan.ns[0]]:.1f}s; warming up (imports, caches)")
    work.streamsync(1, 1)
    work.full_sync(1, 0)
    work.save_loop(2)
    _batch_rows(plan, work, res)
    removed = work.remove_created()
    progress(f"removed the {removed:,} VLANs created so far (untimed): N back to {work.vlan_count():,}")
    for n in plan.ns:
        if n not in res.seed_seconds:
            res.seed_seconds[n] = work.seed_to(n)
            progress(f"seeded to N={n:,} in {res.seed_seconds[n]:.1f}s")
        _n_rows(plan, work, res, n)
    return res


def _batch_rows(plan: Plan, work: Workload, res: Results) -> None:
    """streamsync batches of each size (mixed, then creates only), the validated_save loop, one profile."""
    for size in plan.sizes:
        row = res.mixed[size] = res.add(Row("a", f"streamsync batch={size}, half upd/half cre", work.vlan_count()))
        progress(f"(a) streamsync: {plan.batches[size]} batch(es) of {size}, half updates, half creates")
        for b in range(plan.batches[size]):
            updates = (b + 1) % 2 if size == 1 else size // 2  # size 1: update, create, update, ...
            row.runs.append(work.streamsync(updates, size - updates))

    loop = res.loop = res.add(Row("c", f"validated_save loop, {plan.loop_size} creates", work.vlan_count()))
    progress(f"(c) validated_save loop: {plan.loop_runs} x {plan.loop_size} creates")
    loop.runs.extend(work.save_loop(plan.loop_size) for _ in range(plan.loop_runs))

    _path_rows(plan, work, res)

    best = max(res.mixed, key=lambda s: res.mixed[s].per_s)
    for size in sorted({FULL_SYNC_CHANGES, best if plan.creates_at_best else FULL_SYNC_CHANGES}):
        row = res.creates[size] = res.add(Row("a", f"streamsync batch={size}, creates", work.vlan_count()))
        progress(f"(a) streamsync: {plan.create_batches} creates-only batch(es) of {size}")
        row.runs.extend(work.streamsync(0, size) for _ in range(plan.create_batches))
    res.best_size = max(res.creates, key=lambda s: res.creates[s].per_s)

    progress(f"profiling one streamsync batch of {plan.profile_creates} creates (untimed)")
    res.profile_phases, res.profile = work.profile_streamsync(plan.profile_creates)


def _path_rows(plan: Plan, work: Workload, res: Results) -> None:
    """Creates-only, then updates-only batches through the bulk path and the per-object path, interleaved; the
    validated_save loop of updates; then no-op batches."""
    for size in plan.bulk_sizes:
        for bulk in (True, False):
            label = "bulk path" if bulk else "per-object path (bulk=False)"
            res.paths[bulk, size] = res.add(Row("a", f"streamsync batch={size}, creates, {label}", work.vlan_count()))
        progress(f"(a) streamsync: {plan.bulk_batches} x {size} creates through each path, interleaved")
        for _ in range(plan.bulk_batches):
            for bulk in (True, False):
                res.paths[bulk, size].runs.append(work.streamsync(0, size, bulk=bulk))
    for size in plan.bulk_sizes:
        for bulk in (True, False):
            label = "bulk path" if bulk else "per-object path (bulk=False)"
            row = Row("a", f"streamsync batch={size}, updates, {label}", work.vlan_count())
            res.update_paths[bulk, size] = res.add(row)
        progress(f"(a) streamsync: {plan.bulk_batches} x {size} updates through each path, interleaved")
        for _ in range(plan.bulk_batches):
            for bulk in (True, False):
                res.update_paths[bulk, size].runs.append(work.streamsync(size, 0, bulk=bulk))
    size = plan.loop_size
    res.update_loop = res.add(Row("c", f"validated_save loop, {size} updates", work.vlan_count()))
    progress(f"(c) validated_save loop: {plan.loop_runs} x {size} updates")
    res.update_loop.runs.extend(work.update_loop(size) for _ in range(plan.loop_runs))
    res.no_op = res.add(Row("a", f"streamsync batch={plan.no_op_size}, no-op (already in sync)", work.vlan_count()))
    progress(f"(a) streamsync: {plan.no_op_runs} no-op batch(es) of {plan.no_op_size}")
    res.no_op.runs.extend(work.no_op(plan.no_op_size) for _ in range(plan.no_op_runs))


def _n_rows(plan: Plan, work: Workload, res: Results, n: int) -> None:
    """At N VLANs: one-update latency and create throughput of streamsync and of contrib's full sync.

    streamsync's one-update samples are spread between contrib's one-update runs, and one
    streamsync creates-only batch (best size) runs before each contrib 100-create run.
    """
    variants = plan.contrib[n]
    if not res.prefetched:  # nothing to prefetch: the tuned variant is the plain one, run once as much
        one, other = variants[PLAIN], variants[TUNED]
        merged = Counts(max(one.updates, other.updates), max(one.creates, other.creates), one.traced or other.traced)
        variants = {PLAIN: merged}

    latency = res.latency[n] = res.add(Row("a", "streamsync 1 update", work.vlan_count()))
    creates = res.stream_creates[n] = res.add(Row("a", f"streamsync batch={res.best_size}, creates", latency.n))
    update_runs = sum(c.updates for c in variants.values())
    chunks = [len(part) for part in _split(range(plan.latency_runs), update_runs + 1)]
    progress(
        f"N={latency.n:,}: {plan.latency_runs} streamsync one-update runs spread over {update_runs} contrib one-update"
        " run(s); a streamsync creates batch before each contrib 100-create run"
    )

    def stream_latency() -> None:
        latency.runs.extend(work.streamsync(1, 0) for _ in range(chunks.pop()))

    for variant, counts in variants.items():
        tuned = variant == TUNED
        label = res.contrib_label(variant)
        if counts.updates:
            row = res.update[variant, n] = res.add(Row("b", f"{label}, 1 update", work.vlan_count()))
            progress(f"(b) N={row.n:,}: {label}, one update, {counts.updates} run(s)")
            for _ in range(counts.updates):
                stream_latency()
                row.runs.append(work.full_sync(1, 0, tuned=tuned))
        if counts.creates:
            row = res.create[variant, n] = res.add(Row("b", f"{label}, {FULL_SYNC_CHANGES} creates", work.vlan_count()))
            progress(f"(b) N={row.n:,}: {label}, {FULL_SYNC_CHANGES} creates, {counts.creates} run(s)")
            for _ in range(counts.creates):  # N stays put: what each run created is deleted again, untimed
                creates.runs.append(work.streamsync(0, res.best_size))
                work.remove_created()
                row.runs.append(work.full_sync(0, FULL_SYNC_CHANGES, tuned=tuned))
                work.remove_created()
    stream_latency()

    # Peak memory: one more call per path, untimed (tracemalloc slows Python down).
    if n in plan.traced_ns:
        latency.peak_bytes = work.streamsync(1, 0, trace=True).peak_bytes
    for variant, counts in variants.items():
        if counts.traced and (variant, n) in res.update:
            progress(f"(b) N={work.vlan_count():,}: {res.contrib_label(variant)}, one update, traced")
            res.update[variant, n].peak_bytes = work.full_sync(1, 0, tuned=variant == TUNED, trace=True).peak_bytes
    if not creates.runs:
        res.rows.remove(creates)
        del res.stream_creates[n]


def _split(items: range, parts: int) -> list[range]:
    """`items` in `parts` contiguous, nearly equal slices."""
    size, extra = divmod(len(items), parts)
    out, start = [], items.start
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(range(start, end))
        start = end
    return out


# report ------------------------------------------------------------------------------------------

COLUMNS = (
    ("row", "<", 50),
    ("N", ">", 7),
    ("chg/run", ">", 7),
    ("runs", ">", 4),
    ("ms/run p50", ">", 10),
    ("ms/change", ">", 9),
    ("changes/s", ">", 9),
    ("load", ">", 7),
    ("diff", ">", 6),
    ("save", ">", 6),
    ("chlog", ">", 6),
    ("q/change", ">", 8),
    ("peak MiB", ">", 8),
)


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _line(cells: list[str]) -> str:
    return " | ".join(f"{cell:{align}{width}}" for cell, (_, align, width) in zip(cells, COLUMNS, strict=True))


def table(res: Results) -> list[str]:
    """The one table: every row measured in this run, grouped (a), (b), (c)."""
    header = _line([name for name, _, _ in COLUMNS])
    out = [header, "-" * len(header)]
    for section in ("a", "b", "c"):
        for row in (r for r in res.rows if r.section == section):
            out.append(
                _line(
                    [
                        f"({row.section}) {row.label}",
                        f"{row.n:,}",
                        "/".join(str(c) for c in sorted({r.changes for r in row.runs})),
                        str(len(row.runs)),
                        _fmt(row.p50_ms),
                        _fmt(row.ms_per_change),
                        _fmt(row.per_s),
                        *(_fmt(row.phase_ms_per_change(p)) for p in PHASES),
                        _fmt(row.queries_per_change),
                        f"{row.peak_bytes / MIB:.1f}" if row.peak_bytes is not None else "",
                    ]
                )
            )
    return out


def _verdict(value: float, target: float) -> str:
    return "PASS" if value >= target else "MISS"


def _shares_line(row: Row) -> str:
    return (
        f"    ({row.section}) {row.label}, N={row.n:,}: {row.ms_per_change:.2f} ms/change = {row.shares()}; "
        f"{row.queries_per_change:.1f} queries/change"
    )


def ratios(res: Results) -> list[str]:
    """Ratios from this run's rows, targets with PASS/MISS, and where the time goes when one is missed."""
    out = ["Ratios (all from the table above)"]
    missed: dict[str, list[Row]] = {}
    for n, target in LATENCY_TARGETS.items():
        out.append(f"  one-change latency, contrib full sync / streamsync, at N={n:,} (target >= {target:.0f}x):")
        compared = [(v, res.update[v, n]) for v in (PLAIN, TUNED) if (v, n) in res.update]
        if n not in res.latency or not compared:
            out.append("    not measured in this run (--quick)")
            continue
        stream = res.latency[n]
        for variant, full in compared:
            ratio = full.p50_ms / stream.p50_ms
            verdict = _verdict(ratio, target)
            out.append(
                f"    {res.contrib_label(variant)}: {full.p50_ms:,.0f} ms / {stream.p50_ms:.1f} ms = {ratio:,.0f}x"
                f"   {verdict}"
            )
            if verdict == "MISS":
                missed[f"one-change latency at N={n:,} vs {res.contrib_label(variant)}"] = [stream, full]
    latencies = [row.p50_ms for row in res.latency.values()]
    out.append(
        "  streamsync one-change latency by N: "
        + ", ".join(f"{row.n:,}: {row.p50_ms:.1f} ms" for row in res.latency.values())
        + f" (max/min {max(latencies) / min(latencies):.2f}); queries per change: "
        + ", ".join(f"{row.queries_per_change:.1f}" for row in res.latency.values())
        + " (the work does not grow with N; time moves with the machine's load)"
    )

    out.append(
        f"  batched create throughput, streamsync (creates only, batch={res.best_size}: its best size) / contrib full"
        f" path ({FULL_SYNC_CHANGES} creates per sync), both measured side by side at each N"
        f" (target >= {THROUGHPUT_TARGET:.0f}x):"
    )
    for (variant, n), row in sorted(res.create.items(), key=lambda item: (item[0][1], item[0][0])):
        stream = res.stream_creates[n]
        ratio = stream.per_s / row.per_s
        verdict = _verdict(ratio, THROUGHPUT_TARGET)
        out.append(
            f"    N={row.n:,}, {res.contrib_label(variant)}: streamsync {stream.per_s:.1f}/s / contrib "
            f"{row.per_s:.1f}/s = {ratio:.2f}x   {verdict}"
        )
        if verdict == "MISS":
            missed[f"batched create throughput at N={row.n:,} vs {res.contrib_label(variant)}"] = [stream, row]
    best_mixed = max(res.mixed, key=lambda s: res.mixed[s].per_s)
    out.append(
        f"  best streamsync batch size for half updates/half creates: {best_mixed} "
        f"({res.mixed[best_mixed].per_s:.1f}/s)"
    )
    if res.loop is not None:
        stream = res.creates[res.best_size]
        out.append(
            f"  batched create throughput / validated_save loop (side by side, before the N rows): streamsync "
            f"batch={res.best_size} {stream.per_s:.1f}/s / loop {res.loop.per_s:.1f}/s = "
            f"{stream.per_s / res.loop.per_s:.2f}x   (no target: the loop is the floor, ORM + change log with no "
            "load, diff or savepoints)"
        )
    out += _path_ratios(res)
    if not missed:
        return out
    out += ["", "Where the time goes (phase shares of the rows behind each MISS)"]
    for what, rows in missed.items():
        out.append(f"  {what}: MISS")
        out += [_shares_line(row) for row in rows]
    if any(what.startswith("batched") for what in missed):
        if res.loop is not None:
            out += ["  the floor, for comparison:", _shares_line(res.loop)]
        if res.profile:
            out.append(
                "  inside streamsync, per create (cProfile of one untimed creates-only batch, shares of its total; "
                "items overlap):"
            )
            out.append("    phases: " + ", ".join(f"{p} {share:.0%}" for p, share in res.profile_phases.items()))
            out += [f"    {label}: {share:.0%}" for label, share in res.profile.items()]
    return out


def _path_ratios(res: Results) -> list[str]:
    """The bulk path against the per-object path and the validated_save loop, creates and updates; the no-op rate."""
    out = _bulk_ratios("creates", res.paths, res.loop, BULK_TARGET)
    out += _bulk_ratios("updates", res.update_paths, res.update_loop, BULK_UPDATE_TARGET)
    if res.no_op is not None:
        rate = res.no_op.per_s
        out.append(
            f"  no-op batch of {res.no_op.runs[0].changes} (target >= {NO_OP_TARGET:,.0f} events/s): "
            f"{rate:,.0f} events/s   {_verdict(rate, NO_OP_TARGET)}"
        )
    return out


def _bulk_ratios(what: str, paths: dict[tuple[bool, int], Row], loop: Row | None, target: float) -> list[str]:
    """One kind of change: the bulk path over the per-object path at each batch size, and both over the loop."""
    out = []
    for (bulk, size), row in sorted(paths.items()):
        other = paths.get((False, size))
        if not bulk or other is None:
            continue
        ratio = row.per_s / other.per_s
        out.append(
            f"  {what}, bulk path / per-object path, batch={size} (target >= {target:g}x): "
            f"{row.per_s:.1f}/s / {other.per_s:.1f}/s = {ratio:.2f}x   {_verdict(ratio, target)}"
        )
        if loop is not None:
            out.append(
                f"  {what}, bulk path batch={size} / validated_save loop: {row.per_s:.1f}/s / {loop.per_s:.1f}/s"
                f" = {row.per_s / loop.per_s:.2f}x; per-object path / loop = {other.per_s / loop.per_s:.2f}x"
            )
    return out


def _code_state() -> str:
    """The commit measured, and whether streamsync/ had uncommitted changes (it is edited concurrently)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "streamsync"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "code: not a git checkout"
    return f"code: commit {head}" + (" + uncommitted changes in streamsync/" if dirty else "")


def _brokers() -> str:
    from django.conf import settings

    brokers = getattr(settings, "EVENT_BROKERS", {}) or {}
    return ", ".join(f"{name} ({config.get('CLASS', '?')})" for name, config in brokers.items()) or "none"


def report(res: Results, argv: list[str], started: datetime, elapsed: float, load: tuple[float, ...]) -> str:
    """The whole printout: header, table, column notes, ratios."""
    versions = ", ".join(
        f"{name} {version(name)}" for name in ("nautobot", "nautobot-ssot", "diffsync", "django", "psycopg2-binary")
    )
    lines = [
        f"streamsync apply benchmark, {started:%Y-%m-%d %H:%M} UTC: "
        + f"python -m bench.apply_bench {shlex.join(argv)}".rstrip(),
        f"Python {platform.python_version()}, {versions}; {os.cpu_count()} CPU(s); "
        f"load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f}",
        f"{_code_state()}; database {DB_NAME} (fresh clone of the migrated template); change logging on "
        "(web_request_context); diffsync logs at WARNING",
        f"Nautobot event brokers (every path's changes go through them): {_brokers()}",
        "",
        *table(res),
        "",
        "Columns: chg/run = changes per run (updates or creates, each one ObjectChange); ms/run p50 = median",
        "wall time of one call; ms/change and changes/s = all runs' time over all runs' changes;",
        "load/diff/save/chlog = ms per change in each phase (streamsync: BatchResult.timings; contrib: load =",
        "NautobotAdapter.load() + building the remote adapter, diff = diff_from, save = sync_from, chlog = leaving",
        "the change context + commit); q/change = SQL queries per change; peak MiB = tracemalloc peak of Python",
        "allocations during one extra, untimed call (tracing slows Python, so it is never the timed run).",
        *(
            [
                "contrib rows: 'contrib full sync' is NautobotAdapter(job=None) with VLANModel as is, which loads its",
                f"list attributes ({', '.join(res.prefetched)}) with one query per VLAN; '... prefetched' is the same",
                "with VLANModel.get_queryset() prefetching them, as a tuned SSoT job would.",
            ]
            if res.prefetched
            else ["contrib rows: NautobotAdapter(job=None) with VLANModel as is (its queryset prefetches tags)."]
        ),
        "Order: the batch-size rows and the loop run first, at the first N, and their VLANs are deleted again",
        "(untimed); then, at each N, streamsync's runs are interleaved with contrib's, so that both see the same",
        "machine load, and what each create run adds is deleted after it (untimed), so that N stays put.",
        f"Process ru_maxrss at the end: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB. "
        "Seeding (VLAN.objects.bulk_create + ANALYZE): "
        + ", ".join(f"{n:,} in {s:.1f}s" for n, s in res.seed_seconds.items())
        + f". Wall time of the whole run: {elapsed / 60:.1f} min.",
        "",
        *ratios(res),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.apply_bench", description="streamsync apply-path benchmark")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: N = 2,000 and 10,000 only, fewer repeats, no batch of 500"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL

    os.environ.setdefault("NAUTOBOT_CONFIG", str(ROOT / "deploy" / "nautobot_config.py"))
    # The template database, when missing, is built with `nautobot-server` from this environment.
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    started, clock, load = datetime.now(UTC), time.monotonic(), os.getloadavg()

    with scratch_database(DB_NAME):
        from streamsync.cli.nautobot_setup import setup
        from streamsync.monitor.logging import configure

        setup()
        configure(level="WARNING", fmt="console")  # diffsync's per-object INFO lines off, for every path
        if logging.getLogger("diffsync.helpers").isEnabledFor(logging.INFO):
            raise RuntimeError("diffsync still logs at INFO: the comparison would not be fair")
        from django.core.cache import cache

        cache.clear()  # Redis may hold cached rows of another database

        from bench.workload import Workload

        results = measure(plan, Workload())
    print(report(results, argv, started, time.monotonic() - clock, load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
