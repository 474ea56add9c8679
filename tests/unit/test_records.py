"""Any Kafka record becomes an event or a rejection with a code; a dead letter keeps the record and says why."""

from __future__ import annotations

import json

import pytest

from streamsync.contract.deadletter import TRUNCATED_BYTES, DeadLetter
from streamsync.contract.envelope import EnvelopeError, RejectCode, canonical_key
from streamsync.contract.records import Origin, read_event

KEY = canonical_key("vlan", {"vid": 100, "vlan_group__name": "dc1"}).encode()
VALUE = json.dumps(
    {
        "schema": "streamsync.event/v1",
        "id": "e1",
        "source": "ipam",
        "model": "vlan",
        "op": "upsert",
        "key": {"vid": 100, "vlan_group__name": "dc1"},
        "attrs": {"name": "users"},
    }
).encode()


def _origin(
    key: bytes | None = KEY, value: bytes | None = VALUE, headers: tuple[tuple[str, bytes], ...] = ()
) -> Origin:
    return Origin(key, value, "streamsync.ipam.events", 2, 41, headers)


def test_a_record_with_the_canonical_key_carries_its_event() -> None:
    event = read_event(_origin(), max_bytes=10_000)
    assert (event.model, event.key, event.attrs) == ("vlan", {"vid": 100, "vlan_group__name": "dc1"}, {"name": "users"})


@pytest.mark.parametrize(
    ("origin", "code", "reason"),
    [
        (_origin(value=None), RejectCode.NULL_VALUE, "tombstone"),
        (_origin(key=None), RejectCode.NULL_KEY, "without a key"),
        (_origin(key=b'vlan:{"vid":100}'), RejectCode.KEY_MISMATCH, "is not the event's canonical key"),
        # The same object spelled with spaces: a different key, maybe a different partition.
        (_origin(key=b'vlan:{"vid": 100, "vlan_group__name": "dc1"}'), RejectCode.KEY_MISMATCH, "canonical key"),
        (_origin(value=VALUE + b" " * 10_000), RejectCode.TOO_LARGE, "at most 10,000 bytes"),
        (_origin(headers=(("h", b"x" * 10_000),)), RejectCode.TOO_LARGE, "at most 10,000 bytes"),
        (_origin(value=b"\xc3\x28"), RejectCode.NOT_UTF8, "not UTF-8"),
    ],
)
def test_any_other_record_is_refused_with_its_code(origin: Origin, code: RejectCode, reason: str) -> None:
    with pytest.raises(EnvelopeError) as error:
        read_event(origin, max_bytes=10_000)
    assert error.value.code is code
    assert reason in error.value.reason


def test_a_dead_letter_is_the_original_record_with_why_in_headers() -> None:
    origin = _origin(headers=(("traceparent", b"00-abc-01"), ("streamsync-code", b"older")))
    letter = DeadLetter.of(origin, "bad_key", "vlan: missing identifier(s)", source="ipam")
    record = letter.record("streamsync.ipam.dlq", origin, max_bytes=10_000)
    assert (record.topic, record.key, record.value) == ("streamsync.ipam.dlq", KEY, VALUE)
    headers = dict(record.headers)
    assert headers["traceparent"] == b"00-abc-01"  # the original's own headers are kept
    assert [name for name, _ in record.headers].count("streamsync-code") == 1  # a letter says why once
    back = DeadLetter.from_headers(list(record.headers))
    assert back.model_dump(exclude={"failed_at"}) == letter.model_dump(exclude={"failed_at"})
    assert back.failed_at == letter.failed_at


def test_a_record_too_large_to_write_again_is_dead_lettered_cut_short_pointing_at_the_original() -> None:
    big = VALUE + b" " * (3 * TRUNCATED_BYTES)
    origin = _origin(value=big, headers=(("h", b"v"),))
    letter = DeadLetter.of(origin, RejectCode.TOO_LARGE, "too large", source="ipam")
    record = letter.record("streamsync.ipam.dlq", origin, max_bytes=TRUNCATED_BYTES * 2)
    assert record.value == big[:TRUNCATED_BYTES]
    back = DeadLetter.from_headers(list(record.headers))
    assert back.truncated == origin.size
    assert (back.original_topic, back.original_partition, back.original_offset) == ("streamsync.ipam.events", 2, 41)
    assert "h" not in dict(record.headers)
