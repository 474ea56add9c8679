"""Events that cannot be applied go to the dead-letter topic with why, and can be re-driven."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from streamsync.envelope import canonical_key
from streamsync.kafka import produce_raw
from tests.integration.conftest import Stream, wait_for

pytestmark = pytest.mark.integration


def _envelope(vid: int, group: str, **attrs: Any) -> bytes:
    return json.dumps(
        {
            "schema": "streamsync.event/v1",
            "id": str(uuid.uuid4()),
            "source": "ipam",
            "model": "vlan",
            "op": "upsert",
            "key": {"vid": vid, "vlan_group__name": group},
            "attrs": attrs,
            "ts": "2026-11-25T17:00:00Z",
        }
    ).encode()


def _letters(stream: Stream, *flags: str) -> list[dict[str, Any]]:
    result = stream.cli("dlq", "list", "ipam", "--json", "--group", stream.group, *flags)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_bad_events_are_dead_lettered_with_reasons_and_replayed_after_the_fix(
    stream: Stream, start_worker: Any
) -> None:
    from nautobot.ipam.models import VLAN, VLANGroup

    group, later = f"dl-{uuid.uuid4().hex[:6]}", f"later-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    key = lambda vid, g=group: canonical_key("vlan", {"vid": vid, "vlan_group__name": g}).encode()  # noqa: E731
    sent = [
        (key(1), _envelope(1, group, name="first")),
        (b"garbage", b"{this is not json"),
        (
            canonical_key("vlan-nope", {"vid": 2, "vlan_group__name": group}).encode(),
            _envelope(2, group, name="x").replace(b'"vlan"', b'"vlan-nope"', 1),
        ),
        (key(3, later), _envelope(3, later, name="waits-for-its-group")),
        (key(5000), _envelope(5000, group, name="out-of-range")),
        (key(4), _envelope(4, group, name="last")),
    ]
    # One attempt: a missing dependency is dead-lettered at once (retries are tested on their own).
    worker = start_worker("--source", "ipam", "--batch-timeout", "0.2", "--retry-max-attempts", "1")
    asyncio.run(produce_raw(stream.bootstrap, f"{stream.prefix}.ipam.events", sent))

    # The bad events do not stop the partition: the good ones around them are applied.
    wait_for(
        lambda: set(VLAN.objects.filter(vlan_group__name=group).values_list("vid", flat=True)) == {1, 4},
        120,
        "the good VLANs",
        worker,
    )
    wait_for(lambda: len(_letters(stream)) == 4, 60, "four dead letters", worker)
    letters = {letter["value"]: letter for letter in _letters(stream)}
    by_sent = {value.decode(): letter for value in (v for _, v in sent) if (letter := letters.get(value.decode()))}
    assert [by_sent[v.decode()]["code"] for _, v in sent[1:5]] == [
        "not_json",
        "unknown_model",
        "dependency_missing",
        "apply_failed",
    ]
    for k, v in sent[1:5]:
        letter = by_sent[v.decode()]
        assert letter["key"] == k.decode()  # original key and bytes, unchanged
        assert letter["reason"]
        assert letter["source"] == "ipam"
        assert letter["original_topic"] == f"{stream.prefix}.ipam.events"
        assert letter["original_offset"] >= 0
    assert "later-" in by_sent[sent[3][1].decode()]["reason"]

    # Dry run sends nothing; then the user creates the missing group and replays.
    dry = stream.cli("dlq", "replay", "ipam", "--dry-run", "--group", stream.group)
    assert dry.returncode == 0 and "would replay 4 dead letter(s)" in dry.stdout, dry.stderr
    refused = stream.cli("dlq", "replay", "ipam", "--group", stream.group)  # no terminal to confirm on
    assert refused.returncode != 0 and len(_letters(stream)) == 4
    VLANGroup.objects.create(name=later)
    replayed = stream.cli("dlq", "replay", "ipam", "--yes", "--group", stream.group)
    assert replayed.returncode == 0 and "replayed 4 dead letter(s)" in replayed.stdout, replayed.stderr

    wait_for(lambda: VLAN.objects.filter(vlan_group__name=later, vid=3).exists(), 120, "the replayed VLAN", worker)
    # The three that still cannot be applied are dead letters again; the replayed ones are marked so.
    wait_for(lambda: len(_letters(stream)) == 3, 60, "three new dead letters", worker)
    assert sorted(letter["code"] for letter in _letters(stream)) == ["apply_failed", "not_json", "unknown_model"]
    assert sum(letter["replayed"] for letter in _letters(stream, "--all")) == 4
