"""Thousands of malformed or hostile envelopes: each is rejected with a reason, and nothing is written."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamsync.contract.envelope import EnvelopeError, Event, decode
from streamsync.sync.batch import Outcome
from streamsync.sync.engine import SyncEngine
from streamsync.sync.permissions import set_up_writer
from streamsync.sync.registry import ModelRegistry

pytestmark = pytest.mark.integration

GROUP = f"hostile-{uuid.uuid4().hex[:8]}"

HOSTILE_TEXT = st.sampled_from(
    [
        "'; DROP TABLE ipam_vlan; --",
        '" OR 1=1 --',
        "{{7*7}}",
        "${jndi:ldap://x/a}",
        "<script>alert(1)</script>",
        "../../etc/passwd",
        "\x00",
        "vlan\u202e",
        "__class__",
        "pk",
        "id",
    ]
) | st.text(min_size=0, max_size=50)
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _valid() -> dict[str, Any]:
    return {
        "schema": "streamsync.event/v1",
        "id": str(uuid.uuid4()),
        "source": "ipam",
        "model": "vlan",
        "op": "upsert",
        "key": {"vid": 100, "vlan_group__name": GROUP},
        "attrs": {"name": "ok"},
        "ts": "2026-11-25T17:00:00Z",
    }


def _with(**changes: Any) -> bytes:
    data = _valid()
    for name, value in changes.items():
        if value is _DROP:
            data.pop(name)
        else:
            data[name] = value
    return json.dumps(data).encode()


_DROP = object()


@st.composite
def hostile_envelopes(draw: st.DrawFn) -> bytes:
    """One defect per envelope, each of a kind the contract says must be rejected."""
    kind = draw(st.integers(min_value=0, max_value=14))
    valid = _valid()
    if kind == 0:  # bytes that are not JSON at all
        raw = draw(st.binary(min_size=0, max_size=200))
        try:
            json.loads(raw)
        except (ValueError, RecursionError):
            return raw
        return b"\xff" + raw
    if kind == 1:  # JSON, but not an object
        return json.dumps(draw(st.lists(JSON_SCALARS, max_size=3) | JSON_SCALARS)).encode()
    if kind == 2:  # wrong or missing schema version
        return _with(schema=draw(HOSTILE_TEXT.filter(lambda s: s != "streamsync.event/v1") | st.just(_DROP)))
    if kind == 3:  # bad op
        return _with(op=draw(JSON_VALUES.filter(lambda v: v not in ("upsert", "delete"))))
    if kind == 4:  # a model nobody registered
        return _with(model=draw(HOSTILE_TEXT.filter(lambda s: s != "vlan" and 0 < len(s) <= 100)))
    if kind == 5:  # a missing identifier
        key = dict(valid["key"])
        key.pop(draw(st.sampled_from(sorted(key))))
        return _with(key=key)
    if kind == 6:  # an identifier the model does not have
        name = draw(HOSTILE_TEXT.filter(lambda s: s not in ("vid", "vlan_group__name")))
        return _with(key={**valid["key"], name: draw(JSON_SCALARS)})
    if kind == 7:  # an attribute the model does not declare (including ORM internals)
        name = draw(HOSTILE_TEXT.filter(lambda s: s not in ("name", "status__name", "description")))
        return _with(attrs={"name": "x", name: draw(JSON_VALUES)})
    if kind == 8:  # a wrong type for an identifier (strict: "100" is not 100, True is not 1)
        vid = draw(JSON_VALUES.filter(lambda v: not (isinstance(v, int) and not isinstance(v, bool))))
        return _with(key={"vid": vid, "vlan_group__name": GROUP})
    if kind == 9:  # a wrong type for an attribute
        return _with(
            attrs={
                "name": draw(
                    st.lists(JSON_SCALARS, max_size=2) | st.dictionaries(st.text(max_size=3), JSON_SCALARS, max_size=2)
                )
            }
        )
    if kind == 10:  # a value Nautobot refuses: vid out of range
        return _with(
            key={"vid": draw(st.integers(max_value=0) | st.integers(min_value=4095)), "vlan_group__name": GROUP}
        )
    if kind == 11:  # huge strings, longer than any of these fields may be
        size = draw(st.integers(min_value=256, max_value=200_000))
        field = draw(st.sampled_from(["name", "description", "status__name"]))
        text = draw(HOSTILE_TEXT.filter(bool))
        return _with(attrs={"name": "x", field: text * (size // len(text) + 1)})
    if kind == 12:  # a group (foreign key) that does not exist, with injection-looking names
        return _with(key={"vid": 100, "vlan_group__name": draw(HOSTILE_TEXT.filter(lambda s: s != GROUP))})
    if kind == 13:  # extra or missing envelope fields
        extra = draw(HOSTILE_TEXT.filter(lambda s: s not in valid))
        return (
            _with(**{extra: draw(JSON_VALUES)})
            if draw(st.booleans())
            else _with(**{draw(st.sampled_from(["source", "model", "key", "op"])): _DROP})
        )
    # a status that does not exist
    return _with(
        attrs={
            "name": "x",
            "status__name": draw(HOSTILE_TEXT.filter(lambda s: s not in ("Active", "Reserved", "Deprecated"))),
        }
    )


@pytest.fixture(scope="module")
def engine() -> SyncEngine:
    from nautobot.ipam.models import VLANGroup

    from streamsync.models.ipam import VLANModel

    VLANGroup.objects.get_or_create(name=GROUP, defaults={"range": "1-4094"})
    return SyncEngine(ModelRegistry([VLANModel]), set_up_writer("streamsync", [VLANModel]))


def _state() -> tuple[int, int]:
    from nautobot.extras.models import ObjectChange
    from nautobot.ipam.models import VLAN

    return VLAN.objects.count(), ObjectChange.objects.count()


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=hostile_envelopes())
def test_each_hostile_envelope_is_rejected_with_a_reason_and_nothing_is_written(engine: SyncEngine, raw: bytes) -> None:
    before = _state()
    try:
        event = decode(raw)
    except EnvelopeError as error:
        assert error.code and error.reason
        return
    result = engine.apply([event], source="ipam")
    reasons = [r.reason for r in result.rejected] + [o.reason for o in result.objects if o.outcome is Outcome.FAILED]
    assert len(reasons) == 1 and reasons[0], (raw[:300], result)
    assert all(o.outcome is Outcome.FAILED for o in result.objects)
    assert _state() == before


def test_hostile_events_do_not_take_the_rest_of_the_batch_down(engine: SyncEngine) -> None:
    from nautobot.ipam.models import VLAN

    good = [
        Event.model_validate(
            {**_valid(), "key": {"vid": vid, "vlan_group__name": GROUP}, "attrs": {"name": f"ok{vid}"}}
        )
        for vid in (1, 2)
    ]
    bad = [
        Event.model_validate({**_valid(), "model": "'; DROP TABLE ipam_vlan; --"}),
        Event.model_validate({**_valid(), "attrs": {"pk": "00000000-0000-0000-0000-000000000000"}}),
        Event.model_validate({**_valid(), "key": {"vid": 3, "vlan_group__name": GROUP}, "attrs": {"name": "x" * 300}}),
    ]
    result = engine.apply([good[0], *bad, good[1]], source="ipam")
    assert len(result.rejected) == 2
    assert [o.outcome for o in result.objects] == [Outcome.CREATED, Outcome.FAILED, Outcome.CREATED]
    assert set(VLAN.objects.filter(vlan_group__name=GROUP).values_list("vid", flat=True)) == {1, 2}


def test_injection_looking_values_are_stored_as_text(engine: SyncEngine) -> None:
    from nautobot.ipam.models import VLAN

    text = "'; DROP TABLE ipam_vlan; -- {{7*7}} <script>"
    event = Event.model_validate(
        {**_valid(), "key": {"vid": 99, "vlan_group__name": GROUP}, "attrs": {"name": "inj", "description": text}}
    )
    assert [o.outcome for o in engine.apply([event], source="ipam").objects] == [Outcome.CREATED]
    assert VLAN.objects.get(vid=99, vlan_group__name=GROUP).description == text
