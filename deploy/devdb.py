"""Migrated Nautobot databases in seconds, for the local stack, the demo and the tests (development only).

Migrating Nautobot 3.2 from scratch takes minutes. We migrate once into a template database
whose name is keyed by the migration graph (every app's leaf migrations plus Nautobot's
version), then clone it with `CREATE DATABASE ... TEMPLATE`, which takes about a second.

    python -m deploy.devdb template        # build the template if this code base has none
    python -m deploy.devdb create NAME     # (re)create NAME as a fresh migrated database
    python -m deploy.devdb drop NAME
    python -m deploy.devdb generated SEED  # a template holding Nautobot's generated test data for SEED
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

TEMPLATE_PREFIX = "streamsync_tpl_"
GENERATED_PREFIX = "streamsync_gen_"
KEEP_OTHER_TEMPLATES = 3


def _setup() -> None:
    from streamsync.cli.nautobot_setup import setup

    setup()


@contextmanager
def _admin() -> Iterator[Any]:
    """A cursor on the server's maintenance database, autocommit (CREATE DATABASE refuses transactions)."""
    import psycopg2
    from django.conf import settings

    db = settings.DATABASES["default"]
    conn = psycopg2.connect(
        dbname="postgres",
        user=db["USER"],
        password=db["PASSWORD"],
        host=db["HOST"],
        port=db["PORT"] or None,
        connect_timeout=10,
    )
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def template_name() -> str:
    """The template's name for the migrations this installation has."""
    import nautobot
    from django.db.migrations.loader import MigrationLoader

    _setup()
    leaves = sorted(
        f"{app}.{name}" for app, name in MigrationLoader(None, ignore_no_migrations=True).graph.leaf_nodes()
    )
    own = [f"{name}:{digest}" for name, digest in _own_migrations().items()]  # edited in place while developed
    digest = hashlib.sha256("\n".join([nautobot.__version__, *leaves, *own]).encode()).hexdigest()[:16]
    return TEMPLATE_PREFIX + digest


def _exists(cur: Any, name: str) -> bool:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    return cur.fetchone() is not None


def _drop(cur: Any, name: str) -> None:
    cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    cur.execute(f'DROP DATABASE IF EXISTS "{name}"')


def ensure_template() -> str:
    """Return the template's name, migrating a new one first when this installation has none."""
    name = template_name()
    with _admin() as cur:
        if _exists(cur, name):
            return name
        # One builder at a time (parallel test runs); the lock ends with the connection.
        cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (TEMPLATE_PREFIX,))
        if _exists(cur, name):
            return name
        build = name + "_build"
        _drop(cur, build)
        started = time.monotonic()
        base = _reusable_template(cur)
        if base:
            # Same Nautobot, fewer migrations (a new migration of an app): apply only what is new.
            cur.execute(f'CREATE DATABASE "{build}" TEMPLATE "{base}"')
            click.echo(f"migrating template {base} forward into {name}", err=True)
        else:
            cur.execute(f'CREATE DATABASE "{build}"')
            click.echo(f"migrating a new Nautobot template database {name} (a few minutes, once per version)", err=True)
        _server(cur, build, ["migrate", "--no-input"])
        _drop_connections_and_rename(cur, build, name)
        cur.execute(f'COMMENT ON DATABASE "{name}" IS %s', (_comment(),))
        _prune(cur, TEMPLATE_PREFIX, name)
        click.echo(f"template {name} ready in {time.monotonic() - started:.0f}s", err=True)
    return name


COMMENT_PREFIX = "streamsync template "


def _own_migrations() -> dict[str, str]:
    """The digest of each of streamsync's migration files: they change in place while being developed."""
    import streamsync

    folder = Path(streamsync.__file__).parent / "migrations"
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in sorted(folder.glob("0*.py"))}


def _comment() -> str:
    import nautobot

    return COMMENT_PREFIX + json.dumps({"nautobot": nautobot.__version__, "streamsync": _own_migrations()})


def _reusable_template(cur: Any) -> str | None:
    """A template to migrate forward instead of from scratch: same Nautobot, streamsync migrations unedited."""
    import nautobot

    cur.execute(
        "SELECT d.datname, s.description FROM pg_database d JOIN pg_shdescription s ON s.objoid = d.oid "
        "WHERE d.datname LIKE %s AND d.datistemplate AND s.description LIKE %s ORDER BY d.oid DESC",
        (TEMPLATE_PREFIX + "%", COMMENT_PREFIX + "%"),
    )
    current = _own_migrations()
    for name, description in cur.fetchall():
        try:
            recorded = json.loads(description[len(COMMENT_PREFIX) :])
        except ValueError:
            continue
        same_files = all(current.get(f) == digest for f, digest in recorded.get("streamsync", {}).items())
        if recorded.get("nautobot") == nautobot.__version__ and same_files:
            return str(name)
    return None


def _server(cur: Any, database: str, command: list[str]) -> None:
    """Run a `nautobot-server` command on `database`; on failure drop it and fail with the command's output."""
    env = {**os.environ, "NAUTOBOT_DB_NAME": database}
    result = subprocess.run(["nautobot-server", *command], env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        _drop(cur, database)
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise click.ClickException(f"nautobot-server {command[0]} failed with exit code {result.returncode}")


def _prune(cur: Any, prefix: str, keep: str) -> None:
    """Drop the oldest templates named `prefix...` beyond KEEP_OTHER_TEMPLATES besides `keep`.

    A few are kept: checkouts of other branches may want them.
    """
    cur.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s AND datname <> %s ORDER BY oid DESC OFFSET %s",
        (prefix + "%", keep, KEEP_OTHER_TEMPLATES),
    )
    for (old,) in cur.fetchall():
        cur.execute(f'ALTER DATABASE "{old}" WITH IS_TEMPLATE false')
        _drop(cur, old)


def _drop_connections_and_rename(cur: Any, build: str, name: str) -> None:
    cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (build,))
    cur.execute(f'ALTER DATABASE "{build}" RENAME TO "{name}"')
    cur.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true')


def create_database(name: str, template: str | None = None) -> None:
    """Replace database `name` with a fresh clone of the migrated template (or of `template`)."""
    template = template or ensure_template()
    with _admin() as cur:
        _drop(cur, name)
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


def ensure_generated(seed: str) -> str:
    """A template database with Nautobot's `generate_test_data --seed SEED` in it; its name.

    Generating takes minutes (factory-boy, a test dependency): it runs once per migrated template
    and seed, and later runs clone the result in a second.
    """
    base = ensure_template()
    name = GENERATED_PREFIX + hashlib.sha256(f"{base}\n{seed}".encode()).hexdigest()[:16]
    with _admin() as cur:
        if _exists(cur, name):
            return name
        cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (GENERATED_PREFIX,))
        if _exists(cur, name):
            return name
        build = name + "_build"
        _drop(cur, build)
        cur.execute(f'CREATE DATABASE "{build}" TEMPLATE "{base}"')
        started = time.monotonic()
        click.echo(f"generating Nautobot's test data (seed {seed!r}) into {name} (minutes, once)", err=True)
        # Nautobot's migrations leave content types of models it has since removed (dcim.site, ...);
        # its factories call model_class() on every content type and fail on those.
        _server(cur, build, ["remove_stale_contenttypes", "--include-stale-apps", "--no-input"])
        _server(cur, build, ["generate_test_data", "--seed", seed, "--no-input"])
        _drop_connections_and_rename(cur, build, name)
        _prune(cur, GENERATED_PREFIX, name)
        click.echo(f"generated data {name} ready in {time.monotonic() - started:.0f}s", err=True)
    return name


def drop_database(name: str) -> None:
    """Drop database `name`, disconnecting its sessions first."""
    _setup()
    with _admin() as cur:
        _drop(cur, name)


@click.group()
def cli() -> None:
    """Template-backed Nautobot databases for development and tests."""


@cli.command("template")
def template_cmd() -> None:
    """Build the migrated template database if missing, print its name."""
    click.echo(ensure_template())


@cli.command("create")
@click.argument("name")
def create_cmd(name: str) -> None:
    """(Re)create NAME as a fresh, migrated Nautobot database."""
    create_database(name)
    click.echo(name)


@cli.command("generated")
@click.argument("seed")
def generated_cmd(seed: str) -> None:
    """Build the template of generated test data for SEED if missing, print its name."""
    click.echo(ensure_generated(seed))


@cli.command("drop")
@click.argument("name")
def drop_cmd(name: str) -> None:
    """Drop database NAME."""
    drop_database(name)


if __name__ == "__main__":
    cli()
