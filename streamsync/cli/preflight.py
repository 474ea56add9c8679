"""Start-up checks: refuse what cannot work, before anything runs, with one line saying why.

A worker that starts on a database without streamsync's tables, or with nowhere to keep faust's
data, fails later and less clearly: mid-batch, or with a bare `FileNotFoundError` from faust. These
checks run at every start, so they cost a few milliseconds (the migration check is one query on
Django's migration table plus reading the migration files, about 0.15 s).

The Kafka-side check (the state topic must be compacted) lives with the topic helpers in
`streamsync.kafka.connection` (`ensure_topics`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

APP_LABEL = "streamsync"
# How many migrations of other apps a refusal names before it only counts them.
SHOWN_MIGRATIONS = 5


class StartupRefused(RuntimeError):
    """Start-up cannot go on; the message is one line naming the problem and its fix."""


def prepare_data_dir(path: str | os.PathLike[str]) -> Path:
    """Create the directory faust keeps its local data in (parents included) and return it.

    faust's worker changes into its `datadir` and creates only its last component: on a machine
    where `~/.cache` does not exist yet it would die with a bare FileNotFoundError. The directory
    must be ours to write in, so a read-only one is refused here too, not at faust's first write.
    """
    where = Path(path).expanduser()
    hint = (
        'choose another with data_dir in PLUGINS_CONFIG["streamsync"] '
        "(default: $STREAMSYNC_HOME/faust, else ~/.cache/streamsync/faust)"
    )
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise StartupRefused(f"cannot create the data directory {where}: {reason}; {hint}") from None
    if not os.access(where, os.W_OK | os.X_OK):
        raise StartupRefused(f"the data directory {where} is not writable by this user; {hint}")
    return where


def missing_migrations(connection: Any = None, app_label: str = APP_LABEL) -> list[str]:
    """Migrations `app_label` needs that the database lacks, as `app.name`, in the order they would apply.

    Django's own planner decides, as `nautobot-server migrate` would: the app's leaf migrations,
    plus any migration of another app they depend on that is not applied either.
    """
    from django.db import connection as default_connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection or default_connection)
    leaves = [node for node in executor.loader.graph.leaf_nodes() if node[0] == app_label]
    return [f"{migration.app_label}.{migration.name}" for migration, _ in executor.migration_plan(leaves)]


def require_migrations(connection: Any = None, app_label: str = APP_LABEL) -> None:
    """Refuse unless every migration of `app_label` (and what it depends on) is applied.

    A database error (unreachable, refused password) is refused too, with the server's reason.
    """
    from django.db import DatabaseError

    try:
        missing = missing_migrations(connection, app_label)
    except DatabaseError as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise StartupRefused(f"cannot read the migrations applied to Nautobot's database: {reason}") from None
    if not missing:
        return
    own = [name for name in missing if name.startswith(f"{app_label}.")]
    others = [name for name in missing if not name.startswith(f"{app_label}.")]
    named = own + others[:SHOWN_MIGRATIONS]
    more = f" and {len(others) - SHOWN_MIGRATIONS} more" if len(others) > SHOWN_MIGRATIONS else ""
    raise StartupRefused(
        f"Nautobot's database lacks {len(missing)} migration(s) streamsync needs: {', '.join(named)}{more}; "
        "run `nautobot-server migrate` first"
    )
