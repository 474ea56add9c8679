"""A running worker's /metrics endpoint, scraped and parsed: event counters, dead letters, lag gauges."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streamsync.contract.envelope import Event, Op, canonical_key
from streamsync.kafka.admin import TopicSpec, ensure_topics
from streamsync.kafka.clients import produce_raw
from tests.integration.conftest import Stream, free_port, wait_for, write_nautobot_config
from tests.integration.prometheus import reachable, scrape, series, value

pytestmark = pytest.mark.integration


def _event(group: str, vid: int, op: Op = Op.UPSERT, **attrs: Any) -> tuple[bytes, bytes]:
    event = Event(source="ipam", model="vlan", op=op, key={"vid": vid, "vlan_group__name": group}, attrs=attrs)
    return event.canonical_key.encode(), event.to_bytes()


def _vlans(group: str) -> dict[int, str]:
    from nautobot.ipam.models import VLAN

    return dict(VLAN.objects.filter(vlan_group__name=group).values_list("vid", "name"))


def test_metrics_count_events_by_outcome_dead_letters_and_lag(
    stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    from nautobot.ipam.models import VLANGroup

    group = f"m-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    # A second source that no worker consumes: its events are lag the gauge must show.
    config = write_nautobot_config(
        tmp_path / "nautobot_config.py",
        metrics_interval=1.0,
        sources={"ipam": {"models": ["vlan"]}, "cmdb": {"models": ["vlan"]}},
    )
    on = replace(stream, extra_env={"NAUTOBOT_CONFIG": str(config)})
    port = free_port()
    started = time.time()
    worker = start_worker(
        "--source",
        "ipam",
        "--batch-timeout",
        "0.2",
        "--metrics-port",
        str(port),
        "--metrics-address",
        "127.0.0.1",
        on=on,
    )
    wait_for(lambda: reachable(port), 120, f"the metrics endpoint on port {port}", worker)

    ipam = f"{stream.prefix}.ipam.events"
    unknown_model = json.loads(_event(group, 9, name="x")[1])
    unknown_model["model"] = "vlan-nope"
    asyncio.run(
        produce_raw(
            stream.bootstrap,
            ipam,
            [
                _event(group, 1, name="one"),
                _event(group, 2, name="two"),
                _event(group, 3, name="three"),
                (b"garbage", b"{not json"),
                (
                    canonical_key("vlan-nope", unknown_model["key"]).encode(),
                    json.dumps(unknown_model).encode(),
                ),
            ],
        )
    )
    wait_for(lambda: _vlans(group) == {1: "one", 2: "two", 3: "three"}, 120, "three VLANs created", worker)
    # Once the first three are in: an update, a delete, and an upsert that changes nothing.
    asyncio.run(
        produce_raw(
            stream.bootstrap,
            ipam,
            [_event(group, 1, name="uno"), _event(group, 2, Op.DELETE), _event(group, 3, name="three")],
        )
    )
    wait_for(lambda: _vlans(group) == {1: "uno", 3: "three"}, 120, "the update and the delete", worker)

    expected = {
        ("vlan", "upsert", "created"): 3,
        ("vlan", "upsert", "updated"): 1,
        ("vlan", "delete", "deleted"): 1,
        ("vlan", "upsert", "unchanged"): 1,
        ("unknown", "unknown", "rejected"): 1,  # not an envelope at all
        ("unknown", "upsert", "rejected"): 1,  # a model the source may not write: not a label value of its own
    }

    def counted() -> dict[tuple[str, str, str], float]:
        found = series(scrape(port), "streamsync_events_total", source="ipam")
        return {(k["model"], k["op"], k["outcome"]): v for k, v in ((dict(key), v) for key, v in found.items()) if v}

    wait_for(lambda: counted() == expected, 30, f"event counters {expected}", worker)
    samples = scrape(port)
    assert series(samples, "streamsync_dead_letters_total", source="ipam") == {
        frozenset({"source": "ipam", "code": "not_json"}.items()): 1.0,
        frozenset({"source": "ipam", "code": "unknown_model"}.items()): 1.0,
    }
    batches = value(samples, "streamsync_batch_size_events_count", source="ipam")
    assert batches >= 2
    assert value(samples, "streamsync_batch_size_events_sum", source="ipam") == 8  # every message, once
    assert value(samples, "streamsync_apply_duration_seconds_count", source="ipam") == batches
    assert 0 < value(samples, "streamsync_apply_duration_seconds_sum", source="ipam") < time.time() - started
    # The six applied events, each from its envelope ts (set when it was built, above) to its commit.
    assert value(samples, "streamsync_end_to_end_latency_seconds_count", source="ipam") == 6
    assert 0 < value(samples, "streamsync_end_to_end_latency_seconds_sum", source="ipam") < 6 * (time.time() - started)
    assert started <= value(samples, "streamsync_last_batch_timestamp_seconds", source="ipam") <= time.time()
    assert value(samples, "streamsync_worker_info", group=stream.group) == 1

    # Caught up: every partition of ipam's topic at lag 0 (the gauge is refreshed every second here).
    def ipam_lag() -> dict[str, float]:
        found = series(scrape(port), "streamsync_consumergroup_lag", group=stream.group, topic=ipam)
        return {dict(key)["partition"]: value for key, value in found.items()}

    wait_for(lambda: ipam_lag() == {"0": 0, "1": 0, "2": 0}, 30, "ipam's lag at 0", worker)
    assert set(series(scrape(port), "streamsync_consumergroup_lag_seconds", topic=ipam).values()) == {0.0}

    # Five events for the source nobody consumes: lag 5 in total, and an oldest age that grows with time.
    cmdb = f"{stream.prefix}.cmdb.events"
    asyncio.run(ensure_topics(stream.bootstrap, [TopicSpec(cmdb, 3)]))
    before = time.time()
    asyncio.run(produce_raw(stream.bootstrap, cmdb, [(f"k{i}".encode(), b"{}") for i in range(5)]))

    def cmdb_lag() -> tuple[float, list[float]]:
        samples = scrape(port)
        lag = series(samples, "streamsync_consumergroup_lag", group=stream.group, topic=cmdb)
        ages = series(samples, "streamsync_consumergroup_lag_seconds", group=stream.group, topic=cmdb)
        return sum(lag.values()), [ages[key] for key, value in lag.items() if value > 0 and key in ages]

    wait_for(lambda: cmdb_lag()[0] == 5, 30, "cmdb's lag of 5", worker)
    wait_for(lambda: min(cmdb_lag()[1], default=0) >= 2.0, 30, "cmdb's oldest age past 2 s", worker)
    total, ages = cmdb_lag()
    assert total == 5 and ages and max(ages) <= time.time() - before + 0.01, ages
    assert value(scrape(port), "streamsync_parked_events", source="ipam") == 0


def test_worker_refuses_to_start_when_its_metrics_port_is_taken(stream: Stream) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = stream.cli("worker", "--source", "ipam", "--metrics-port", str(port), "--metrics-address", "127.0.0.1")
    assert result.returncode != 0
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert "0 turns the endpoint off" in result.stderr
