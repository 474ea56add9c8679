"""`streamsync replay`: a source's events reprocessed from an offset or a time, by moving the group's offsets."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streamsync.contract.topics import events_topic
from streamsync.kafka.admin import TopicSpec, ensure_topics
from tests.integration.conftest import Stream, wait_for
from tests.integration.state_helpers import own_source, publish, vlan_event, vlans

pytestmark = pytest.mark.integration


def _committed(stream: Stream) -> int:
    """The workers' group's committed offset on the (one-partition) events topic."""
    result = stream.cli("lag", "--json", "--group", stream.group)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return sum(r["current_offset"] or 0 for r in rows if r["topic"].endswith(".events"))


def _rename_by_hand(group: str, **names: str) -> None:
    from nautobot.ipam.models import VLAN

    for vlan in VLAN.objects.filter(vlan_group__name=group):
        vlan.name = names[f"v{vlan.vid}"]
        vlan.validated_save()


def test_replay_from_a_time_and_from_an_offset_reprocesses_exactly_those_events(
    stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    from nautobot.ipam.models import VLANGroup

    # One partition: offsets are the order the events were published in. Created here: `publish` may
    # run before the worker has created it, and would create it with its own default of three.
    stream, source = own_source(stream, tmp_path, topic_partitions=1, session_timeout=6, heartbeat_interval=1)
    asyncio.run(ensure_topics(stream.bootstrap, [TopicSpec(events_topic(source, stream.prefix), partitions=1)]))
    group = f"rp-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    worker = start_worker("--source", source, "--batch-timeout", "0.2", on=stream)

    # Offsets 0 and 1, then (after `since`) 2 and 3.
    publish(stream, tmp_path, vlan_event("upsert", 1, group, source, name="a"), source=source)
    publish(stream, tmp_path, vlan_event("upsert", 2, group, source, name="b"), source=source)
    wait_for(lambda: _committed(stream) == 2, 120, "the first two events committed", worker)
    time.sleep(1.5)
    since = datetime.now(UTC)
    time.sleep(1.5)
    publish(
        stream,
        tmp_path,
        vlan_event("upsert", 3, group, source, name="c"),
        vlan_event("upsert", 1, group, source, description="x"),
        source=source,
    )
    wait_for(lambda: _committed(stream) == 4, 60, "all four events committed", worker)
    assert vlans(group) == {1: ("a", "x"), 2: ("b", ""), 3: ("c", "")}

    # Refused while a worker runs: its next commit would overwrite the reset.
    refused = stream.cli("replay", source, "--earliest", "--yes")
    assert refused.returncode == 1
    assert f"consumer group {stream.group} has 1 active member(s)" in refused.stderr
    assert _committed(stream) == 4
    assert worker.stop() == 0

    # From a time: the two events after `since`, no more.
    _rename_by_hand(group, v1="hand1", v2="hand2", v3="hand3")
    dry = stream.cli("replay", source, "--datetime", since.isoformat(), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert [line.split()[1:] for line in dry.stdout.splitlines()[1:2]] == [["0", "4", "2", "4", "2"]]
    assert f"dry run: group {stream.group} would reprocess 2 event(s)" in dry.stdout
    assert _committed(stream) == 4
    moved = stream.cli("replay", source, "--datetime", since.isoformat(), "--yes")
    assert moved.returncode == 0, moved.stderr
    assert f"group {stream.group} will reprocess 2 event(s)" in moved.stdout
    assert _committed(stream) == 2

    worker = start_worker("--source", source, "--batch-timeout", "0.2", on=stream)
    wait_for(lambda: _committed(stream) == 4, 120, "the replayed events committed", worker)
    assert vlans(group) == {1: ("hand1", "x"), 2: ("hand2", ""), 3: ("c", "")}
    assert worker.stop() == 0

    # From an offset: events 1, 2 and 3.
    _rename_by_hand(group, v1="hand1", v2="hand2", v3="hand3")
    moved = stream.cli("replay", source, "--offset", "1", "--yes")
    assert moved.returncode == 0, moved.stderr
    assert f"group {stream.group} will reprocess 3 event(s)" in moved.stdout
    worker = start_worker("--source", source, "--batch-timeout", "0.2", on=stream)
    wait_for(lambda: _committed(stream) == 4, 120, "the replayed events committed", worker)
    assert vlans(group) == {1: ("hand1", "x"), 2: ("b", ""), 3: ("c", "")}


def test_replay_needs_exactly_one_starting_point(stream: Stream) -> None:
    none = stream.cli("replay", "ipam")
    assert none.returncode == 2
    assert "give exactly one of --offset, --datetime or --earliest" in none.stderr
    bad = stream.cli("replay", "ipam", "--datetime", "yesterday")
    assert bad.returncode == 2
    assert "'yesterday' is not an ISO 8601 time" in bad.stderr
