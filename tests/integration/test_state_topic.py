"""The compacted state topic: the latest full state of every object of a source, kept current by the worker."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stream, wait_for
from tests.integration.state_helpers import own_source, publish, state_values, vlan_event, vlan_key, vlans

pytestmark = pytest.mark.integration


def test_state_topic_holds_merged_full_state_and_tombstones(stream: Stream, start_worker: Any, tmp_path: Path) -> None:
    from nautobot.ipam.models import VLANGroup

    # A source of its own: the event parked here must not be retried by other tests' workers.
    stream, source = own_source(stream, tmp_path)
    group = f"st-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    worker = start_worker("--source", source, "--batch-timeout", "0.2", "--retry-backoff", "60", on=stream)

    first = vlan_event("upsert", 10, group, source, name="users", description="floor 3", status__name="Reserved")
    publish(stream, tmp_path, first, vlan_event("upsert", 20, group, source, name="voice"), source=source)
    wait_for(lambda: vlans(group) == {10: ("users", "floor 3"), 20: ("voice", "")}, 120, "two VLANs", worker)

    # A later batch names one attribute: the state keeps every attribute the source has set.
    partial = vlan_event("upsert", 10, group, source, description="floor 4")
    publish(
        stream,
        tmp_path,
        partial,
        vlan_event("delete", 20, group, source),
        # Nautobot cannot apply it (no such status; parked for a retry), but it is what the source says.
        vlan_event("upsert", 30, group, source, name="guest", status__name="No such status"),
        # Rejected (an attribute VLANs do not have): not part of the state.
        vlan_event("upsert", 40, group, source, name="bad", colour="red"),
        source=source,
    )
    wait_for(
        lambda: (
            vlan_key(20, group) in state_values(stream, source)
            and state_values(stream, source)[vlan_key(20, group)] is None
        ),
        60,
        "VLAN 20's tombstone",
        worker,
    )
    state = state_values(stream, source)
    assert state[vlan_key(10, group)] == {
        "schema": "streamsync.event/v1",
        "id": partial["id"],
        "source": source,
        "model": "vlan",
        "op": "upsert",
        "key": {"vid": 10, "vlan_group__name": group},
        "attrs": {"name": "users", "description": "floor 4", "status__name": "Reserved"},
        "ts": "2026-11-25T17:00:00.123000Z",
    }
    assert state[vlan_key(30, group)]["attrs"] == {"name": "guest", "status__name": "No such status"}
    assert vlan_key(40, group) not in state
    assert vlans(group) == {10: ("users", "floor 4")}

    # The merge base outlives the worker: a new one merges onto what the old one stored.
    assert worker.stop() == 0
    worker = start_worker("--source", source, "--batch-timeout", "0.2", "--retry-backoff", "60", on=stream)
    publish(stream, tmp_path, vlan_event("upsert", 10, group, source, name="staff"), source=source)
    merged = lambda: state_values(stream, source)[vlan_key(10, group)]["attrs"]  # noqa: E731
    wait_for(lambda: merged()["name"] == "staff", 120, "the merge", worker)
    assert merged() == {
        "name": "staff",
        "description": "floor 4",
        "status__name": "Reserved",
    }
    assert _cleanup_policy(stream, f"{stream.prefix}.{source}.state") == "compact"


def _cleanup_policy(stream: Stream, topic: str) -> str:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from streamsync.kafka.clients import admin_client

    async def describe() -> str:
        async with admin_client(stream.bootstrap) as admin:
            [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        [resource] = response.to_object()["resources"]
        return next(c["config_value"] for c in resource["config_entries"] if c["config_names"] == "cleanup.policy")

    return asyncio.run(describe())


def test_a_key_too_long_for_the_state_tables_does_not_fail_the_batch() -> None:
    """Storing it would fail the batch's transaction on every redelivery: the worker would be stuck."""
    from django.db import transaction

    from streamsync.contract.envelope import Event
    from streamsync.models.bookkeeping import OwnedObject, SourceState
    from streamsync.models.ipam import VLANModel
    from streamsync.sync import ownership
    from streamsync.sync.registry import ModelRegistry
    from streamsync.sync.state import merge

    source = f"s{uuid.uuid4().hex[:8]}"
    long_group, group = "g" * 1200, f"st-{uuid.uuid4().hex[:6]}"
    events = [
        Event.model_validate(vlan_event("upsert", 1, long_group, source, name="x")),
        Event.model_validate(vlan_event("upsert", 2, group, source, name="y")),
    ]
    with transaction.atomic():
        records = merge(source, ModelRegistry([VLANModel]), events)
        ownership.claim(source, [(VLANModel, vlan_key(1, long_group), uuid.uuid4())])
    assert [r.key for r in records] == [vlan_key(2, group)]
    assert list(SourceState.objects.filter(source=source).values_list("key", flat=True)) == [vlan_key(2, group)]
    assert OwnedObject.objects.filter(source=source).count() == 1


def test_an_event_whose_key_is_too_long_to_store_is_dead_lettered_and_the_stream_goes_on(
    stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    from nautobot.ipam.models import VLANGroup

    stream, source = own_source(stream, tmp_path)
    group, missing = f"st-{uuid.uuid4().hex[:6]}", "g" * 1200  # no such group: a retryable failure
    VLANGroup.objects.create(name=group)
    worker = start_worker("--source", source, "--batch-timeout", "0.2", on=stream)
    events = (vlan_event("upsert", 1, missing, source, name="x"), vlan_event("upsert", 2, group, source, name="y"))
    publish(stream, tmp_path, *events, source=source)
    wait_for(lambda: vlans(group) == {2: ("y", "")}, 120, "the other event applied", worker)

    def letters() -> list[dict[str, Any]]:
        listed = stream.cli("dlq", "list", source, "--json", "--group", stream.group)
        return [json.loads(line) for line in listed.stdout.splitlines()]

    wait_for(lambda: len(letters()) == 1, 60, "the dead letter", worker)
    assert letters()[0]["code"] == "dependency_missing"
    assert set(state_values(stream, source)) == {vlan_key(2, group)}
