"""Any record whatsoever on an events topic: applied, or dead-lettered with its code, and the partition goes on.

Records go through the real broker to a running worker, hostile ones between valid ones on one
partition, so that one record stopping the partition would stop everything behind it. The tests
then compare Nautobot's whole state with what the valid events say, read the dead-letter topic
with `streamsync dlq list`, and check that Kafka's committed offsets and the positions in the
database both reached the end of the log.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import Stream, WorkerProcess, wait_for, write_nautobot_config
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
    stored_position,
    vlan_state,
)

pytestmark = pytest.mark.integration


def test_hostile_records_between_valid_ones_are_dead_lettered_with_their_codes_and_the_rest_applied(
    stream: Stream, start_worker: Callable[..., WorkerProcess], group_named_none: str
) -> None:
    from nautobot.ipam.models import VLANGroup

    group = f"wire-{uuid.uuid4().hex[:8]}"
    VLANGroup.objects.create(name=group)
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
    # Each was caught for what it is: no batch had to be split to find a record that breaks it.
    assert "batch keeps failing" not in worker.output()
    for letter in found.values():
        assert letter["reason"], letter
        assert letter["original_topic"] == topic and letter["original_partition"] == 0
    too_large = next(letter for letter in found.values() if letter["code"] == "too_large")
    assert too_large["truncated"] > 1_500_000  # the letter holds the record's start; the headers say where it is
    # A dead letter is the record as it came: a tombstone stays a tombstone, bytes stay bytes.
    tombstone = next(letter for letter in found.values() if letter["code"] == "null_value")
    key = raw(valid_envelope)[0]
    assert key is not None and tombstone["value"] is None and tombstone["key"] == key.decode()


def nautobot_vlan(op: str, vid: int, group: str, **attrs: Any) -> dict[str, Any]:
    """A VLAN change as Nautobot's event broker publishes it: every attribute of the model."""
    every: dict[str, Any] = {
        "status__name": "Active",
        "role__name": None,
        "tenant__name": None,
        "description": "",
        "tags": [],
    }
    return vlan_event(op, vid, group, "nautobot", **({**every, **attrs} if op == "upsert" else {}))


def inventory_rows(path: Path) -> dict[int, tuple[str, str]]:
    """The SQLite inventory's VLANs: vid -> (name, description)."""
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        try:
            return {
                vid: (name, description)
                for vid, name, description in db.execute("SELECT vid, name, description FROM vlan")
            }
        except sqlite3.OperationalError:  # the table is made with the first batch
            return {}


def test_a_target_settles_any_record_on_nautobots_events_topic_the_same_way(
    stream: Stream, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.db"
    config = write_nautobot_config(
        tmp_path / "nautobot_config.py",
        targets={
            "inventory": {
                "adapter": "streamsync.targets.sqlite.SQLiteInventory",
                "models": ["vlan"],
                "options": {"path": str(inventory)},
            }
        },
    )
    on = dataclasses.replace(stream, extra_env={"NAUTOBOT_CONFIG": str(config)})
    topic, agent, group = f"{stream.prefix}.nautobot.events", "streamsync.target.inventory", "dc1"
    create_topic(stream.bootstrap, topic, {})

    def valid(vid: int) -> Record:
        return raw(nautobot_vlan("upsert", vid, group, name=f"v{vid}", description=f"valid {vid}"))

    template = nautobot_vlan("upsert", 90, group, name="v90")
    plan: list[tuple[Record, str | None]] = [
        (valid(1), None),
        ((raw(template)[0], None), "null_value"),
        ((None, raw(template)[1]), "null_key"),
        (valid(2), None),
        ((b'vlan:{"vid": 90}', raw(template)[1]), "key_mismatch"),
        ((b"k", b"\xc3\x28"), "not_utf8"),
        ((b"k", b"[" * 100_000), "too_deep"),
        ((raw(template)[0], envelope_text(template, **{'"v90"': '"\\ud800"'})), "unstorable_string"),
        # Another target's model: not this target's business, skipped.
        (raw({**template, "model": "prefix", "key": {"prefix": "10.0.0.0/8", "namespace__name": "Global"}}), None),
        (raw({**template, "source": "ipam"}), "wrong_source"),
        (valid(3), None),
    ]
    offsets = produce(stream.bootstrap, topic, [record for record, _ in plan])
    # The inventory's own change, coming back from Nautobot: skipped, neither written nor dead-lettered.
    produce(stream.bootstrap, topic, [valid(4)], headers=[("streamsync-origin", b"inventory")])
    expected_codes = {offset: code for offset, (_, code) in zip(offsets, plan, strict=True) if code}

    worker = start_worker("--target", "inventory", "--batch-timeout", "0.2", on=on)
    wait_for(settled_to_end(stream, agent, topic), 120, "Nautobot's events settled to their end", worker)
    assert inventory_rows(inventory) == {vid: (f"v{vid}", f"valid {vid}") for vid in (1, 2, 3)}
    found = letters(stream, "inventory")
    assert {offset: letter["code"] for offset, letter in found.items()} == expected_codes
    assert all(letter["original_topic"] == topic for letter in found.values())


# aiokafka refuses to send a record with neither a key nor a value.
GARBAGE = st.tuples(st.none() | st.binary(max_size=40), st.none() | st.binary(max_size=200)).filter(
    lambda r: r != (None, None)
)


# Any Unicode, lone surrogates (which st.text leaves out by default) and NUL included.
TEXT = st.text(st.characters(exclude_categories=()) | st.sampled_from(["\ud800", "\udfff", "\x00"]), max_size=60)


def _unstorable(text: str) -> bool:
    return "\x00" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text)


_running: dict[str, WorkerProcess] = {}
_next_vid = iter(range(1000, 4000))


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batch=st.lists(
        st.one_of(TEXT.map(lambda text: ("valid", text)), GARBAGE.map(lambda r: ("garbage", r))),
        min_size=1,
        max_size=8,
    )
)
def test_whatever_bytes_arrive_each_record_is_applied_or_dead_lettered_and_the_partition_goes_on(
    stream: Stream, start_worker: Callable[..., WorkerProcess], batch: list[tuple[str, Any]]
) -> None:
    """Random bytes, keys and Unicode (lone surrogates and NUL included) through the broker to one worker."""
    from nautobot.ipam.models import VLANGroup

    group = f"any-{stream.group[-8:]}"
    topic = f"{stream.prefix}.{SOURCE}.events"
    if stream.group not in _running:
        VLANGroup.objects.create(name=group)
        create_topic(stream.bootstrap, topic, {})
        _running[stream.group] = start_worker("--source", SOURCE, "--batch-timeout", "0.1")
    worker = _running[stream.group]

    records: list[Record] = []
    applied: dict[int, str] = {}  # vid -> description, for valid events whose text can be stored
    refused: list[int] = []  # indexes of records that must be dead-lettered
    for index, (kind, item) in enumerate(batch):
        if kind == "garbage":
            records.append(item)
            refused.append(index)
            continue
        vid = next(_next_vid)
        records.append(raw(vlan_event("upsert", vid, group, SOURCE, name=f"v{vid}", description=item)))
        if _unstorable(item):
            refused.append(index)
        else:
            applied[vid] = item
    offsets = produce(stream.bootstrap, topic, records)
    wait_for(lambda: (stored_position(stream, AGENT, topic) or 0) > offsets[-1], 120, "the records settled", worker)
    lettered = letters(stream)
    assert {offsets[i] for i in refused} == {offset for offset in lettered if offset in offsets}
    state = vlan_state(group)
    assert {vid: state[vid][2] for vid in applied if vid in state} == applied
