"""The Nautobot user streamsync writes as, and the object permissions it needs: no more.

Nautobot's ORM does not enforce object permissions (its views and API do), so streamsync checks
them itself before it writes: the user must hold view, add, change and delete on the Nautobot model
behind every model of the configured sources, through any ObjectPermission or group. A user that
does not exist yet is created with exactly that: not staff, not superuser, no usable password, and
one ObjectPermission named "streamsync: <user>". An existing user is never granted more by the
worker; `streamsync setup-user` does that on an operator's say-so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from diffsync import DiffSyncModel

if TYPE_CHECKING:
    from streamsync.settings import StreamsyncSettings

log = structlog.get_logger(__name__)

ACTIONS = ("view", "add", "change", "delete")


class UserNotPermitted(RuntimeError):
    """The configured user cannot do what streamsync would do as it; raised at start-up."""


@dataclass
class Granted:
    """What `grant` did, one readable line per change, for the operator and the log."""

    user: str
    permission: str
    changes: list[str] = field(default_factory=list)
    created_user: bool = False
    # Nautobot model labels ("ipam.vlan") the permission covers now and did not before.
    added_models: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The changes, or a line saying there was nothing to grant."""
        return self.changes or [
            f"nothing to grant: {self.user!r} already holds {self.permission!r} with {', '.join(ACTIONS)} "
            "on every configured model"
        ]


def permission_name(username: str) -> str:
    """The ObjectPermission streamsync creates and extends for `username`."""
    return f"streamsync: {username}"


def nautobot_models(models: Iterable[type[DiffSyncModel]]) -> list[Any]:
    """The Nautobot (Django) models behind DiffSync models bound with nautobot_ssot.contrib (`_model`)."""
    bound = [model for model in (getattr(m, "_model", None) for m in models) if model is not None]
    found = {model._meta.label_lower: model for model in bound}
    return [found[label] for label in sorted(found)]


def required(models: Iterable[Any]) -> list[str]:
    """Django permission names for every action on every model: `ipam.add_vlan`, ..."""
    return [f"{m._meta.app_label}.{action}_{m._meta.model_name}" for m in models for action in ACTIONS]


def missing(username: str, models: Iterable[Any]) -> list[str]:
    """The permissions `username` lacks on `models` (all of them when the user is missing or inactive)."""
    from django.contrib.auth import get_user_model

    # A fresh instance: Nautobot caches a user's object permissions on the instance.
    user = get_user_model().objects.filter(username=username).first()
    wanted = required(models)
    if user is None or not user.is_active:
        return wanted
    return [perm for perm in wanted if not user.has_perm(perm)]


def writer(username: str, models: Iterable[Any]) -> Any:
    """The user streamsync writes as; created with the permission on `models` if it does not exist yet."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        grant(username, models)
        user = get_user_model().objects.get(username=username)
    return user


def grant(username: str, models: Iterable[Any]) -> Granted:
    """Create the user if missing, and create or extend its "streamsync: <user>" permission to cover `models`.

    Idempotent: a second call with the same models grants nothing.
    """
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from django.db import transaction
    from nautobot.users.models import ObjectPermission

    models = list(models)
    name = permission_name(username)
    with transaction.atomic():
        user, created_user = get_user_model().objects.get_or_create(
            username=username, defaults={"is_staff": False, "is_superuser": False}
        )
        if created_user:
            user.set_unusable_password()
            user.save()
        permission, created_permission = ObjectPermission.objects.get_or_create(
            name=name,
            defaults={"actions": list(ACTIONS), "description": "streamsync writes its configured models as this user"},
        )
        granted = Granted(username, name, created_user=created_user)
        if created_user:
            granted.changes.append(f"created Nautobot user {username!r} (not staff, not superuser, no usable password)")
        if created_permission:
            granted.changes.append(f"created permission {name!r} ({', '.join(ACTIONS)})")
        lacking = [action for action in ACTIONS if action not in permission.actions]
        if lacking:
            permission.actions = [*permission.actions, *lacking]
            granted.changes.append(f"{name!r}: added actions {', '.join(lacking)}")
        disabled = not permission.enabled
        if disabled:
            permission.enabled = True
            granted.changes.append(f"{name!r}: enabled again")
        if lacking or disabled:
            permission.save()
        have = set(permission.object_types.values_list("pk", flat=True))
        types = ContentType.objects.get_for_models(*models)
        new = [types[m] for m in models if types[m].pk not in have]
        if new:
            permission.object_types.add(*new)
            granted.added_models = [f"{ct.app_label}.{ct.model}" for ct in new]
            granted.changes.append(f"{name!r}: {', '.join(ACTIONS)} on {', '.join(granted.added_models)}")
        if not permission.users.filter(pk=user.pk).exists():
            permission.users.add(user)
            if not created_permission:
                granted.changes.append(f"{name!r}: assigned to {username!r}")
    return granted


def ensure_permitted(username: str, models: Iterable[Any]) -> Granted | None:
    """Check at start-up that `username` may write `models`; create the user (and its permission) if missing.

    Returns what was created, or None when the user existed and holds every permission. Raises
    UserNotPermitted naming what is missing otherwise.
    """
    from django.contrib.auth import get_user_model

    models = list(models)
    if not models:
        return None
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        granted = grant(username, models)
        log.info(
            "created the Nautobot user streamsync writes as",
            user=username,
            permission=granted.permission,
            actions=list(ACTIONS),
            models=granted.added_models,
        )
        return granted
    if not user.is_active:
        raise UserNotPermitted(f"Nautobot user {username!r} is inactive: streamsync cannot write as it")
    lacking = missing(username, models)
    if lacking:
        raise UserNotPermitted(
            f"Nautobot user {username!r} lacks permissions streamsync needs for the configured models: "
            f"{', '.join(lacking)}. Grant them (docs/security.md) or run: streamsync setup-user"
        )
    return None


def source_models(settings: StreamsyncSettings, sources: Iterable[str]) -> list[Any]:
    """The Nautobot models the given sources write."""
    return nautobot_models(model for source in sources for model in settings.source(source).registry())


def check_worker_user(settings: StreamsyncSettings, sources: Iterable[str]) -> Granted | None:
    """`ensure_permitted` for a worker's sources, at start-up on the main thread (its connection is closed after)."""
    from django.db import connection

    try:
        return ensure_permitted(settings.user, source_models(settings, sources))
    finally:
        connection.close()
