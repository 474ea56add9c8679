"""The v1 envelope and the canonical key: the contract producers depend on."""

from __future__ import annotations

import json

import pytest

from streamsync.contract.envelope import EnvelopeError, Op, RejectCode, canonical_key, decode


def _raw(**overrides: object) -> bytes:
    data: dict[str, object] = {
        "schema": "streamsync.event/v1",
        "id": "0b9d3c5e",
        "source": "ipam",
        "model": "vlan",
        "op": "upsert",
        "key": {"vlan_group__name": "dc1", "vid": 100},
        "attrs": {"name": "users"},
        "ts": "2026-11-25T17:00:00.123Z",
    }
    data.update(overrides)
    return json.dumps(data).encode()


def _nested(levels: int) -> object:
    """A list nested `levels` deep."""
    value: object = "x"
    for _ in range(levels):
        value = [value]
    return value


def test_canonical_key_sorts_identifiers_without_spaces() -> None:
    assert canonical_key("vlan", {"vlan_group__name": "dc1", "vid": 100}) == 'vlan:{"vid":100,"vlan_group__name":"dc1"}'


def test_decode_round_trips_to_the_same_bytes_shape() -> None:
    event = decode(_raw())
    assert event.op is Op.UPSERT
    assert event.canonical_key == 'vlan:{"vid":100,"vlan_group__name":"dc1"}'
    again = json.loads(event.to_bytes())
    assert again["schema"] == "streamsync.event/v1"
    assert again["key"] == {"vlan_group__name": "dc1", "vid": 100}


@pytest.mark.parametrize(
    ("raw", "code", "reason"),
    [
        (b"{not json", RejectCode.NOT_JSON, "not JSON: Expecting property name"),
        # Python refuses to read integers of more than 4300 digits (a defence against slow conversions).
        (_raw(attrs={"asn": 0}).replace(b'"asn": 0', b'"asn": ' + b"9" * 4301), RejectCode.NOT_JSON, "the limit"),
        (b"\xff\xfe", RejectCode.NOT_UTF8, "not UTF-8"),
        # Valid UTF-16 JSON: json.loads would guess the encoding; the contract says UTF-8.
        ('{"schema": "streamsync.event/v1"}'.encode("utf-16"), RejectCode.NOT_UTF8, "not UTF-8"),
        (b"[" * 100_000, RejectCode.TOO_DEEP, "nested deeper"),
        (_raw(attrs={"name": "x", "notes": _nested(32)}), RejectCode.TOO_DEEP, "more than 32 levels"),
        (_raw(key={"vid": 100, "vlan_group__name": "dc\ud8001"}), RejectCode.UNSTORABLE_STRING, "lone surrogate"),
        (_raw(attrs={"name": "\udfff"}), RejectCode.UNSTORABLE_STRING, "lone surrogate"),
        (_raw(attrs={"\ud800": "x"}), RejectCode.UNSTORABLE_STRING, "lone surrogate"),
        (_raw(id="a\u0000b"), RejectCode.UNSTORABLE_STRING, "NUL"),
        (b"[1, 2]", RejectCode.NOT_OBJECT, "envelope must be a JSON object, got list"),
        (
            _raw(schema="streamsync.event/v2"),
            RejectCode.UNSUPPORTED_SCHEMA,
            "schema 'streamsync.event/v2' is not supported",
        ),
        (_raw(op="merge"), RejectCode.BAD_OP, "op 'merge' is not one of ['upsert', 'delete']"),
        (_raw(unexpected=1), RejectCode.INVALID_ENVELOPE, "unexpected: Extra inputs are not permitted"),
        (_raw(key={"vid": [1]}), RejectCode.INVALID_ENVELOPE, "key.vid"),
        (_raw(ts="yesterday"), RejectCode.INVALID_ENVELOPE, "ts: Input should be a valid datetime"),
    ],
)
def test_decode_rejects_with_a_code_and_a_readable_reason(raw: bytes, code: RejectCode, reason: str) -> None:
    with pytest.raises(EnvelopeError) as error:
        decode(raw)
    assert error.value.code is code
    assert reason in error.value.reason


def test_decode_takes_characters_outside_the_basic_plane_spelled_as_a_surrogate_pair() -> None:
    raw = _raw(attrs={"name": "\U0001f600 uplink"})  # json.dumps spells it "\ud83d\ude00"
    assert b"\\ud83d\\ude00" in raw
    assert decode(raw).attrs == {"name": "\U0001f600 uplink"}


def test_decode_takes_nesting_up_to_the_limit() -> None:
    value = _nested(30)  # within the envelope (level 1) and attrs (level 2): 32 levels in all
    assert decode(_raw(attrs={"notes": value})).attrs["notes"] == value
