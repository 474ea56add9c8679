"""The Nautobot user streamsync writes as, and the object permissions it needs: no more.

Nautobot's ORM does not enforce object permissions (its views and API do), so streamsync checks
them itself: the user must be active and hold view, add, change and delete on the Nautobot model
behind every model of a source, through any ObjectPermission or group. `standing` answers that in
two queries, by the rule of Nautobot's ObjectPermissionBackend; it is asked when a worker starts
(`ensure_permitted`) and again in every batch's transaction (`Writer`), so a user deactivated,
deleted or stripped of a permission while a worker runs stops the writes at the next batch.

Only the worker's start-up and `streamsync setup-user` create a missing user, with exactly that:
not staff, not superuser, no usable password, and one ObjectPermission named "streamsync: <user>".
An existing user is never granted more by the worker; `streamsync setup-user` does that on an
operator's say-so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import structlog
from diffsync import DiffSyncModel

from streamsync.sync.faults import OperatorFault

if TYPE_CHECKING:
    from streamsync.settings import StreamsyncSettings

log = structlog.get_logger(__name__)

ACTIONS = ("view", "add", "change", "delete")


# What to do about a user that may not write, for messages and logs.
FIX = "grant them (docs/security.md) or run: streamsync setup-user"


class UserNotPermitted(RuntimeError):
    """The configured user cannot do what streamsync would do as it; raised at start-up."""


class Blocked(StrEnum):
    """Why a user may not write: the `reason` of the log line and of `streamsync_writer_blocked`."""

    USER_MISSING = "user_missing"
    USER_INACTIVE = "user_inactive"
    PERMISSION_MISSING = "permission_missing"


@dataclass(frozen=True)
class Standing:
    """A user as the database has it now, and which of the wanted permissions it lacks."""

    username: str
    user: Any  # None when there is no such user
    missing: tuple[str, ...]

    @property
    def blocked(self) -> Blocked | None:
        """Why the user may not write, or None when it may."""
        if self.user is None:
            return Blocked.USER_MISSING
        if not self.user.is_active:
            return Blocked.USER_INACTIVE
        return Blocked.PERMISSION_MISSING if self.missing else None

    def describe(self) -> str:
        """One line saying why the user may not write (empty when it may)."""
        return {
            None: "",
            Blocked.USER_MISSING: f"Nautobot user {self.username!r} does not exist",
            Blocked.USER_INACTIVE: f"Nautobot user {self.username!r} is inactive",
            Blocked.PERMISSION_MISSING: f"Nautobot user {self.username!r} lacks {', '.join(self.missing)}",
        }[self.blocked]


class WriterBlocked(OperatorFault):
    """The user a batch would write as may not write (missing, inactive, or lacking a permission).

    An operator's fix, not the records' fault: the batch is not applied and not dead-lettered; the
    worker retries it with back-off and writes again once the user is put right.
    """

    def __init__(self, standing: Standing) -> None:
        self.standing = standing
        super().__init__(f"{standing.describe()}: streamsync does not write as it; {FIX}")

    @property
    def username(self) -> str:
        """The user in question."""
        return self.standing.username

    @property
    def reason(self) -> Blocked:
        """Why it may not write."""
        return self.standing.blocked or Blocked.PERMISSION_MISSING

    @property
    def missing(self) -> list[str]:
        """The permissions it lacks (all of them when it is missing or inactive)."""
        return list(self.standing.missing)


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


def standing(username: str, wanted: Sequence[str]) -> Standing:
    """The user and which of the `wanted` permissions it lacks (all when it is missing or inactive): two queries.

    Nautobot's ObjectPermissionBackend's rule, asked of the database directly: an active superuser
    holds everything; otherwise a permission is held through an enabled ObjectPermission assigned
    to the user or to one of its groups (constraints do not matter: streamsync writes through the
    ORM), or when Nautobot exempts it (EXEMPT_VIEW_PERMISSIONS). Always fresh: nothing is cached.
    """
    from django.contrib.auth import get_user_model
    from django.db.models import Q
    from nautobot.core.utils.permissions import permission_is_exempt
    from nautobot.users.models import ObjectPermission

    user = get_user_model().objects.filter(username=username).first()
    if user is None or not user.is_active:
        return Standing(username, user, tuple(wanted))
    if user.is_superuser:
        return Standing(username, user, ())
    # The backend's `Q(users=user) | Q(groups__user=user)` as two semi-joins: an OR across outer joins
    # misleads PostgreSQL's estimates on small tables (into JIT-compiling a 0.1 ms query for 30 ms).
    direct = ObjectPermission.users.through.objects.filter(user_id=user.pk).values("objectpermission_id")
    grouped = ObjectPermission.groups.through.objects.filter(group__user=user.pk).values("objectpermission_id")
    rows = (
        ObjectPermission.objects.filter(Q(pk__in=direct) | Q(pk__in=grouped), enabled=True, object_types__isnull=False)
        .order_by()
        .values_list("actions", "object_types__app_label", "object_types__model")
    )
    held = {f"{app_label}.{action}_{model}" for actions, app_label, model in rows for action in actions}
    return Standing(username, user, tuple(p for p in wanted if p not in held and not permission_is_exempt(p)))


@dataclass(frozen=True)
class Writer:
    """The user a source's batches write as, and the permissions each batch checks it holds.

    The engine calls `user()` at the start of every batch, inside the batch's transaction: a user
    that may not write raises WriterBlocked and nothing of the batch is applied. It never creates
    the user: one deleted while workers run stays deleted until an operator acts.
    """

    username: str
    needs: tuple[str, ...]

    @classmethod
    def of(cls, username: str, models: Iterable[type[DiffSyncModel]]) -> Writer:
        """The writer of a registry's (or any) DiffSync models: every action on each one's Nautobot model."""
        return cls(username, tuple(required(nautobot_models(models))))

    def standing(self) -> Standing:
        """The user and what it lacks, now (two queries)."""
        return standing(self.username, self.needs)

    def user(self) -> Any:
        """The user, if it may write every model; raises WriterBlocked otherwise."""
        found = self.standing()
        if found.blocked is not None:
            raise WriterBlocked(found)
        return found.user


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
    UserNotPermitted naming what is missing otherwise. Only a worker's start-up calls this: a
    batch checks the same rule (`Writer`) and never creates anything.
    """
    models = list(models)
    if not models:
        return None
    found = standing(username, required(models))
    if found.blocked is Blocked.USER_MISSING:
        granted = grant(username, models)
        log.info(
            "created the Nautobot user streamsync writes as",
            user=username,
            permission=granted.permission,
            actions=list(ACTIONS),
            models=granted.added_models,
        )
        return granted
    if found.blocked is Blocked.USER_INACTIVE:
        raise UserNotPermitted(f"Nautobot user {username!r} is inactive: streamsync cannot write as it")
    if found.blocked is Blocked.PERMISSION_MISSING:
        raise UserNotPermitted(
            f"Nautobot user {username!r} lacks permissions streamsync needs for the configured models: "
            f"{', '.join(found.missing)}. Grant them (docs/security.md) or run: streamsync setup-user"
        )
    return None


def set_up_writer(username: str, models: Iterable[type[DiffSyncModel]]) -> Writer:
    """Grant `username` what writing `models` needs, as `streamsync setup-user` does, and return its Writer.

    For scripts, benchmarks and tests that run the engine themselves.
    """
    models = list(models)
    grant(username, nautobot_models(models))
    return Writer.of(username, models)


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
