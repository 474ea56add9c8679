"""The Nautobot user streamsync writes as holds the object permissions of its models, and no more."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stream, wait_for, write_nautobot_config
from tests.integration.state_helpers import publish, vlan_event

pytestmark = pytest.mark.integration

VLAN_PERMS = ["ipam.view_vlan", "ipam.add_vlan", "ipam.change_vlan", "ipam.delete_vlan"]


def _username() -> str:
    return f"ss-{uuid.uuid4().hex[:8]}"


def _fresh(username: str) -> Any:
    """The user as stored (Nautobot caches object permissions on a user instance)."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username)


def test_a_missing_user_is_created_with_one_permission_on_exactly_its_models() -> None:
    from nautobot.ipam.models import VLAN
    from nautobot.users.models import ObjectPermission

    from streamsync.sync.permissions import ensure_permitted

    username = _username()
    granted = ensure_permitted(username, [VLAN])
    assert granted is not None and granted.created_user and granted.added_models == ["ipam.vlan"]
    user = _fresh(username)
    assert not (user.is_staff or user.is_superuser or user.has_usable_password())
    [permission] = ObjectPermission.objects.filter(users=user)
    assert permission.name == f"streamsync: {username}"
    assert sorted(permission.actions) == ["add", "change", "delete", "view"]
    assert [f"{ct.app_label}.{ct.model}" for ct in permission.object_types.all()] == ["ipam.vlan"]
    assert user.has_perms(VLAN_PERMS)
    assert not user.has_perm("ipam.add_prefix") and not user.has_perm("dcim.delete_device")
    assert ensure_permitted(username, [VLAN]) is None  # there now: nothing to do


def test_the_engine_never_creates_its_user_and_writes_nothing_as_one_that_may_not() -> None:
    """Every batch checks its writer first, in its transaction: missing, inactive or short of a permission, no write."""
    from django.contrib.auth import get_user_model
    from nautobot.ipam.models import VLAN, VLANGroup
    from nautobot.users.models import ObjectPermission

    from streamsync.contract.envelope import Event, Op
    from streamsync.models.ipam import VLANModel
    from streamsync.sync.engine import SyncEngine
    from streamsync.sync.permissions import Blocked, Writer, WriterBlocked, grant
    from streamsync.sync.registry import ModelRegistry

    username = _username()
    group = f"w-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    engine = SyncEngine(ModelRegistry([VLANModel]), Writer.of(username, [VLANModel]))
    key: dict[str, Any] = {"vid": 7, "vlan_group__name": group}
    batch = [Event(source="ipam", model="vlan", op=Op.UPSERT, key=key, attrs={"name": "seven"})]

    def refused(reason: Blocked, missing: list[str]) -> None:
        with pytest.raises(WriterBlocked) as blocked:
            engine.apply(batch, source="ipam")
        assert (blocked.value.username, blocked.value.reason, blocked.value.missing) == (username, reason, missing)
        assert not VLAN.objects.filter(vlan_group__name=group).exists()

    refused(Blocked.USER_MISSING, VLAN_PERMS)
    assert not get_user_model().objects.filter(username=username).exists(), "the engine created its user"
    with pytest.raises(WriterBlocked, match="does not exist: streamsync does not write as it; grant them"):
        engine.apply([], source="ipam")  # a batch with nothing to write is checked too

    grant(username, [VLAN])
    get_user_model().objects.filter(username=username).update(is_active=False)
    refused(Blocked.USER_INACTIVE, VLAN_PERMS)
    get_user_model().objects.filter(username=username).update(is_active=True)
    permission = ObjectPermission.objects.get(name=f"streamsync: {username}")
    permission.actions = ["view", "add", "change"]
    permission.save()
    refused(Blocked.PERMISSION_MISSING, ["ipam.delete_vlan"])

    grant(username, [VLAN])
    result = engine.apply(batch, source="ipam")
    assert [o.outcome.value for o in result.objects] == ["created"]
    assert VLAN.objects.get(vlan_group__name=group, vid=7).name == "seven"
    assert result.timings["check"] < result.timings["total"]


def test_the_per_batch_check_is_nautobots_rule_in_two_queries() -> None:
    """`standing` agrees with Nautobot's own `has_perm` in every case that matters, at two queries per check."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection
    from django.test import override_settings
    from django.test.utils import CaptureQueriesContext
    from nautobot.ipam.models import VLAN, VLANGroup
    from nautobot.users.models import ObjectPermission

    from streamsync.sync.permissions import required, standing

    wanted = required([VLAN, VLANGroup])
    users = get_user_model().objects

    def permission(actions: list[str], *models: Any, enabled: bool = True) -> Any:
        made = ObjectPermission.objects.create(name=f"p-{uuid.uuid4().hex[:8]}", actions=actions, enabled=enabled)
        made.object_types.add(*ContentType.objects.get_for_models(*models).values())
        return made

    direct, via_group, disabled, superuser, inactive, nothing, exempt = (_username() for _ in range(7))
    for name in (direct, via_group, disabled, inactive, nothing, exempt):
        users.create_user(username=name)
    users.create_user(username=superuser, is_superuser=True)
    permission(["view", "add", "change", "delete"], VLAN).users.add(users.get(username=direct))
    permission(["view", "change"], VLANGroup).users.add(users.get(username=direct))
    team = Group.objects.create(name=f"g-{uuid.uuid4().hex[:8]}")
    team.user_set.add(users.get(username=via_group))
    permission(["view", "add", "change", "delete"], VLAN, VLANGroup).groups.add(team)
    permission(["view", "add", "change", "delete"], VLAN, VLANGroup, enabled=False).users.add(
        users.get(username=disabled)
    )
    permission(["view", "add", "change", "delete"], VLAN).users.add(users.get(username=inactive))
    users.filter(username=inactive).update(is_active=False)
    permission(["add", "change", "delete"], VLAN).users.add(users.get(username=exempt))

    with override_settings(EXEMPT_VIEW_PERMISSIONS=["ipam.vlan"]):
        for name in (direct, via_group, disabled, superuser, nothing, exempt):
            nautobots = [perm for perm in wanted if not _fresh(name).has_perm(perm)]
            assert list(standing(name, wanted).missing) == nautobots, name
        assert list(standing(exempt, wanted).missing) == [p for p in wanted if p.endswith("vlangroup")]
        # Nautobot grants an inactive user the exempt permissions; streamsync writes nothing as one.
        assert list(standing(inactive, wanted).missing) == wanted
        assert standing(inactive, wanted).blocked == "user_inactive"
    assert list(standing(direct, wanted).missing) == ["ipam.add_vlangroup", "ipam.delete_vlangroup"]
    assert list(standing(exempt, wanted).missing) == ["ipam.view_vlan", *[p for p in wanted if p.endswith("vlangroup")]]

    for name in (direct, via_group):
        with CaptureQueriesContext(connection) as captured:
            standing(name, wanted)
        assert len(captured) == 2, [q["sql"] for q in captured]


def test_a_user_lacking_permissions_is_refused_with_what_is_missing_and_grant_adds_only_that() -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from nautobot.ipam.models import VLAN, VLANGroup
    from nautobot.users.models import ObjectPermission

    from streamsync.sync.permissions import UserNotPermitted, ensure_permitted, grant

    username = _username()
    user = get_user_model().objects.create_user(username=username)
    readonly = ObjectPermission.objects.create(name=f"read vlans {username}", actions=["view", "add"])
    readonly.object_types.add(ContentType.objects.get_for_model(VLAN))
    readonly.users.add(user)

    with pytest.raises(UserNotPermitted) as refused:
        ensure_permitted(username, [VLAN])
    assert f"Nautobot user {username!r} lacks permissions" in str(refused.value)
    assert "ipam.change_vlan, ipam.delete_vlan. Grant them" in str(refused.value)
    assert "ipam.add_vlan" not in str(refused.value)

    first = grant(username, [VLAN])
    assert not first.created_user and first.added_models == ["ipam.vlan"]
    assert ensure_permitted(username, [VLAN]) is None
    second = grant(username, [VLAN, VLANGroup])  # a model configured since: the permission grows
    assert second.added_models == ["ipam.vlangroup"]
    assert grant(username, [VLAN, VLANGroup]).lines()[0].startswith("nothing to grant")

    get_user_model().objects.filter(username=username).update(is_active=False)
    with pytest.raises(UserNotPermitted, match="is inactive"):
        ensure_permitted(username, [VLAN])


def test_worker_refuses_a_user_without_delete_then_setup_user_fixes_it(
    stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from nautobot.extras.models import ObjectChange
    from nautobot.ipam.models import VLAN, VLANGroup
    from nautobot.users.models import ObjectPermission

    username = _username()
    config = write_nautobot_config(tmp_path / "nautobot_config.py", user=username)
    on = dataclasses.replace(stream, extra_env={**stream.extra_env, "NAUTOBOT_CONFIG": str(config)})
    user = get_user_model().objects.create_user(username=username)
    partial = ObjectPermission.objects.create(name=f"no delete {username}", actions=["view", "add", "change"])
    partial.object_types.add(ContentType.objects.get_for_model(VLAN))
    partial.users.add(user)

    refused = on.cli("worker", "--source", "ipam", timeout=90)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1] == (
        f"Error: Nautobot user {username!r} lacks permissions streamsync needs for the configured models: "
        "ipam.delete_vlan. Grant them (docs/security.md) or run: streamsync setup-user"
    )

    setup = on.cli("setup-user")
    assert setup.returncode == 0, setup.stderr
    assert setup.stdout.splitlines() == [
        f"created permission 'streamsync: {username}' (view, add, change, delete)",
        f"'streamsync: {username}': view, add, change, delete on ipam.vlan",
    ]
    again = on.cli("setup-user")
    assert again.returncode == 0 and again.stdout.startswith("nothing to grant"), again.stdout + again.stderr

    group = f"dc-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    worker = start_worker("--source", "ipam", "--batch-timeout", "0.2", on=on)
    publish(on, tmp_path, vlan_event("upsert", 42, group, name="least-privilege"))
    wait_for(lambda: VLAN.objects.filter(vlan_group__name=group, vid=42).exists(), 120, "the VLAN", worker)
    vlan = VLAN.objects.get(vlan_group__name=group, vid=42)
    assert set(ObjectChange.objects.filter(changed_object_id=vlan.pk).values_list("user_name", flat=True)) == {username}


def test_worker_creates_a_missing_user_and_says_so(stream: Stream, start_worker: Any, tmp_path: Path) -> None:
    from nautobot.ipam.models import VLAN, VLANGroup

    username = _username()
    config = write_nautobot_config(tmp_path / "nautobot_config.py", user=username)
    on = dataclasses.replace(stream, extra_env={**stream.extra_env, "NAUTOBOT_CONFIG": str(config)})
    group = f"dc-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    worker = start_worker("--source", "ipam", "--batch-timeout", "0.2", on=on)
    publish(on, tmp_path, vlan_event("upsert", 42, group, name="least-privilege"))
    wait_for(lambda: VLAN.objects.filter(vlan_group__name=group, vid=42).exists(), 120, "the VLAN", worker)
    created = [
        json.loads(line)
        for line in worker.output().splitlines()
        if '"created the Nautobot user streamsync writes as"' in line
    ]
    assert [(c["user"], c["permission"], c["models"]) for c in created] == [
        (username, f"streamsync: {username}", ["ipam.vlan"])
    ]
    user = _fresh(username)
    assert not (user.is_superuser or user.is_staff) and user.has_perms(VLAN_PERMS)


@dataclasses.dataclass
class _Wire:
    """Kafka as settling needs it, in memory: what was published, and a log without holes."""

    published: list[Any] = dataclasses.field(default_factory=list)

    def publish(self, records: Any) -> None:
        self.published += records

    def first_offset(self, topic: str, partition: int, offset: int) -> int:
        return offset


def test_a_blocked_source_settles_nothing_not_even_records_that_are_no_events() -> None:
    """A batch of records that are no events needs no write, and still waits: a blocked source's positions stop."""
    import functools

    from nautobot.ipam.models import VLAN

    from streamsync.contract.records import Origin, read_event
    from streamsync.models.bookkeeping import Position
    from streamsync.models.ipam import VLANModel
    from streamsync.settings import RetryPolicy
    from streamsync.sync.engine import SyncEngine
    from streamsync.sync.permissions import Writer, WriterBlocked, grant
    from streamsync.sync.registry import ModelRegistry
    from streamsync.sync.retry import apply_source
    from streamsync.sync.settle import Settling, settle

    username, group = _username(), f"g-{uuid.uuid4().hex[:6]}"
    source, topic = "ipam", f"t{uuid.uuid4().hex[:8]}.ipam.events"
    engine = SyncEngine(ModelRegistry([VLANModel]), Writer.of(username, [VLANModel]))
    how = Settling(
        group=group,
        agent="streamsync.sync.ipam",
        system=source,
        read=functools.partial(read_event, max_bytes=1 << 20),
        apply=functools.partial(apply_source, engine, source, policy=RetryPolicy(), state_topic="state"),
        dlq_topic="dlq",
        max_bytes=1 << 20,
    )
    garbage = [Origin(b"k", b"{oops", topic, 0, 0), Origin(b"k", None, topic, 0, 1)]
    wire = _Wire()

    with pytest.raises(WriterBlocked):
        settle(how, garbage, wire)
    assert wire.published == [] and not Position.objects.filter(group=group).exists()

    grant(username, [VLAN])
    settled = settle(how, garbage, wire)
    assert sorted(letter.code for _, letter in settled.letters) == ["not_json", "null_value"]
    assert len(wire.published) == 2
    assert Position.objects.get(group=group, topic=topic, partition=0).next_offset == 2
