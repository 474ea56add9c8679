"""Faults of the infrastructure under a running worker: the batch waits and is retried, nothing is dead-lettered.

Redis stopped and started again (Nautobot's `validated_save` reads custom fields through its
cache, so every save fails meanwhile), and a row held by another transaction past the worker's
`lock_timeout`. Each time the worker says it is stalled (log, metrics, the health page), the end
state is exactly what the events say, and the dead-letter topic stays empty.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import PrivateRedis, Stream, WorkerProcess, free_port, wait_for
from tests.integration.prometheus import scrape, series
from tests.integration.state_helpers import publish
from tests.integration.test_resilience import (
    SOURCE,
    assert_end_state,
    log_records,
    make_events,
    vlan_group,
    wait_caught_up,
    worker_args,
)
from tests.integration.wire_helpers import letters, produce, vlan_records

pytestmark = pytest.mark.integration

STALLED = "streamsync_agent_stalled_since_timestamp_seconds"
AGENT = f"streamsync.sync.{SOURCE}"


def stalls(port: int) -> dict[str, float]:
    """The stalled agents' causes, from the worker's /metrics: {cause: since}; none while it is not served yet."""
    try:
        found = series(scrape(port), STALLED, agent=AGENT)
    except OSError:
        return {}
    return {dict(labels)["cause"]: since for labels, since in found.items()}


def test_a_redis_outage_under_a_running_worker_dead_letters_nothing(
    private_redis: PrivateRedis, stream: Stream, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    port = free_port()
    on = dataclasses.replace(stream, extra_env={**private_redis.worker_env, "STREAMSYNC_METRICS_PORT": str(port)})
    group = vlan_group()
    events = make_events(group, count=300, keys=60, seed=11)
    before, after = events[:100], events[100:]

    worker = start_worker(*worker_args(batch_size=50, batch_timeout=0.2), on=on)
    publish(on, tmp_path, *before)
    wait_for(lambda: len(log_records(worker, "batch committed")) >= 1, 120, "a first batch", worker)
    private_redis.stop()
    down_at = time.time()
    publish(on, tmp_path, *after)  # every save needs Redis now
    wait_for(lambda: "redis" in stalls(port), 90, "the worker stalled on Redis", worker)
    wait_for(lambda: time.time() - down_at > 8, 30, "Redis down for 8 s", worker)
    assert letters(stream) == {}, "an infrastructure fault was dead-lettered"
    private_redis.start()

    wait_caught_up(on, len(events), [worker], timeout=180)
    assert_end_state(group, events, [worker])
    assert letters(stream) == {}
    assert stalls(port) == {}
    stalled = log_records(worker, "agent stalled: its batch waits for the infrastructure")
    recovered = log_records(worker, "agent recovered")
    assert [r["cause"] for r in stalled] == ["redis"] and [r["cause"] for r in recovered] == ["redis"]
    retries = series(scrape(port), "streamsync_infrastructure_retries_total", agent=AGENT, cause="redis")
    assert sum(retries.values()) >= 2


def test_a_row_held_past_the_lock_timeout_stalls_the_batch_which_then_applies(
    stream: Stream, start_worker: Callable[..., WorkerProcess], viewer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg2
    from django.conf import settings
    from django.test import Client
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    from tests.integration.test_health_page import URL, _rows

    port = free_port()
    on = dataclasses.replace(stream, extra_env={"STREAMSYNC_LOCK_TIMEOUT": "1", "STREAMSYNC_METRICS_PORT": str(port)})
    # The health page of the test's own web app reads this test's group.
    monkeypatch.setenv("STREAMSYNC_GROUP_ID", stream.group)
    monkeypatch.setenv("STREAMSYNC_TOPIC_PREFIX", stream.prefix)
    monkeypatch.setenv("STREAMSYNC_KAFKA_BOOTSTRAP", stream.bootstrap)
    group = f"lock-{uuid.uuid4().hex[:8]}"
    vlan_group_ = VLANGroup.objects.create(name=group)
    active = Status.objects.get(name="Active")
    for vid in range(1, 6):
        VLAN.objects.create(vid=vid, name=f"v{vid}", vlan_group=vlan_group_, status=active, description="before")

    db = settings.DATABASES["default"]
    holder = psycopg2.connect(
        dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"], host=db["HOST"], port=db["PORT"]
    )
    client = Client()
    client.force_login(viewer)
    try:
        with holder.cursor() as cursor:  # a user's long transaction holding VLAN 3
            cursor.execute("SELECT id FROM ipam_vlan WHERE vid = 3 AND vlan_group_id = %s FOR UPDATE", [vlan_group_.pk])
        worker = start_worker("--source", SOURCE, "--batch-timeout", "0.2", on=on)
        produce(stream.bootstrap, f"{stream.prefix}.{SOURCE}.events", vlan_records(group, range(1, 6), "after"))
        wait_for(lambda: "database" in stalls(port), 90, "the worker stalled on the held row", worker)

        def page_says_stalled() -> bool:
            rows = _rows(client.get(URL).content.decode(), "data-worker-state")
            return any(
                a["data-worker"].endswith(f":{worker.proc.pid}") and a["data-worker-state"] == "stalled"
                for a, _ in rows
            )

        wait_for(page_says_stalled, 60, "the health page showing the worker stalled", worker)
        # The batch waits whole: nothing of it is applied or dead-lettered while the row is held. (Batches
        # are what has arrived: VLANs that came in an earlier batch than VLAN 3 are applied, and logged.)
        applied = sum(r["received"] for r in log_records(worker, "batch committed"))
        descriptions = {v.vid: v.description for v in VLAN.objects.filter(vlan_group=vlan_group_)}
        assert descriptions[3] == "before"
        assert list(descriptions.values()).count("after") == applied, worker.output()[-3000:]
        assert letters(stream) == {}
    finally:
        holder.rollback()
        holder.close()

    wait_for(
        lambda: {v.description for v in VLAN.objects.filter(vlan_group=vlan_group_)} == {"after"},
        120,
        "the batch applied once the row is free",
        worker,
    )
    assert {v.vid: (v.name, v.description) for v in VLAN.objects.filter(vlan_group=vlan_group_)} == {
        vid: (f"v{vid}", "after") for vid in range(1, 6)
    }
    wait_for(lambda: stalls(port) == {}, 30, "the stall cleared", worker)
    assert letters(stream) == {}
    retried = log_records(worker, "batch failed, retrying")
    assert retried and all("LockNotAvailable" in r["error"] or "lock timeout" in r["error"] for r in retried)
