"""What `dlq replay` sends: the original record with its own headers, and a target's letters marked for it alone."""

from __future__ import annotations

import json

from streamsync.contract.deadletter import APPLY_FAILED, HEADER_REDRIVE_FOR, DeadLetter
from streamsync.contract.envelope import canonical_key
from streamsync.contract.records import Origin
from streamsync.ops.deadletters import StoredLetter, redrive
from streamsync.outbox.broker import HEADER_ORIGIN

KEY = canonical_key("vlan", {"vid": 100, "vlan_group__name": "dc1"})
VALUE = json.dumps(
    {
        "schema": "streamsync.event/v1",
        "id": "e1",
        "source": "nautobot",
        "model": "vlan",
        "op": "upsert",
        "key": {"vid": 100, "vlan_group__name": "dc1"},
        "attrs": {"name": "users"},
    }
).encode()
NAUTOBOT = "streamsync.nautobot.events"
EVENTS = "streamsync.inventory.events"


def _stored(origin: Origin, key: bytes | None = None) -> StoredLetter:
    """The letter the worker writes for `origin`, as `dlq` reads it back."""
    out = DeadLetter.of(origin, APPLY_FAILED, "refused", source="nautobot").record(
        "streamsync.inventory.dlq", origin, 1 << 20
    )
    return StoredLetter(
        0, 7, out.key if key is None else key, out.value, DeadLetter.from_headers(list(out.headers)), False, out.headers
    )


def test_a_targets_letter_goes_back_with_its_own_headers_and_for_that_target_alone() -> None:
    headers = ((HEADER_ORIGIN, b"inventory"), ("nautobot-request-id", b"r1"), (HEADER_REDRIVE_FOR, b"elsewhere"))
    sent = redrive(_stored(Origin(KEY.encode(), VALUE, NAUTOBOT, 1, 40, headers)), "inventory", EVENTS, NAUTOBOT)
    assert sent.topic == NAUTOBOT
    assert (sent.key, sent.value) == (KEY.encode(), VALUE)
    assert sent.headers == (
        (HEADER_ORIGIN, b"inventory"),
        ("nautobot-request-id", b"r1"),
        (HEADER_REDRIVE_FOR, b"inventory"),
    )


def test_a_sources_letter_goes_back_to_its_events_topic_unmarked() -> None:
    sent = redrive(
        _stored(Origin(KEY.encode(), VALUE, EVENTS, 1, 40, (("trace", b"t"),))), "inventory", EVENTS, NAUTOBOT
    )
    assert (sent.topic, sent.headers) == (EVENTS, (("trace", b"t"),))


def test_a_letter_has_a_key_only_when_its_record_is_keyed_by_its_events_canonical_key() -> None:
    origin = Origin(KEY.encode(), VALUE, EVENTS, 1, 40)
    assert _stored(origin).object_key == KEY
    assert _stored(origin, key=b"another").object_key is None
    assert _stored(Origin(KEY.encode(), b"{not json", EVENTS, 1, 40)).object_key is None
    assert _stored(Origin(None, VALUE, EVENTS, 1, 40)).object_key is None
