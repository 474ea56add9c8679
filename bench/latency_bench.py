"""End-to-end latency and burst throughput as a user sees them: produce → row visible in PostgreSQL.

    python -m bench.latency_bench [--events 200] [--rate 5] [--burst 5000] [--workers 1 [3 ...]]

A real `streamsync worker` process (default settings: batch size 100, batch timeout 1 s) runs on a
fresh clone of the migrated template (`streamsync_latency_bench`, dropped at the end) and the
real broker of the local stack. A producer publishes VLAN creates to `<prefix>.ipam.events`; a
watcher polls PostgreSQL (plain SQL, every 5 ms) and notes when each VLAN becomes visible:

- steady: one event at a time, `--rate` per second, evenly spaced;
- Poisson: `--events` arrivals at random, exponentially distributed gaps with the same mean rate;
- burst: `--burst` creates published at once; events/s from the first send to the last row visible.

The baseline of the same run is the broker itself: the same producer and arrivals read back by a
plain consumer (produce → consumed), and the worker's own apply time per batch (its
`streamsync_apply_duration_seconds`). Latency is what a user waits; latency minus apply is what the
pipeline adds. With `--workers 1 3` the burst runs once per count, on 6 partitions, each count's
workers joined and warm (every partition applied once) before it starts, and the throughput of
each count is reported over the first's, from the same run.
This is a benchmark, not a test: the table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import progress, scratch_database

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "streamsync_latency_bench"
SOURCE = "ipam"
POLL_SECONDS = 0.005
TARGET_P50_MS, TARGET_P99_MS = 100.0, 300.0


def _event(vid: int, group: str) -> Any:
    from streamsync.contract.envelope import Event, Op

    return Event(
        id=str(uuid.uuid4()),
        source=SOURCE,
        model="vlan",
        op=Op.UPSERT,
        key={"vid": vid, "vlan_group__name": group},
        attrs={"name": f"v{vid}", "status__name": "Active"},
        ts=datetime.now(UTC),
    )


class Watcher:
    """When each VLAN of some groups became visible, by (group, vid), polled with plain SQL."""

    def __init__(self, dsn: dict[str, Any]) -> None:
        import psycopg2

        self._conn = psycopg2.connect(**dsn)
        self._conn.autocommit = True
        self.seen: dict[tuple[str, int], float] = {}
        self._groups: dict[str, str] = {}  # pk -> name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, group: str) -> None:
        with self._conn.cursor() as cur:
            cur.execute("SELECT id FROM ipam_vlangroup WHERE name = %s", [group])
            self._groups[str(cur.fetchone()[0])] = group

    def _run(self) -> None:
        with self._conn.cursor() as cur:
            while not self._stop.is_set():
                groups = list(self._groups)
                if groups:
                    cur.execute(
                        "SELECT vlan_group_id::text, vid FROM ipam_vlan WHERE vlan_group_id::text = ANY(%s)", [groups]
                    )
                    now = time.monotonic()
                    for group_id, vid in cur.fetchall():
                        self.seen.setdefault((self._groups[group_id], vid), now)
                time.sleep(POLL_SECONDS)

    def wait(self, keys: Sequence[tuple[str, int]], timeout: float, worker: Worker | None) -> None:
        deadline = time.monotonic() + timeout
        while not all(k in self.seen for k in keys):
            if time.monotonic() > deadline:
                missing = sum(k not in self.seen for k in keys)
                raise RuntimeError(f"{missing} of {len(keys)} VLANs not visible after {timeout} s")
            if worker is not None:
                worker.check()
            time.sleep(0.05)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()


class Worker:
    """A `streamsync worker` process on the bench's prefix, group and database, with a /metrics port."""

    def __init__(self, env: dict[str, str], log: Path, metrics_port: int) -> None:
        self.metrics_port = metrics_port
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [shutil.which("streamsync") or "streamsync", "worker", "--source", SOURCE],
            env={**env, "STREAMSYNC_METRICS_PORT": str(metrics_port)},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")

    def apply_seconds(self) -> tuple[float, float]:
        """(sum, count) of the worker's streamsync_apply_duration_seconds."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        values = {}
        for name in ("sum", "count"):
            found = re.search(rf'^streamsync_apply_duration_seconds_{name}\{{source="{SOURCE}"\}} (\S+)$', text, re.M)
            values[name] = float(found.group(1)) if found else 0.0
        return values["sum"], values["count"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


@dataclass
class Row:
    label: str
    latencies_ms: list[float]
    apply_ms: float | None = None  # mean apply time per batch in the worker
    per_s: float | None = None

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _gaps(kind: str, n: int, rate: float, rng: random.Random) -> list[float]:
    return [1 / rate] * n if kind == "steady" else [rng.expovariate(rate) for _ in range(n)]


async def _produce_paced(bootstrap: str, topic: str, events: Sequence[Any], gaps: Sequence[float]) -> list[float]:
    """Send events one at a time after the given gaps; the monotonic time of each send."""
    from streamsync.kafka.clients import producer

    sent: list[float] = []
    async with producer(bootstrap) as client:
        for event, gap in zip(events, gaps, strict=True):
            await asyncio.sleep(gap)
            sent.append(time.monotonic())
            await client.send_and_wait(topic, event.to_bytes(), key=event.canonical_key.encode())
    return sent


async def _broker_floor(bootstrap: str, topic: str, gaps: Sequence[float]) -> list[float]:
    """Produce → consumed by a plain consumer, for the same arrivals: what the broker alone costs."""
    from streamsync.kafka.clients import consumer, producer

    latencies: list[float] = []
    async with consumer(bootstrap) as reader, producer(bootstrap) as writer:
        from aiokafka import TopicPartition

        partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or {0}]
        reader.assign(partitions)
        await reader.seek_to_end(*partitions)
        for gap in gaps:
            await asyncio.sleep(gap)
            started = time.monotonic()
            await writer.send_and_wait(topic, b"ping", key=b"floor")
            while not await reader.getmany(timeout_ms=1000):
                pass
            latencies.append((time.monotonic() - started) * 1000)
    return latencies


async def _produce_burst(bootstrap: str, topic: str, events: Sequence[Any]) -> float:
    from streamsync.kafka.clients import produce

    started = time.monotonic()
    await produce(bootstrap, topic, events)
    return started


def _groups(prefix: str, count: int) -> list[str]:
    from nautobot.ipam.models import VLANGroup

    names = [f"{prefix}-{i}" for i in range(count)]
    for name in names:
        VLANGroup.objects.create(name=name)
    return names


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(args: argparse.Namespace, bootstrap: str, env: dict[str, str], logs: Path) -> list[Row]:
    from django.conf import settings as django_settings

    from streamsync.contract.topics import events_topic
    from streamsync.kafka.admin import TopicSpec, ensure_topics

    db = django_settings.DATABASES["default"]
    dsn = {"host": db["HOST"], "port": db["PORT"], "user": db["USER"], "password": db["PASSWORD"], "dbname": db["NAME"]}
    prefix = env["STREAMSYNC_TOPIC_PREFIX"]
    topic = events_topic(SOURCE, prefix)
    counts: list[int] = args.workers
    partitions = 6 if max(counts) > 1 else 3
    asyncio.run(ensure_topics(bootstrap, [TopicSpec(topic, partitions), TopicSpec(f"{prefix}.floor", 1)]))
    rng = random.Random(args.seed)
    rows: list[Row] = []

    def start(count: int) -> list[Worker]:
        return [Worker(env, logs / f"worker{count}-{i}.log", _free_port()) for i in range(count)]

    workers = start(counts[0])
    try:
        with Watcher(dsn) as watcher:
            # Warm-up: the worker is up, has its partitions and has applied once.
            (warm,) = _groups(f"{prefix}-warm", 1)
            watcher.watch(warm)
            asyncio.run(_produce_paced(bootstrap, topic, [_event(1, warm)], [0]))
            progress("waiting for the worker to start and apply a first event")
            watcher.wait([(warm, 1)], 300, workers[0])

            for kind in ("steady", "poisson"):
                (group,) = _groups(f"{prefix}-{kind}", 1)
                watcher.watch(group)
                gaps = _gaps(kind, args.events, args.rate, rng)
                progress(f"{kind}: {args.events} events at {args.rate}/s")
                floor = asyncio.run(_broker_floor(bootstrap, f"{prefix}.floor", gaps))
                rows.append(Row(f"broker floor, {kind} (produce → consumed)", floor))
                before = workers[0].apply_seconds()
                events = [_event(vid, group) for vid in range(1, args.events + 1)]
                sent = asyncio.run(_produce_paced(bootstrap, topic, events, gaps))
                keys = [(group, vid) for vid in range(1, args.events + 1)]
                watcher.wait(keys, 120, workers[0])
                after = workers[0].apply_seconds()
                batches = after[1] - before[1]
                apply_ms = (after[0] - before[0]) / batches * 1000 if batches else None
                latencies = [(watcher.seen[k] - t) * 1000 for k, t in zip(keys, sent, strict=True)]
                rows.append(Row(f"worker, {kind} (produce → visible)", latencies, apply_ms=apply_ms))

            for count in counts:
                if len(workers) != count:
                    for worker in workers:
                        worker.stop()
                    workers = start(count)
                _settle_group(bootstrap, env["STREAMSYNC_GROUP_ID"], count, topic, partitions, watcher, workers)
                per_group = 4000
                groups = _groups(f"{prefix}-burst{count}", -(-args.burst // per_group))
                for group in groups:
                    watcher.watch(group)
                keys = [(groups[i // per_group], i % per_group + 1) for i in range(args.burst)]
                events = [_event(vid, group) for group, vid in keys]
                progress(f"burst: {args.burst} creates through {count} worker(s) on {partitions} partitions")
                started = asyncio.run(_produce_burst(bootstrap, topic, events))
                watcher.wait(keys, 3600, workers[0])
                seconds = max(watcher.seen[k] for k in keys) - started
                rows.append(
                    Row(
                        f"burst of {args.burst:,} creates, {count} worker(s)",
                        [(watcher.seen[k] - started) * 1000 for k in keys],
                        per_s=args.burst / seconds,
                    )
                )
    finally:
        for worker in workers:
            worker.stop()
    return rows


def _settle_group(
    bootstrap: str, group_id: str, count: int, topic: str, partitions: int, watcher: Watcher, workers: list[Worker]
) -> None:
    """Wait until `count` workers are members of the group and each partition's owner has applied an event.

    Then no rebalance is pending when the burst starts: what it measures is applying, not joining.
    """
    from streamsync.contract.partitioning import partition_for
    from streamsync.ops.offsets import active_members

    progress(f"waiting for {count} worker(s) to join the group")
    deadline = time.monotonic() + 300
    while len(asyncio.run(active_members(bootstrap, group_id))) != count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} workers did not join {group_id} within 300 s")
        for worker in workers:
            worker.check()
        time.sleep(1)
    (group,) = _groups(f"warm{count}-{uuid.uuid4().hex[:6]}", 1)
    watcher.watch(group)
    chosen: dict[int, Any] = {}
    vid = 0
    while len(chosen) < partitions:  # one event on each partition, by the producer's own partitioner
        vid += 1
        event = _event(vid, group)
        chosen.setdefault(partition_for(event.canonical_key.encode(), partitions), event)
    asyncio.run(_produce_burst(bootstrap, topic, list(chosen.values())))
    watcher.wait([(group, event.key["vid"]) for event in chosen.values()], 300, workers[0])


def ratios(rows: Sequence[Row]) -> list[str]:
    """Burst throughput of each worker count over the first count's, all from this run."""
    bursts = [row for row in rows if row.label.startswith("burst") and row.per_s]
    if len(bursts) < 2:
        return []
    base = bursts[0]
    return [
        f"burst throughput, {row.label.split(', ')[1]} / {base.label.split(', ')[1]}: "
        f"{row.per_s:.1f}/s / {base.per_s:.1f}/s = {row.per_s / base.per_s:.2f}x"  # type: ignore[operator]
        for row in bursts[1:]
    ]


def table(rows: Sequence[Row]) -> list[str]:
    cells = ("events", "p50 ms", "p90 ms", "p99 ms", "apply ms", "events/s")
    head = f"{'row':<46} | {cells[0]:>6} | " + " | ".join(f"{c:>8}" for c in cells[1:])
    lines = [head, "-" * len(head)]
    for row in rows:
        apply_ms = f"{row.apply_ms:8.1f}" if row.apply_ms is not None else " " * 8
        per_s = f"{row.per_s:8.1f}" if row.per_s is not None else " " * 8
        lines.append(
            f"{row.label:<46} | {len(row.latencies_ms):>6} | {row.pct(0.5):8.1f} | {row.pct(0.9):8.1f} | "
            f"{row.pct(0.99):8.1f} | {apply_ms} | {per_s}"
        )
    return lines


def verdicts(rows: Sequence[Row]) -> list[str]:
    lines = []
    for row in rows:
        if row.label.startswith("worker"):
            ok = row.pct(0.5) <= TARGET_P50_MS and row.pct(0.99) <= TARGET_P99_MS
            lines.append(
                f"{row.label}: p50 {row.pct(0.5):.0f} ms (target ≤ {TARGET_P50_MS:.0f}), p99 {row.pct(0.99):.0f} ms "
                f"(target ≤ {TARGET_P99_MS:.0f}): {'met' if ok else 'NOT met'}; "
                f"p50 over the worker's mean apply time: {row.pct(0.5) / row.apply_ms:.2f}x"
                if row.apply_ms
                else ""
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.latency_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200, help="events per light-load phase")
    parser.add_argument("--rate", type=float, default=5.0, help="mean arrivals per second at light load")
    parser.add_argument("--burst", type=int, default=5000, help="creates published at once")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="workers in the group for the burst, one burst per count (e.g. 1 3); 6 partitions when any is above 1",
    )
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--logs", type=Path, help="keep the workers' output in this directory (default: discarded)")
    args = parser.parse_args(argv)

    os.environ.setdefault("NAUTOBOT_CONFIG", str(ROOT / "deploy" / "nautobot_config.py"))
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    started, clock, load = datetime.now(UTC), time.monotonic(), os.getloadavg()

    with scratch_database(DB_NAME):
        from streamsync.cli.nautobot_setup import setup

        setup()
        from django.core.cache import cache

        cache.clear()  # Redis may hold cached rows of another database
        from streamsync.settings import StreamsyncSettings

        bootstrap = StreamsyncSettings.load().kafka_bootstrap
        tag = uuid.uuid4().hex[:6]
        env = {
            **os.environ,
            "STREAMSYNC_TOPIC_PREFIX": f"lat{tag}",
            "STREAMSYNC_GROUP_ID": f"streamsync-lat{tag}",
        }
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            rows = measure(args, bootstrap, env, args.logs)
        else:
            with tempfile.TemporaryDirectory(prefix="latency-bench-") as logs:
                rows = measure(args, bootstrap, env, Path(logs))
    print(f"streamsync latency benchmark, {started:%Y-%m-%d %H:%M} UTC: python -m bench.latency_bench {' '.join(argv)}")
    print(f"{os.cpu_count()} CPU(s); load average at start {load[0]:.2f}; wall {time.monotonic() - clock:.0f} s")
    print()
    print("\n".join(table(rows)))
    print()
    print("\n".join(line for line in [*verdicts(rows), *ratios(rows)] if line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
