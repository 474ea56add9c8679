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

    from streamsync.permissions import ensure_permitted

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


def test_the_engine_creates_its_user_with_its_registrys_permissions() -> None:
    from streamsync.engine import SyncEngine
    from streamsync.models.ipam import VLANGroupModel, VLANModel
    from streamsync.registry import ModelRegistry

    username = _username()
    user = SyncEngine(ModelRegistry([VLANGroupModel, VLANModel]), username=username)._user()
    assert user.username == username and not user.is_superuser
    assert _fresh(username).has_perms([*VLAN_PERMS, "ipam.delete_vlangroup"])


def test_a_user_lacking_permissions_is_refused_with_what_is_missing_and_grant_adds_only_that() -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from nautobot.ipam.models import VLAN, VLANGroup
    from nautobot.users.models import ObjectPermission

    from streamsync.permissions import UserNotPermitted, ensure_permitted, grant

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
