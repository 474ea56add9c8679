"""A failure that may pass later is retried with back-off, in order per key, without holding up other keys."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from streamsync.contract.envelope import canonical_key
from streamsync.contract.partitioning import partition_for
from tests.integration.conftest import Stream, wait_for

pytestmark = pytest.mark.integration


def _event(vid: int, group: str, **attrs: Any) -> dict[str, Any]:
    return {
        "schema": "streamsync.event/v1",
        "source": "ipam",
        "model": "vlan",
        "op": "upsert",
        "key": {"vid": vid, "vlan_group__name": group},
        "attrs": attrs,
    }


def _publish(stream: Stream, tmp_path: Path, *events: dict[str, Any]) -> None:
    path = tmp_path / f"{uuid.uuid4().hex[:6]}.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    result = stream.cli("publish", "ipam", str(path))
    assert result.returncode == 0, result.stderr


def _parked(group: str, vid: int) -> list[tuple[int, str]]:
    from streamsync.models.bookkeeping import ParkedEvent

    key = canonical_key("vlan", {"vid": vid, "vlan_group__name": group})
    return list(ParkedEvent.objects.filter(key=key).order_by("id").values_list("attempts", "last_reason"))


def _vlan(group: str, vid: int) -> tuple[str, str] | None:
    from nautobot.ipam.models import VLAN

    vlan = VLAN.objects.filter(vlan_group__name=group, vid=vid).first()
    return (vlan.name, vlan.description) if vlan else None


def _letters(stream: Stream) -> list[dict[str, Any]]:
    result = stream.cli("dlq", "list", "ipam", "--json", "--group", stream.group)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_a_missing_dependency_is_retried_in_order_while_other_keys_go_on(
    stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    from nautobot.ipam.models import VLANGroup

    ready, later = f"ready-{uuid.uuid4().hex[:6]}", f"later-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=ready)
    worker = start_worker("--batch-timeout", "0.2", "--retry-backoff", "0.5", "--retry-max-attempts", "30")

    _publish(stream, tmp_path, _event(10, later, name="a", description="first"), _event(11, ready, name="b"))
    wait_for(lambda: _vlan(ready, 11) == ("b", ""), 120, "the VLAN whose group exists", worker)
    wait_for(lambda: len(_parked(later, 10)) == 1, 30, "the VLAN waiting for its group to be parked", worker)
    assert "later-" in _parked(later, 10)[0][1]

    # A newer event for the parked key waits behind it; one for another key does not.
    _publish(stream, tmp_path, _event(10, later, description="second"), _event(12, ready, name="c"))
    wait_for(lambda: _vlan(ready, 12) == ("c", ""), 60, "another key going on", worker)
    wait_for(lambda: len(_parked(later, 10)) == 2, 30, "the newer event queued behind the parked one", worker)
    wait_for(lambda: _parked(later, 10)[0][0] >= 2, 30, "retries with back-off", worker)
    assert _vlan(later, 10) is None

    VLANGroup.objects.create(name=later)
    wait_for(lambda: _vlan(later, 10) == ("a", "second"), 60, "the parked events applied, in order", worker)
    wait_for(lambda: _parked(later, 10) == [], 30, "the queue cleared", worker)
    assert _letters(stream) == []


def test_a_dependency_that_never_arrives_is_dead_lettered_after_the_last_attempt(
    stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    never = f"never-{uuid.uuid4().hex[:6]}"
    worker = start_worker("--batch-timeout", "0.2", "--retry-backoff", "0.2", "--retry-max-attempts", "3")
    _publish(stream, tmp_path, _event(20, never, name="orphan"))
    wait_for(lambda: len(_letters(stream)) == 1, 120, "the dead letter", worker)
    (letter,) = _letters(stream)
    assert (letter["code"], letter["attempts"]) == ("dependency_missing", 3)
    assert never in letter["reason"]
    assert json.loads(letter["value"])["key"] == {"vid": 20, "vlan_group__name": never}
    wait_for(lambda: _parked(never, 20) == [], 30, "the parked rows removed", worker)


def test_a_parked_key_goes_on_between_a_later_batchs_events(stream: Stream, start_worker: Any, tmp_path: Path) -> None:
    """A VLAN parked for its group is created when a later batch creates the group, even if it deletes it again.

    As with one batch per event: the VLAN goes in right after the group's create, and then protects
    the group from the delete, which waits.
    """
    from nautobot.ipam.models import VLANGroup

    from streamsync.models.bookkeeping import ParkedEvent
    from tests.integration.conftest import write_nautobot_config
    from tests.integration.test_resilience import log_records

    sources = {"ipam": {"models": ["vlangroup", "vlan"]}}
    config = write_nautobot_config(tmp_path / "nautobot_config.py", sources=sources)
    stream.extra_env["NAUTOBOT_CONFIG"] = str(config)
    granted = stream.cli("setup-user")  # the user may write VLAN groups too
    assert granted.returncode == 0, granted.stderr

    # The guarantee is a partition's: a group whose key lands on its VLAN's partition.
    def partition(model: str, key: dict[str, Any]) -> int:
        return partition_for(canonical_key(model, key).encode(), 3)  # the worker's default topic_partitions

    names = (f"brief-{uuid.uuid4().hex[:6]}" for _ in range(1000))
    group = next(
        n for n in names if partition("vlan", {"vid": 10, "vlan_group__name": n}) == partition("vlangroup", {"name": n})
    )
    worker = start_worker("--batch-timeout", "2", "--retry-backoff", "0.5", "--retry-max-attempts", "1000")
    _publish(stream, tmp_path, _event(10, group, name="a"))
    wait_for(lambda: len(_parked(group, 10)) == 1, 120, "the VLAN waiting for its group to be parked", worker)

    created = {"schema": "streamsync.event/v1", "source": "ipam", "model": "vlangroup", "key": {"name": group}}
    _publish(stream, tmp_path, {**created, "op": "upsert", "attrs": {}}, {**created, "op": "delete"})
    key = canonical_key("vlangroup", {"name": group})
    wait_for(lambda: ParkedEvent.objects.filter(key=key).exists(), 120, "the group's delete parked", worker)
    assert _vlan(group, 10) == ("a", "")
    assert VLANGroup.objects.filter(name=group).exists()
    assert _parked(group, 10) == []
    assert _letters(stream) == []
    # The group's create and delete came in one batch, which carried the parked VLAN.
    assert [r["received"] for r in log_records(worker, "batch committed")][:2] == [1, 2]
