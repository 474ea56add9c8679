"""Nautobot's own changes into Kafka: event broker → outbox → relay → `<prefix>.nautobot.events`.

On the real stack: the broker registered from nautobot_config.py's EVENT_BROKERS, the test
database, and real Kafka. Each test writes for its own topic prefix.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from streamsync.contract.envelope import Event, Op, decode
from tests.integration.conftest import Stream, wait_for

pytestmark = pytest.mark.integration

VLAN_ATTRS = {"name", "status__name", "role__name", "tenant__name", "description", "tags"}


@dataclass
class Message:
    """One record read back from Kafka."""

    key: str
    event: Event
    headers: dict[str, str]
    timestamp_ms: int


def _vlan_key(vid: int, group: str) -> str:
    return f'vlan:{{"vid":{vid},"vlan_group__name":"{group}"}}'


def _relay(bootstrap: str, topic: str, send_timeout: float = 15.0) -> Any:
    """Run one relay until the topic's outbox is empty (or once, when it fails); returns the last result."""
    from streamsync.agents.relay import OutboxRelay

    async def run() -> Any:
        relay = OutboxRelay(bootstrap, topic, send_timeout=send_timeout)
        try:
            while True:
                result = await relay.run_once()
                if result.error or result.standby or result.claimed < relay.batch_size:
                    return result
        finally:
            await relay.close()

    return asyncio.run(run())


def _read(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Message]:
    """The first `count` records of `topic` (every partition, from the beginning), in offset order per partition."""

    async def run() -> list[Message]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await consumer.start()
        messages: list[Message] = []
        try:
            deadline = time.monotonic() + timeout
            while len(messages) < count and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        assert record.key is not None and record.value is not None
                        messages.append(
                            Message(
                                key=record.key.decode(),
                                event=decode(record.value),
                                headers={name: value.decode() for name, value in record.headers},
                                timestamp_ms=record.timestamp,
                            )
                        )
        finally:
            await consumer.stop()
        return messages

    messages = asyncio.run(run())
    assert len(messages) >= count, f"{len(messages)} of {count} message(s) on {topic}: {messages}"
    return messages


def _backlog(topic: str) -> Any:
    from streamsync.outbox.backlog import backlog

    return backlog(topic)


def test_a_users_vlan_changes_reach_the_topic_as_envelopes(
    broker: Any, alice: Any, group: str, kafka_bootstrap: str
) -> None:
    from nautobot.extras.context_managers import web_request_context
    from nautobot.extras.models import ObjectChange, Status
    from nautobot.ipam.models import VLAN, VLANGroup

    active = Status.objects.get(name="Active")
    with web_request_context(alice, context_detail="manual"):
        vlan = VLAN.objects.create(vid=10, name="users", status=active, vlan_group=VLANGroup.objects.get(name=group))
    with web_request_context(alice):
        vlan.description = "floor 3"
        vlan.validated_save()
    vlan_pk = vlan.pk
    with web_request_context(alice):
        vlan.delete()

    assert _backlog(broker.topic).count == 3, "one outbox row per change, before any relay ran"
    result = _relay(kafka_bootstrap, broker.topic)
    assert not result.error
    assert _backlog(broker.topic).count == 0, "delivered rows are deleted"

    messages = _read(kafka_bootstrap, broker.topic, 3)
    key = _vlan_key(10, group)
    assert [m.key for m in messages] == [key] * 3, "canonical key as message key: one partition, in order"
    created, updated, deleted = (m.event for m in messages)
    assert [e.op for e in (created, updated, deleted)] == [Op.UPSERT, Op.UPSERT, Op.DELETE]
    assert {e.source for e in (created, updated, deleted)} == {"nautobot"}
    assert {e.model for e in (created, updated, deleted)} == {"vlan"}
    assert {e.canonical_key for e in (created, updated, deleted)} == {key}
    assert created.key == {"vid": 10, "vlan_group__name": group}
    assert created.attrs == {
        "name": "users",
        "status__name": "Active",
        "role__name": None,
        "tenant__name": None,
        "description": "",
        "tags": [],
    }
    assert updated.attrs["description"] == "floor 3" and set(updated.attrs) == VLAN_ATTRS
    assert deleted.attrs == {}
    assert len({e.id for e in (created, updated, deleted)}) == 3

    # Tracing: the change log entries behind each event, in Kafka headers (the envelope is unchanged).
    changes = {str(oc.pk): oc for oc in ObjectChange.objects.filter(changed_object_id=vlan_pk)}
    for message, action in zip(messages, ("create", "update", "delete"), strict=True):
        change = changes[message.headers["nautobot-change-id"]]
        assert change.action == action == message.headers["nautobot-action"]
        assert message.headers["nautobot-request-id"] == str(change.request_id)
        assert message.headers["nautobot-user"] == "alice"
        assert "streamsync-origin" not in message.headers
        assert message.event.ts == change.time


def test_a_change_through_the_rest_api_reaches_the_topic(
    broker: Any, alice: Any, group: str, kafka_bootstrap: str
) -> None:
    from django.contrib.contenttypes.models import ContentType
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup
    from nautobot.users.models import ObjectPermission, Token
    from rest_framework.test import APIClient

    # alice may manage VLANs and see the groups and statuses they refer to, nothing more.
    for actions, models in ((["add", "change", "delete", "view"], [VLAN]), (["view"], [VLANGroup, Status])):
        permission = ObjectPermission.objects.create(name=f"p-{uuid.uuid4().hex[:8]}", actions=actions)
        permission.users.add(alice)
        permission.object_types.add(*ContentType.objects.get_for_models(*models).values())
    token = Token.objects.create(user=alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    created = client.post(
        "/api/ipam/vlans/",
        {
            "vid": 20,
            "name": "api",
            "status": str(Status.objects.get(name="Active").pk),
            "vlan_group": str(VLANGroup.objects.get(name=group).pk),
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    url = f"/api/ipam/vlans/{created.json()['id']}/"
    updated = client.patch(url, {"description": "via api"}, format="json")
    assert updated.status_code == 200, updated.content
    assert client.delete(url).status_code == 204

    assert _relay(kafka_bootstrap, broker.topic).delivered == 3
    messages = _read(kafka_bootstrap, broker.topic, 3)
    assert [(m.event.op, m.event.attrs.get("description")) for m in messages] == [
        (Op.UPSERT, ""),
        (Op.UPSERT, "via api"),
        (Op.DELETE, None),
    ]
    assert {m.key for m in messages} == {_vlan_key(20, group)}
    assert {m.headers["nautobot-change-context"] for m in messages} == {"Web"}
    assert {m.headers["nautobot-user"] for m in messages} == {"alice"}


def test_a_key_change_is_a_delete_of_the_old_key_and_nothing_synced_changed_is_nothing(
    broker: Any, alice: Any, group: str, kafka_bootstrap: str
) -> None:
    from nautobot.extras.context_managers import web_request_context
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    with web_request_context(alice):
        vlan = VLAN.objects.create(
            vid=30, name="x", status=Status.objects.get(name="Active"), vlan_group=VLANGroup.objects.get(name=group)
        )
    with web_request_context(alice):
        vlan.save()  # no synced attribute changes: nothing to tell
    with web_request_context(alice):
        vlan.vid = 31
        vlan.validated_save()

    assert _backlog(broker.topic).count == 3, "create; then nothing; then delete 30 and upsert 31"
    _relay(kafka_bootstrap, broker.topic)
    per_key: dict[str, list[Message]] = {}
    for message in _read(kafka_bootstrap, broker.topic, 3):  # in order per key (per partition)
        per_key.setdefault(message.key, []).append(message)
    assert {key: [m.event.op for m in messages] for key, messages in per_key.items()} == {
        _vlan_key(30, group): [Op.UPSERT, Op.DELETE],
        _vlan_key(31, group): [Op.UPSERT],
    }
    assert per_key[_vlan_key(31, group)][0].event.attrs["name"] == "x"


def test_streamsyncs_own_changes_carry_their_origin_and_others_do_not(
    broker: Any, alice: Any, group: str, kafka_bootstrap: str
) -> None:
    from nautobot.extras.context_managers import web_request_context
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    from streamsync.models.ipam import VLANModel
    from streamsync.outbox.broker import applied_by_streamsync, origin
    from streamsync.sync.batch import Outcome
    from streamsync.sync.engine import SyncEngine
    from streamsync.sync.permissions import set_up_writer
    from streamsync.sync.registry import ModelRegistry

    event = Event(
        source="ipam", model="vlan", op=Op.UPSERT, key={"vid": 40, "vlan_group__name": group}, attrs={"name": "e"}
    )
    engine = SyncEngine(ModelRegistry([VLANModel]), set_up_writer("streamsync", [VLANModel]))
    result = engine.apply([event], source="ipam")
    assert [o.outcome for o in result.objects] == [Outcome.CREATED]
    # A user's change that claims to be streamsync's is still the user's: the detail alone does not count.
    with web_request_context(alice, context_detail="streamsync:ipam"):
        VLAN.objects.create(
            vid=41, name="u", status=Status.objects.get(name="Active"), vlan_group=VLANGroup.objects.get(name=group)
        )

    _relay(kafka_bootstrap, broker.topic)
    by_key = {m.key: m for m in _read(kafka_bootstrap, broker.topic, 2)}
    own, users = by_key[_vlan_key(40, group)], by_key[_vlan_key(41, group)]
    assert own.event.attrs["name"] == "e" and own.event.op is Op.UPSERT
    assert own.headers["nautobot-user"] == "streamsync"
    assert origin(list(own.headers.items())) == "ipam", "a consumer writing to ipam skips this one"
    assert origin(list(users.headers.items())) is None

    assert applied_by_streamsync("streamsync:ipam", "streamsync", "streamsync") == "ipam"
    assert applied_by_streamsync("streamsync", "streamsync", "streamsync") == ""
    note = "resync started by alice (job result 1f0e)"  # who caused the writes, for people reading the change log
    assert applied_by_streamsync(f"streamsync:ipam {note}", "streamsync", "streamsync") == "ipam"
    assert applied_by_streamsync(f"streamsync {note}", "streamsync", "streamsync") == ""
    assert applied_by_streamsync("streamsync:ipam-x", "streamsync", "streamsync") == "ipam-x"
    assert applied_by_streamsync("streamsync:ipam", "alice", "streamsync") is None
    assert applied_by_streamsync("dcim:device_edit", "streamsync", "streamsync") is None


def _published(topic: str, group: str) -> list[tuple[Any, ...]]:
    """The outbox rows of `topic` naming VLAN group `group`, in order, without the group, ids and times.

    The change-id and request-id headers are checked against the ObjectChange they name.
    """
    from nautobot.extras.models import ObjectChange

    from streamsync.models.bookkeeping import OutboxEvent

    rows = []
    for row in OutboxEvent.objects.filter(topic=topic).order_by("id"):
        event = decode(row.value.encode())
        if event.key.get("vlan_group__name") != group:
            continue
        headers = dict(row.headers)
        change = ObjectChange.objects.get(pk=headers.pop("nautobot-change-id"))
        assert change.action == headers["nautobot-action"]
        assert str(change.request_id) == headers.pop("nautobot-request-id")
        rows.append(
            (
                event.op,
                event.key["vid"],
                json.dumps(event.attrs, sort_keys=True),
                sorted(headers.items()),
                change.changed_object_type.model,
            )
        )
    return rows


def test_the_events_of_a_change_context_in_a_transaction_equal_those_published_one_by_one(
    broker: Any, alice: Any
) -> None:
    """Inside a transaction the broker reads a context's changes and objects together; what it writes is the same."""
    from django.db import transaction
    from nautobot.extras.context_managers import web_request_context
    from nautobot.extras.models import Status, Tag
    from nautobot.ipam.models import VLAN, VLANGroup

    active = Status.objects.get(name="Active")
    tag, _ = Tag.objects.get_or_create(name="streamsync-broker-memo")
    groups = {}
    for way in ("together", "alone"):
        group = VLANGroup.objects.create(name=f"memo-{way}-{uuid.uuid4().hex[:6]}")
        for vid in (10, 11, 13, 14):
            VLAN.objects.create(vid=vid, name=f"v{vid}", status=active, vlan_group=group)
        groups[way] = group

    def changes(group: Any) -> None:
        with web_request_context(alice, context_detail="memo"):
            for vid in range(1, 6):
                VLAN.objects.create(vid=vid, name=f"new{vid}", status=active, vlan_group=group)
            updated = VLAN.objects.get(vid=10, vlan_group=group)
            updated.description = "changed"
            updated.validated_save()
            updated.tags.add(tag)
            rekeyed = VLAN.objects.get(vid=11, vlan_group=group)
            rekeyed.vid = 12
            rekeyed.validated_save()
            VLAN.objects.create(vid=20, name="brief", status=active, vlan_group=group).delete()
            VLAN.objects.get(vid=13, vlan_group=group).delete()
            same = VLAN.objects.get(vid=14, vlan_group=group)
            same.validated_save()  # saved, nothing synced changed

    with transaction.atomic():
        changes(groups["together"])
    changes(groups["alone"])

    together = _published(broker.topic, groups["together"].name)
    alone = _published(broker.topic, groups["alone"].name)
    assert together == alone
    assert [(op, vid) for op, vid, *_ in together] == [
        *[(Op.UPSERT, vid) for vid in range(1, 6)],
        (Op.UPSERT, 10),
        (Op.DELETE, 11),
        (Op.UPSERT, 12),
        (Op.DELETE, 13),
    ]
    assert json.loads(together[5][2])["tags"] == [{"name": "streamsync-broker-memo"}]


def test_the_engines_changes_publish_the_events_a_users_same_changes_publish(broker: Any, alice: Any) -> None:
    """The engine hands the broker the views it loaded before its changes; the events are those of a reload."""
    from django.db import transaction
    from nautobot.extras.context_managers import web_request_context
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    from streamsync.models.ipam import VLANModel
    from streamsync.sync.engine import Outcome, SyncEngine
    from streamsync.sync.permissions import set_up_writer
    from streamsync.sync.registry import ModelRegistry

    active = Status.objects.get(name="Active")
    groups = {}
    for way in ("engine", "user"):
        group = VLANGroup.objects.create(name=f"loaded-{way}-{uuid.uuid4().hex[:6]}")
        for vid in (10, 13, 14):
            VLAN.objects.create(vid=vid, name=f"v{vid}", status=active, vlan_group=group, description="before")
        groups[way] = group

    def event(vid: int, op: Op = Op.UPSERT, **attrs: Any) -> Event:
        key = {"vid": vid, "vlan_group__name": groups["engine"].name}
        return Event(source="ipam", model="vlan", op=op, key=key, attrs=attrs)

    engine = SyncEngine(ModelRegistry([VLANModel]), set_up_writer("streamsync", [VLANModel]))
    result = engine.apply(
        [event(10, description="after"), event(13, Op.DELETE), event(14, description="before")], source="ipam"
    )
    assert [o.outcome for o in result.objects] == [Outcome.UPDATED, Outcome.DELETED, Outcome.UNCHANGED]
    with transaction.atomic(), web_request_context(alice):
        user = groups["user"]
        changed = VLAN.objects.get(vid=10, vlan_group=user)
        changed.description = "after"
        changed.validated_save()
        VLAN.objects.get(vid=13, vlan_group=user).delete()

    def essence(group: Any) -> list[tuple[Any, ...]]:
        return [(op, vid, attrs) for op, vid, attrs, *_ in _published(broker.topic, group.name)]

    assert essence(groups["engine"]) == essence(groups["user"])
    assert [(op, vid) for op, vid, _ in essence(groups["engine"])] == [(Op.UPSERT, 10), (Op.DELETE, 13)]
    assert json.loads(essence(groups["engine"])[0][2])["description"] == "after"


def test_a_rolled_back_change_leaves_no_event(broker: Any, alice: Any, group: str) -> None:
    from django.db import transaction
    from nautobot.extras.context_managers import web_request_context
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic(), web_request_context(alice):
        VLAN.objects.create(
            vid=50, name="gone", status=Status.objects.get(name="Active"), vlan_group=VLANGroup.objects.get(name=group)
        )
        raise Abort
    assert not VLAN.objects.filter(vid=50, vlan_group__name=group).exists()
    assert _backlog(broker.topic).count == 0


def test_with_kafka_unreachable_a_change_succeeds_at_once_and_its_event_waits(
    broker: Any, alice: Any, group: str, kafka_bootstrap: str
) -> None:
    from nautobot.extras.context_managers import web_request_context
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    active, vlan_group = Status.objects.get(name="Active"), VLANGroup.objects.get(name=group)
    started = time.perf_counter()
    with web_request_context(alice):
        VLAN.objects.create(vid=60, name="offline", status=active, vlan_group=vlan_group)
    took = time.perf_counter() - started
    # Far below any Kafka client timeout (the relay's send timeout is 15 s): the change never waits for Kafka.
    assert took < 5.0, f"the change took {took:.2f}s"

    started = time.perf_counter()
    failed = _relay("127.0.0.1:1", broker.topic, send_timeout=5.0)
    assert failed.error and failed.delivered == 0, failed
    assert time.perf_counter() - started < 10
    waiting = _backlog(broker.topic)
    assert waiting.count == 1 and waiting.max_attempts == 1 and "127.0.0.1" in waiting.last_error, waiting
    assert waiting.oldest_age_seconds > 0

    delivered = _relay(kafka_bootstrap, broker.topic)
    assert delivered.delivered == 1 and not delivered.error
    assert _backlog(broker.topic).count == 0
    [message] = _read(kafka_bootstrap, broker.topic, 1)
    assert message.key == _vlan_key(60, group) and message.event.attrs["name"] == "offline"


def test_a_running_worker_relays_user_changes_and_marks_its_own(
    broker: Any, alice: Any, group: str, stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    """End to end: a source's event applied by a worker comes back marked; a user's change arrives promptly."""
    from nautobot.extras.context_managers import web_request_context
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    worker = start_worker("--source", "ipam", "--batch-timeout", "0.2")
    line = {
        "schema": "streamsync.event/v1",
        "id": str(uuid.uuid4()),
        "source": "ipam",
        "model": "vlan",
        "op": "upsert",
        "key": {"vid": 70, "vlan_group__name": group},
        "attrs": {"name": "from-ipam"},
        "ts": "2026-11-25T17:00:00Z",
    }
    path = tmp_path / "ipam.jsonl"
    path.write_text(json.dumps(line) + "\n")
    published = stream.cli("publish", "ipam", str(path))
    assert published.returncode == 0, published.stderr
    wait_for(lambda: VLAN.objects.filter(vid=70, vlan_group__name=group).exists(), 120, "VLAN 70 applied", worker)

    with web_request_context(alice):
        VLAN.objects.create(
            vid=71,
            name="by-alice",
            status=Status.objects.get(name="Active"),
            vlan_group=VLANGroup.objects.get(name=group),
        )
    committed = time.time()
    messages = _read(stream.bootstrap, broker.topic, 2, timeout=60)
    seen = time.time()
    by_key = {m.key: m for m in messages}
    assert by_key[_vlan_key(70, group)].headers.get("streamsync-origin") == "ipam"
    users = by_key[_vlan_key(71, group)]
    assert "streamsync-origin" not in users.headers and users.event.attrs["name"] == "by-alice"
    # The relay polls every 0.2 s; the bound is generous for a loaded machine.
    assert users.timestamp_ms / 1000 - committed < 5.0, f"produced {users.timestamp_ms / 1000 - committed:.3f}s after"
    assert seen - committed < 10.0
    wait_for(lambda: _backlog(broker.topic).count == 0, 30, "the outbox drained", worker)
    assert worker.stop() == 0
