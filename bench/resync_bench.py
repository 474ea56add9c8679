"""Full resync from the state topic against nautobot-ssot's full sync of the same data: one table.

    python -m bench.resync_bench [--n 10000] [--updates 100] [--creates 100] [--runs 3]

Both sides start from the same N VLANs in Nautobot, owned by the source, and the same remote
picture: every VLAN as Nautobot has it, `updates` of them with a new description and `creates` new
ones. streamsync's resync reads that picture from a real state topic (Kafka) and diffs it against
Nautobot (`streamsync.ops.resync.read/plan/apply`); the contrib full sync gets it as plain records
already in memory, the cheapest remote load there is, and diffs two whole adapters
(`bench.workload.Workload.full_sync`). Runs are interleaved so that both see the same machine load;
what a run created is removed again (untimed) so that N stays put. Peak memory is tracemalloc's, in
one extra untimed call of each (tracing slows Python down). Targets (issue): resync time at most
1.0x the full sync's, and no more peak memory.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import progress, scratch_database

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "streamsync_resync_bench"


class ResyncWork:
    """The resync side: a state topic holding the remote picture, and timed resyncs of it."""

    def __init__(self, work: Any, bootstrap: str) -> None:
        from streamsync.models.ipam import VLANModel
        from streamsync.sync.engine import SyncEngine
        from streamsync.sync.permissions import set_up_writer
        from streamsync.sync.registry import ModelRegistry

        self.work = work
        self.bootstrap = bootstrap
        self.prefix = f"bench{uuid.uuid4().hex[:6]}"
        self.registry = ModelRegistry([VLANModel])
        self.engine = SyncEngine(self.registry, set_up_writer("streamsync", self.registry))
        self.source = "ipam"

    def _produce(self, records: Sequence[tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
        """(identifiers, attributes or None for a tombstone) to the state topic, as state records."""
        from streamsync.contract.envelope import Event, Op
        from streamsync.contract.topics import state_topic
        from streamsync.kafka.admin import TopicSpec, ensure_topics
        from streamsync.kafka.clients import produce_raw

        topic = state_topic(self.source, self.prefix)
        raw: list[tuple[bytes | None, bytes | None]] = []
        for ids, attrs in records:
            event = Event(source=self.source, model="vlan", op=Op.UPSERT, key=ids, attrs=attrs or {})
            raw.append((event.canonical_key.encode(), event.to_bytes() if attrs is not None else None))

        async def produce() -> None:
            await ensure_topics(self.bootstrap, [TopicSpec(topic, compacted=True)])
            await produce_raw(self.bootstrap, topic, raw)

        asyncio.run(produce())

    def seed(self) -> None:
        """The source owns every VLAN, and its state topic holds each as Nautobot has it (untimed)."""
        from nautobot.ipam.models import VLAN

        from streamsync.contract.envelope import canonical_key
        from streamsync.models.ipam import VLANModel
        from streamsync.sync import ownership

        rows = list(VLAN.objects.values_list("pk", "vid", "vlan_group__name"))
        ownership.claim(
            self.source,
            ((VLANModel, canonical_key("vlan", {"vid": vid, "vlan_group__name": g}), pk) for pk, vid, g in rows),
        )
        self._produce([_split(record) for record in self.work.remote_records(0, 0)])

    def drift(self, updates: int, creates: int) -> list[dict[str, Any]]:
        """Put the run's changes on the state topic (untimed); returns the created keys' identifiers."""
        updated = [
            ({"vid": vid, "vlan_group__name": group}, {"description": f"bench update {self.work._serial_no()}"})
            for vid, group in self.work.update_keys(updates)
        ]
        created = [
            (
                {"vid": vid, "vlan_group__name": group},
                {"name": f"new-{group}-{vid}", "status__name": "Active", "description": "bench create"},
            )
            for vid, group in self.work.new_keys(creates)
        ]
        # An update record carries the full state, as the worker writes it: merge onto Nautobot's.
        current = {(r["vid"], r["vlan_group__name"]): r for r in self.work.remote_records(0, 0)}
        full = [(ids, {**_split(current[(ids["vid"], ids["vlan_group__name"])])[1], **attrs}) for ids, attrs in updated]
        self._produce(full + created)
        return [ids for ids, _ in created]

    def refresh(self, keys: list[tuple[int, str]]) -> None:
        """State records for VLANs changed behind the topic's back (by a contrib run), as Nautobot has them now."""
        wanted = set(keys)
        self._produce(
            [_split(r) for r in self.work.remote_records(0, 0) if (r["vid"], r["vlan_group__name"]) in wanted]
        )

    def forget(self, created: list[dict[str, Any]]) -> None:
        """Tombstones for what a run created, after the VLANs are removed again (untimed)."""
        self._produce([(ids, None) for ids in created])

    def resync(self, updates: int, creates: int) -> float:
        """One resync: read the state topic to its end, plan, apply; seconds taken."""
        from streamsync.ops import resync

        started = time.perf_counter()
        state = resync.read(self.bootstrap, self.source, self.prefix)
        plan = resync.plan(self.source, self.registry, state)
        result = resync.apply(plan, self.engine)
        seconds = time.perf_counter() - started
        got = (result.count("updated"), result.count("created"), result.count("deleted"), len(result.failed))
        if got != (updates, creates, 0, 0):
            raise RuntimeError(f"resync did (updated, created, deleted, failed) = {got}, expected {updates, creates}")
        return seconds


def _split(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    ids = {"vid": record["vid"], "vlan_group__name": record["vlan_group__name"]}
    return ids, {k: v for k, v in record.items() if k not in ids}


def _peak(call: Callable[[], Any]) -> float:
    """tracemalloc's peak (MiB) of what `call` allocates."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        call()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def measure(n: int, updates: int, creates: int, runs: int, bootstrap: str) -> list[tuple[str, list[float], float]]:
    """Interleaved timed runs of each path, then one traced run each: (row, seconds per run, peak MiB)."""
    from bench.workload import Workload

    work = Workload()
    progress(f"seeding {n:,} VLANs")
    work.seed_to(n)
    side = ResyncWork(work, bootstrap)
    progress(f"state topic {side.prefix}: {n:,} records")
    side.seed()

    def resync_run() -> float:
        created = side.drift(updates, creates)
        try:
            return side.resync(updates, creates)
        finally:
            work.remove_created()
            side.forget(created)

    def contrib_run(tuned: bool) -> Callable[[], float]:
        def run() -> float:
            cursor = work._cursor
            try:
                return work.full_sync(updates, creates, tuned=tuned).total
            finally:
                work.remove_created()
                # What it updated is now Nautobot's, not the state topic's: tell the topic (untimed).
                after, work._cursor = work._cursor, cursor
                side.refresh(work.update_keys(updates))
                work._cursor = after

        return run

    paths: list[tuple[str, Callable[[], float]]] = [
        ("streamsync resync (state topic)", resync_run),
        ("contrib full sync", contrib_run(False)),
        ("contrib full sync, tags prefetched", contrib_run(True)),
    ]
    seconds: dict[str, list[float]] = {name: [] for name, _ in paths}
    resync_run()  # warm-up: the first read of a topic and the first query plans cost extra
    for i in range(runs):
        for name, run in paths:
            progress(f"run {i + 1}/{runs}: {name}")
            seconds[name].append(run())
    peaks = {}
    for name, run in paths:
        progress(f"traced run: {name}")
        peaks[name] = _peak(run)
    return [(name, seconds[name], peaks[name]) for name, _ in paths]


def report(rows: list[tuple[str, list[float], float]], args: argparse.Namespace, load: tuple[float, ...]) -> str:
    """The table, and the ratios against the targets."""
    resync_s = statistics.median(rows[0][1])
    resync_mib = rows[0][2]
    header = (
        f"{'row':<36} | {'N':>7} | {'changes':>7} | {'runs':>4} | {'s p50':>7} | {'peak MiB':>8} | "
        f"{'resync/this time':>16} | {'resync/this mem':>15}"
    )
    lines = [
        f"streamsync resync benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: python -m bench.resync_bench "
        f"--n {args.n} --updates {args.updates} --creates {args.creates} --runs {args.runs}",
        f"{os.cpu_count()} CPU(s); load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f}",
        "",
        header,
        "-" * len(header),
    ]
    for name, runs, peak in rows:
        p50 = statistics.median(runs)
        lines.append(
            f"{name:<36} | {args.n:>7,} | {args.updates + args.creates:>7} | {len(runs):>4} | {p50:>7.2f} | "
            f"{peak:>8.1f} | {resync_s / p50:>15.2f}x | {resync_mib / peak:>14.2f}x"
        )
    verdict = rows[1]
    time_ratio, mem_ratio = resync_s / statistics.median(verdict[1]), resync_mib / verdict[2]
    lines += [
        "",
        f"Target (against the contrib full sync as shipped): time <= 1.0x: {time_ratio:.2f}x "
        f"{'PASS' if time_ratio <= 1.0 else 'MISS'}; peak memory <= 1.0x: {mem_ratio:.2f}x "
        f"{'PASS' if mem_ratio <= 1.0 else 'MISS'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.resync_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="VLANs in Nautobot and in the state topic")
    parser.add_argument("--updates", type=int, default=100, help="VLANs the remote picture changes")
    parser.add_argument("--creates", type=int, default=100, help="VLANs the remote picture adds")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each path")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    bootstrap = os.getenv("STREAMSYNC_KAFKA_BOOTSTRAP", f"127.0.0.1:{os.getenv('STREAMSYNC_KAFKA_PORT', '9092')}")

    os.environ.setdefault("NAUTOBOT_CONFIG", str(ROOT / "deploy" / "nautobot_config.py"))
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    load = os.getloadavg()

    with scratch_database(DB_NAME):
        from streamsync.cli.nautobot_setup import setup
        from streamsync.monitor.logging import configure

        setup()
        configure(level="WARNING", fmt="console")  # diffsync's per-object INFO lines off, for every path
        from django.core.cache import cache

        cache.clear()  # Redis may hold cached rows of another database
        rows = measure(args.n, args.updates, args.creates, args.runs, bootstrap)
    print(report(rows, args, load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
