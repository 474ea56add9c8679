"""Events that cannot be applied go to the dead-letter topic with why, and can be re-driven."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from streamsync.contract.envelope import canonical_key
from streamsync.kafka.clients import produce_raw
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


def _settled_everywhere(stream: Stream, topic: str) -> bool:
    """True once the stored position of every partition of `topic` holding records is at its end."""
    from streamsync.kafka.admin import partitions
    from streamsync.kafka.clients import admin_client, consumer
    from streamsync.models.bookkeeping import Position
    from streamsync.sync.positions import sync_agent

    async def ends() -> dict[int, int]:
        async with admin_client(stream.bootstrap) as admin:
            tps = await partitions(admin, [topic])
        async with consumer(stream.bootstrap) as reader:
            return {tp.partition: offset for tp, offset in (await reader.end_offsets(tps)).items() if offset}

    stored = dict(
        Position.objects.filter(group=stream.group, agent=sync_agent("ipam"), topic=topic).values_list(
            "partition", "next_offset"
        )
    )
    wanted = asyncio.run(ends())
    return bool(wanted) and all(stored.get(partition) == end for partition, end in wanted.items())


def test_a_letter_whose_key_was_applied_since_is_superseded_and_not_replayed(stream: Stream, start_worker: Any) -> None:
    """Replaying an old event after a newer one was applied would roll the object (and the state topic) back."""
    from nautobot.ipam.models import VLANGroup

    from tests.integration.state_helpers import state_values
    from tests.integration.wire_helpers import vlan_state

    tag = uuid.uuid4().hex[:6]
    first, second, never = f"first-{tag}", f"second-{tag}", f"never-{tag}"
    events = f"{stream.prefix}.ipam.events"
    key = lambda vid, g: canonical_key("vlan", {"vid": vid, "vlan_group__name": g}).encode()  # noqa: E731
    old = (key(10, first), _envelope(10, first, name="old", description="old"))
    other = (key(20, second), _envelope(20, second, name="other"))
    # A key whose newer event failed too: nothing was applied for it, so neither letter is superseded.
    lost = [(key(30, never), _envelope(30, never, name=f"lost-{n}")) for n in (1, 2)]
    worker = start_worker("--source", "ipam", "--batch-timeout", "0.2", "--retry-max-attempts", "1")
    asyncio.run(produce_raw(stream.bootstrap, events, [old, other, lost[0]]))
    wait_for(lambda: len(_letters(stream)) == 3, 120, "three dependency_missing letters", worker)

    # The group appears; a newer event for the first key is applied, a newer one for the third fails again.
    VLANGroup.objects.create(name=first)
    new = (key(10, first), _envelope(10, first, name="new", description="new"))
    asyncio.run(produce_raw(stream.bootstrap, events, [new, lost[1]]))
    wait_for(lambda: vlan_state(first) == {10: ("new", "Active", "new")}, 120, "the newer event applied", worker)
    wait_for(lambda: len(_letters(stream)) == 4, 60, "the fourth letter", worker)

    letters = {(letter["value"], letter["original_offset"]): letter for letter in _letters(stream)}
    superseded = {value: letter["superseded_by"] for (value, _), letter in letters.items() if letter["superseded_by"]}
    assert list(superseded) == [old[1].decode()], superseded
    (old_letter,) = [letter for (value, _), letter in letters.items() if value == old[1].decode()]
    by = superseded[old[1].decode()]
    assert by["topic"] == events and by["partition"] == old_letter["original_partition"]
    assert by["offset"] > old_letter["original_offset"]

    dry = stream.cli("dlq", "replay", "ipam", "--dry-run", "--group", stream.group)
    assert dry.returncode == 0, dry.stderr
    assert "would replay 3 dead letter(s) (3 dependency_missing)" in dry.stdout
    assert "would skip 1 superseded, leave out 0 truncated" in dry.stdout
    (line,) = [line for line in dry.stderr.splitlines() if line.startswith("superseded")]
    assert line.startswith(f"superseded, not replayed: {old_letter['partition']}@{old_letter['offset']}")
    assert key(10, first).decode() in line and f"{events}[{by['partition']}]@{by['offset']}" in line
    everything = stream.cli("dlq", "replay", "ipam", "--dry-run", "--include-superseded", "--group", stream.group)
    assert everything.returncode == 0, everything.stderr
    assert "would replay 4 dead letter(s) (4 dependency_missing)" in everything.stdout
    assert "would skip 0 superseded" in everything.stdout

    VLANGroup.objects.create(name=second)
    replayed = stream.cli("dlq", "replay", "ipam", "--yes", "--group", stream.group)
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed 3 dead letter(s) to {events}; skipped 1 superseded, left out 0 truncated" in replayed.stdout

    # Every replayed record settled (the third key's two failed again), and the first key is still the newest.
    wait_for(lambda: vlan_state(second) == {20: ("other", "Active", "")}, 120, "the replayed VLAN", worker)
    wait_for(lambda: len(_letters(stream)) == 2, 60, "the third key's letters again", worker)
    wait_for(lambda: _settled_everywhere(stream, events), 60, "every replayed record settled", worker)
    assert vlan_state(first) == {10: ("new", "Active", "new")}
    assert vlan_state(never) == {}
    state = state_values(stream)
    assert state[key(10, first).decode()]["attrs"] == {"name": "new", "description": "new"}
    assert state[key(20, second).decode()]["attrs"] == {"name": "other"}
    # Passed over for good: the next replay has nothing superseded left, and the first letter counts as handled.
    assert [letter["key"] for letter in _letters(stream)] == [key(30, never).decode()] * 2
    assert all(letter["superseded_by"] is None for letter in _letters(stream))
