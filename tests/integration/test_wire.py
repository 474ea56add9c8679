"""Any record whatsoever on an events topic: applied, or dead-lettered with its code, and the partition goes on.

Records go through the real broker to a running worker, hostile ones between valid ones on one
partition, so that one record stopping the partition would stop everything behind it. The tests
then compare Nautobot's whole state with what the valid events say, read the dead-letter topic
with `streamsync dlq list`, and check that Kafka's committed offsets and the positions in the
database both reached the end of the log.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import Stream, WorkerProcess, wait_for
from tests.integration.state_helpers import vlan_event
from tests.integration.wire_helpers import (
    AGENT,
    SOURCE,
    Record,
    create_topic,
    envelope_text,
    letters,
    produce,
    raw,
    settled_to_end,
    vlan_state,
)

pytestmark = pytest.mark.integration


def test_hostile_records_between_valid_ones_are_dead_lettered_with_their_codes_and_the_rest_applied(
    stream: Stream, start_worker: Callable[..., WorkerProcess]
) -> None:
    from nautobot.ipam.models import VLANGroup

    group = f"wire-{uuid.uuid4().hex[:8]}"
    VLANGroup.objects.create(name=group)
    VLANGroup.objects.get_or_create(name="None")  # a group whose name diffsync spells like a null identifier
    lone = 3000 + uuid.uuid4().int % 1000  # a vid of this test's own among the VLANs in no group
    topic = f"{stream.prefix}.{SOURCE}.events"
    # The events topic takes records larger than the worker can write again (1 MB topics by default).
    create_topic(stream.bootstrap, topic, {"max.message.bytes": str(5 * 1024 * 1024)})

    def valid(vid: int, **attrs: Any) -> Record:
        return raw(vlan_event("upsert", vid, group, SOURCE, name=f"v{vid}", description=f"valid {vid}", **attrs))

    valid_envelope = vlan_event("upsert", 90, group, SOURCE, name="v90")
    nested: Any = "x"
    for _ in range(40):
        nested = [nested]
    plan: list[tuple[Record, str | None]] = [
        (valid(1), None),
        ((raw(valid_envelope)[0], None), "null_value"),  # a tombstone
        (valid(2), None),
        ((None, raw(valid_envelope)[1]), "null_key"),
        (valid(3), None),
        ((b'vlan:{"vid": 90, "vlan_group__name": "' + group.encode() + b'"}', raw(valid_envelope)[1]), "key_mismatch"),
        (valid(4), None),
        ((b"k", b"\xff\xfe{\x00}"), "not_utf8"),
        ((b"k", b"[" * 200_000), "too_deep"),
        ((raw(valid_envelope)[0], envelope_text({**valid_envelope, "attrs": {"name": nested}})), "too_deep"),
        (valid(5), None),
        ((b"k", envelope_text(valid_envelope, **{group: group + "\\ud800"})), "unstorable_string"),
        ((raw(valid_envelope)[0], envelope_text(valid_envelope, **{'"v90"': '"v\\udc0090"'})), "unstorable_string"),
        ((raw(valid_envelope)[0], envelope_text(valid_envelope, **{'"id": "': '"id": "\\u0000'})), "unstorable_string"),
        (valid(6), None),
        # Two objects whose diffsync unique ids collide ("3000__None"): both are VLANs of their own.
        (raw(vlan_event("upsert", lone, None, SOURCE, name="no group")), None),
        (raw(vlan_event("upsert", lone, "None", SOURCE, name="group None")), None),
        (raw(vlan_event("upsert", 7, group, SOURCE, name="v7", description="x" * 1_500_000)), "too_large"),
        (valid(7), None),
        (raw({**vlan_event("upsert", 91, group, SOURCE, name="v91"), "model": "vlan-nope"}), "unknown_model"),
        (raw(vlan_event("upsert", 92, group, "other", name="v92")), "wrong_source"),
        (valid(8), None),
    ]

    # All of it waits in the log before the worker starts: one batch holds it, as under load.
    offsets = produce(stream.bootstrap, topic, [record for record, _ in plan])
    expected_codes = {offset: code for offset, (_, code) in zip(offsets, plan, strict=True) if code}
    worker = start_worker("--source", SOURCE, "--batch-timeout", "0.2")

    wait_for(settled_to_end(stream, AGENT, topic), 180, "the log settled to its end", worker)
    # And it is still consuming.
    produce(stream.bootstrap, topic, [valid(9)])
    wait_for(lambda: 9 in vlan_state(group), 60, "an event sent afterwards applied", worker)
    wait_for(settled_to_end(stream, AGENT, topic), 60, "the log settled to its end again", worker)
    assert vlan_state(group) == {vid: (f"v{vid}", "Active", f"valid {vid}") for vid in range(1, 10)}
    assert vlan_state(None).get(lone) == ("no group", "Active", "")
    assert vlan_state("None").get(lone) == ("group None", "Active", "")

    found = letters(stream)
    assert {offset: letter["code"] for offset, letter in found.items()} == expected_codes
    for letter in found.values():
        assert letter["reason"], letter
        assert letter["original_topic"] == topic and letter["original_partition"] == 0
    too_large = next(letter for letter in found.values() if letter["code"] == "too_large")
    assert too_large["truncated"] > 1_500_000  # the letter holds the record's start; the headers say where it is
    # A dead letter is the record as it came: a tombstone stays a tombstone, bytes stay bytes.
    tombstone = next(letter for letter in found.values() if letter["code"] == "null_value")
    assert tombstone["value"] is None and tombstone["key"] == raw(valid_envelope)[0].decode()
