"""Workers that survive the real world: a crash mid-batch, broker and database restarts, a stop, scale-out.

Every test publishes a log of VLAN events with many updates and deletes per key, disturbs the
worker(s) mid-stream, waits until the consumer group has no lag (everything consumed is committed,
and a batch is committed only once it is in the database), then compares the whole VLAN group in
Nautobot (every VLAN's vid, name, status and description) with the state folded from the event log:
per key in publishing order, upserts merge their attributes, a delete removes. Every upsert's
description carries the key's sequence number, so an event applied out of order shows as a stale
description.

Services that a test stops and starts are private to it (tests/integration/conftest.py): the
stack's PostgreSQL and Kafka are shared with other runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.integration.conftest import PrivateKafka, PrivatePostgres, Stream, WorkerProcess
from tests.integration.state_helpers import publish, vlan_event

pytestmark = pytest.mark.integration

SOURCE = "ipam"
STATUSES = ("Active", "Reserved", "Deprecated")
# A SIGKILLed worker's partitions stay assigned to it until its consumer-group session expires
# (`session_timeout`, 30 s by default): the tests check what happens after a crash, not how long
# the default takes to notice, so their workers use 10 s.
FAST_FAILURE_DETECTION = {"STREAMSYNC_SESSION_TIMEOUT": "10", "STREAMSYNC_HEARTBEAT_INTERVAL": "1"}
# How long a stopped worker may take to exit: Kubernetes' default grace period before SIGKILL.
STOP_GRACE_SECONDS = 30


# ---------------------------------------------------------------- the event log and its expected state


class Vlan(NamedTuple):
    """What the tests compare of one VLAN."""

    name: str
    status: str
    description: str


def make_events(group: str, count: int, keys: int, seed: int, delete_ratio: float = 0.15) -> list[dict[str, Any]]:
    """`count` events on `keys` VLANs of `group`: creates, partial updates, deletes and re-creates.

    An upsert of a VLAN that does not exist names every attribute (a create needs a name); an
    update names its description (the key's sequence number) and, at random, a new name or status.
    """
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not secrets
    vids = list(range(100, 100 + keys))
    present: set[int] = set()
    seq: dict[int, int] = {}
    events = []
    for _ in range(count):
        vid = rng.choice(vids)
        seq[vid] = seq.get(vid, 0) + 1
        if vid in present and rng.random() < delete_ratio:
            events.append(vlan_event("delete", vid, group, SOURCE))
            present.discard(vid)
            continue
        attrs: dict[str, Any] = {"description": f"vid {vid} seq {seq[vid]}"}
        if vid not in present or rng.random() < 0.5:
            attrs["name"] = f"v{vid}-{rng.randrange(10_000)}"
        if vid not in present or rng.random() < 0.3:
            attrs["status__name"] = rng.choice(STATUSES)
        events.append(vlan_event("upsert", vid, group, SOURCE, **attrs))
        present.add(vid)
    return events


def expected_state(events: Sequence[dict[str, Any]]) -> dict[int, Vlan]:
    """Fold the log per key, in order: upserts merge (a create takes the model's defaults), a delete removes."""
    state: dict[int, dict[str, Any]] = {}
    for event in events:
        vid = event["key"]["vid"]
        if event["op"] == "delete":
            state.pop(vid, None)
        else:
            state[vid] = {**state.get(vid, {"status__name": "Active", "description": ""}), **event["attrs"]}
    return {vid: Vlan(a["name"], a["status__name"], a["description"]) for vid, a in state.items()}


def last_descriptions(events: Sequence[dict[str, Any]]) -> dict[int, str]:
    """Per key, the description of its last upsert (the highest sequence number published)."""
    return {e["key"]["vid"]: e["attrs"]["description"] for e in events if e["op"] == "upsert"}


def nautobot_state(group: str, using: str = "default") -> dict[int, Vlan]:
    """Every VLAN of `group` in Nautobot."""
    from nautobot.ipam.models import VLAN

    return {
        v.vid: Vlan(v.name, v.status.name, v.description)
        for v in VLAN.objects.using(using).filter(vlan_group__name=group).select_related("status")
    }


def assert_end_state(
    group: str, events: Sequence[dict[str, Any]], workers: Sequence[WorkerProcess], using: str = "default"
) -> None:
    """Nautobot holds exactly the folded state of `events`; otherwise fail listing every difference."""
    expected = expected_state(events)
    actual = nautobot_state(group, using)
    if actual == expected:
        return
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    wrong = {
        vid: (actual[vid], expected[vid]) for vid in sorted(set(actual) & set(expected)) if actual[vid] != expected[vid]
    }
    # A description with a lower sequence number than the last published one: events applied out of order.
    last = last_descriptions(events)
    stale = sorted(vid for vid, (got, _) in wrong.items() if got.description != last[vid])
    lines = [
        f"end state differs from the event log ({len(expected)} VLANs expected, {len(actual)} in Nautobot):",
        f"  missing VIDs: {missing}",
        f"  unexpected VIDs: {extra}",
        f"  VIDs with a stale (out-of-order) description: {stale}",
        *(f"  vid {vid}: Nautobot {got} != expected {want}" for vid, (got, want) in list(wrong.items())[:30]),
    ]
    pytest.fail("\n".join(lines) + worker_logs(workers), pytrace=False)


# ---------------------------------------------------------------- Kafka and worker observation


def lag_rows(stream: Stream) -> list[dict[str, Any]]:
    """`streamsync lag --json` for the group on the events topic, a row per partition; none if it fails."""
    result = stream.cli("lag", "--json", "--group", stream.group, timeout=60)
    if result.returncode != 0:
        return []  # e.g. the broker is still coming back: callers keep polling
    topic = f"{stream.prefix}.{SOURCE}.events"
    return [row for row in map(json.loads, result.stdout.splitlines()) if row["topic"] == topic]


def group_lag(stream: Stream) -> tuple[int, int] | None:
    """(committed offsets, lag) summed over the events topic's partitions; None before any commit."""
    rows = lag_rows(stream)
    if not rows:
        return None
    return sum(r["current_offset"] or 0 for r in rows), sum(r["lag"] for r in rows)


def wait_caught_up(stream: Stream, published: int, workers: Sequence[WorkerProcess], timeout: float) -> float:
    """Wait until the group has committed all `published` events (lag 0); returns the seconds waited.

    The `workers` must stay alive meanwhile; a timeout fails with the last lag seen and their logs.
    """
    started = time.monotonic()
    last: tuple[int, int] | None = None
    while time.monotonic() - started < timeout:
        last = group_lag(stream)
        if last == (published, 0):
            return time.monotonic() - started
        for worker in workers:
            assert_alive(worker, workers)
        time.sleep(0.5)
    pytest.fail(
        f"group {stream.group} did not catch up within {timeout:.0f}s: (committed, lag) = {last}, "
        f"{published} events published" + worker_logs(workers),
        pytrace=False,
    )


def wait(condition: Callable[[], bool], timeout: float, what: str, workers: Sequence[WorkerProcess]) -> float:
    """Poll `condition` until true while `workers` stay alive; returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        for worker in workers:
            assert_alive(worker, workers)
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}" + worker_logs(workers), pytrace=False)


def assert_alive(worker: WorkerProcess, workers: Sequence[WorkerProcess]) -> None:
    """Fail with every worker's log if `worker` has exited."""
    if worker.proc.poll() is not None:
        pytest.fail(
            f"worker pid {worker.proc.pid} exited with {worker.proc.returncode}" + worker_logs(workers),
            pytrace=False,
        )


def worker_logs(workers: Sequence[WorkerProcess], tail: int = 5000) -> str:
    """The end of each worker's output, for failure messages."""
    return "".join(
        f"\n--- worker pid {w.proc.pid} ({w.log_path.name}), last {tail} chars:\n{w.output()[-tail:]}" for w in workers
    )


def log_records(worker: WorkerProcess, event: str) -> list[dict[str, Any]]:
    """The worker's JSON log records whose event is `event` (lines that are not JSON are skipped)."""
    records = []
    for line in worker.output().splitlines():
        if f'"{event}"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            records.append(record)
    return records


def batches(worker: WorkerProcess) -> list[dict[str, Any]]:
    """The worker's "batch committed" records: batches that are in the database."""
    return log_records(worker, "batch committed")


def logged_at(record: dict[str, Any]) -> float:
    """A log record's timestamp, as time.time() would have said it."""
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def worker_args(batch_size: int, batch_timeout: float = 0.5) -> tuple[str, ...]:
    """Command-line arguments of the workers under test."""
    return ("--source", SOURCE, "--batch-size", str(batch_size), "--batch-timeout", str(batch_timeout))


def vlan_group(using: str = "default") -> str:
    """A new VLAN group of the test's own; its name."""
    from nautobot.ipam.models import VLANGroup

    name = f"resilience-{uuid.uuid4().hex[:8]}"
    VLANGroup.objects.using(using).create(name=name)
    return name


def private_database(postgres: PrivatePostgres, stream: Stream, name: str) -> tuple[Stream, str]:
    """Database `name` on the private cluster: the stream its workers use, and the test's Django alias for it."""
    copied = postgres.copy_template(name)
    report(f"template copied into the private cluster in {copied:.1f}s")
    env = {"NAUTOBOT_DB_HOST": "127.0.0.1", "NAUTOBOT_DB_PORT": str(postgres.port), "NAUTOBOT_DB_NAME": name}
    return dataclasses.replace(stream, extra_env=env), postgres.alias(name)


def report(message: str) -> None:
    """A measurement, shown with `pytest -s` (and kept in the captured output of a failure)."""
    print(f"[resilience] {message}")


# ---------------------------------------------------------------- the tests


def test_kill_9_mid_batch_then_restart_loses_nothing(
    stream: Stream, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    """SIGKILL a worker once its first batches are in, mid-way through the next; a new worker finishes the log."""
    on = dataclasses.replace(stream, extra_env=FAST_FAILURE_DETECTION)
    group = vlan_group()
    events = make_events(group, count=750, keys=120, seed=1)
    publish(on, tmp_path, *events)

    first = start_worker(*worker_args(batch_size=150), on=on)
    wait(lambda: len(batches(first)) >= 2, 180, "the first worker's first two committed batches", [first])
    time.sleep(0.4 * batches(first)[-1]["total_s"])  # well into the next batch (they take about as long)
    first.kill()
    killed_at = time.time()
    applied = sum(b["received"] for b in batches(first))
    report(f"killed after {len(batches(first))} committed batches ({applied} events)")
    assert applied < len(events), "the worker finished before it was killed: nothing was mid-batch"
    state = group_lag(on)  # None: it had not committed any offset yet
    left = len(events) if state is None else state[1]
    report(f"(committed, lag) after the kill: {state}")
    assert left > 0, f"no lag left after the kill: {state}"

    second = start_worker(*worker_args(batch_size=150), on=on)
    caught_up = wait_caught_up(on, len(events), [second], timeout=180)
    report(
        f"replacement's first batch {logged_at(batches(second)[0]) - killed_at:.1f}s after the kill; "
        f"lag 0 {time.time() - killed_at:.1f}s after the kill (poll took {caught_up:.1f}s)"
    )
    # What was not committed is applied again: at least once, never less.
    assert applied + sum(b["received"] for b in batches(second)) >= len(events)
    assert_end_state(group, events, [first, second])


def test_broker_stop_and_start_mid_stream_the_worker_reconnects(
    private_kafka: PrivateKafka, stream: Stream, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    """Stop the (private) broker while the worker consumes, start it again: the same worker process carries on."""
    on = dataclasses.replace(stream, bootstrap=private_kafka.bootstrap)
    group = vlan_group()
    events = make_events(group, count=600, keys=80, seed=2)
    before, after = events[:400], events[400:]

    worker = start_worker(*worker_args(batch_size=100), on=on)
    publish(on, tmp_path, *before)
    wait(lambda: len(batches(worker)) >= 2, 180, "the worker's first committed batches", [worker])
    stopped = private_kafka.stop()
    down_at = time.time()
    report(f"broker stopped in {stopped:.1f}s after {len(batches(worker))} committed batches")
    time.sleep(5)  # the worker notices: its connections fail and it keeps retrying them
    assert_alive(worker, [worker])
    started = private_kafka.start()
    up_at = time.time()
    report(f"broker down {up_at - down_at:.1f}s (start took {started:.1f}s)")

    publish(on, tmp_path, *after)
    published_at = time.time()
    caught_up = wait_caught_up(on, len(events), [worker], timeout=180)
    resumed = [b for b in batches(worker) if logged_at(b) > up_at]
    assert resumed, "no batch committed after the broker came back" + worker_logs([worker])
    report(
        f"worker's first batch {logged_at(resumed[0]) - up_at:.1f}s after the broker was ready "
        f"({logged_at(resumed[0]) - published_at:.1f}s after the rest was published); "
        f"lag 0 {time.time() - up_at:.1f}s after (poll took {caught_up:.1f}s)"
    )
    assert_alive(worker, [worker])
    assert_end_state(group, events, [worker])


def test_database_stop_and_start_mid_stream_the_worker_retries(
    private_postgres: PrivatePostgres, stream: Stream, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    """Stop the (private) PostgreSQL while batches keep coming: the worker retries with back-off, then carries on."""
    from django.db import connections

    on, using = private_database(private_postgres, stream, "streamsync_resilience")
    group = vlan_group(using)
    events = make_events(group, count=600, keys=80, seed=3)
    before, after = events[:300], events[300:]

    worker = start_worker(*worker_args(batch_size=100), on=on)
    pid = worker.proc.pid
    publish(on, tmp_path, *before)
    wait(lambda: len(batches(worker)) >= 2, 180, "the worker's first committed batches", [worker])
    stopped = private_postgres.stop()
    down_at = time.time()
    report(f"PostgreSQL stopped in {stopped:.1f}s after {len(batches(worker))} committed batches")
    publish(on, tmp_path, *after)  # batches arrive while the database is down
    wait(
        lambda: len(log_records(worker, "batch failed, retrying")) >= 2 and time.time() - down_at > 8,
        90,
        "two failed attempts logged, PostgreSQL down for 8 s",
        [worker],
    )
    private_postgres.start()
    up_at = time.time()
    retries = log_records(worker, "batch failed, retrying")
    report(f"PostgreSQL down {up_at - down_at:.1f}s; {len(retries)} retries logged meanwhile")

    caught_up = wait_caught_up(on, len(events), [worker], timeout=180)
    resumed = [b for b in batches(worker) if logged_at(b) > up_at]
    assert resumed, "no batch committed after PostgreSQL came back" + worker_logs([worker])
    report(
        f"worker's first batch {logged_at(resumed[0]) - up_at:.1f}s after PostgreSQL was ready; "
        f"lag 0 {time.time() - up_at:.1f}s after (poll took {caught_up:.1f}s)"
    )
    assert worker.proc.poll() is None and worker.proc.pid == pid, "the worker did not survive" + worker_logs([worker])
    assert [r["attempt"] for r in retries][:2] == [1, 2], retries  # backing off, attempt after attempt
    connections[using].close()  # the test's own connection did not survive the restart
    assert_end_state(group, events, [worker], using)


def test_scale_out_with_a_crash_keeps_per_key_order(
    stream: Stream, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    """Six partitions, three workers in one group; while events stream in, one is killed and another joins."""
    from streamsync.kafka.admin import TopicSpec, ensure_topics

    topic = f"{stream.prefix}.{SOURCE}.events"
    asyncio.run(ensure_topics(stream.bootstrap, [TopicSpec(topic, 6)]))
    group = vlan_group()
    events = make_events(group, count=1000, keys=120, seed=4)
    chunks = [events[i : i + 200] for i in range(0, len(events), 200)]
    on = dataclasses.replace(stream, extra_env=FAST_FAILURE_DETECTION)

    workers = [start_worker(*worker_args(batch_size=100), on=on) for _ in range(3)]
    publish(on, tmp_path, *chunks[0])
    wait(
        lambda: sum(bool(batches(w)) for w in workers) >= 2,
        180,
        "two of the three workers committing batches",
        workers,
    )
    publish(on, tmp_path, *chunks[1])
    victim = max(workers, key=lambda w: len(batches(w)))
    victim.kill()
    killed_at = time.time()
    report(f"killed worker pid {victim.proc.pid} after {len(batches(victim))} committed batches")
    publish(on, tmp_path, *chunks[2])
    workers.append(start_worker(*worker_args(batch_size=100), on=on))
    for chunk in chunks[3:]:
        publish(on, tmp_path, *chunk)

    survivors = [w for w in workers if w is not victim]
    caught_up = wait_caught_up(on, len(events), survivors, timeout=240)
    report(f"lag 0 {time.time() - killed_at:.1f}s after the kill (poll took {caught_up:.1f}s)")
    for worker in survivors:
        report(f"worker pid {worker.proc.pid}: {len(batches(worker))} batches")
    assert sum(bool(batches(w)) for w in survivors) >= 2, "the work was not shared" + worker_logs(workers)
    assert sorted(r["partition"] for r in lag_rows(on)) == list(range(6)), "six partitions, all committed"
    assert_end_state(group, events, workers)
    # The full comparison includes it; said once more on its own: no key ends on an older event.
    actual = nautobot_state(group)
    last = last_descriptions(events)
    assert all(v.description == last[vid] for vid, v in actual.items())


def test_worker_stopped_while_the_database_is_down_exits_and_commits_nothing_unapplied(
    private_postgres: PrivatePostgres, stream: Stream, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    """SIGTERM (a deploy, a node drain) while a batch is retrying: the worker exits, the batch stays uncommitted."""
    from django.db import connections

    on, using = private_database(private_postgres, stream, "streamsync_resilience_stop")
    on.extra_env.update(FAST_FAILURE_DETECTION)  # the first worker may have to be killed
    group = vlan_group(using)
    events = make_events(group, count=250, keys=50, seed=5)
    before, after = events[:100], events[100:]

    first = start_worker(*worker_args(batch_size=100), on=on)
    publish(on, tmp_path, *before)
    wait(lambda: sum(b["received"] for b in batches(first)) >= len(before), 180, "the first events applied", [first])
    private_postgres.stop()
    publish(on, tmp_path, *after)
    wait(lambda: len(log_records(first, "batch failed, retrying")) >= 2, 90, "two failed attempts", [first])
    signalled = time.monotonic()
    # 30 s: Kubernetes' default grace period before it sends SIGKILL (systemd waits 90 s).
    code = first.stop(timeout=STOP_GRACE_SECONDS)
    stopped_in = time.monotonic() - signalled
    committed = group_lag(on)
    report(f"SIGTERM while retrying: exit code {code} after {stopped_in:.1f}s; (committed, lag) = {committed}")
    private_postgres.start()

    second = start_worker(*worker_args(batch_size=100), on=on)
    wait_caught_up(on, len(events), [second], timeout=180)
    connections[using].close()
    assert_end_state(group, events, [first, second], using)
    assert committed == (len(before), len(after)), (
        f"offsets moved past the applied events on stop: (committed, lag) = {committed}, "
        f"{len(before)} events applied" + worker_logs([first])
    )
    assert code != -signal.SIGKILL, (
        f"the worker did not exit within {STOP_GRACE_SECONDS}s of SIGTERM while its batch was retrying: "
        "it had to be killed" + worker_logs([first])
    )
