"""A round trip on data nobody here wrote: Nautobot's own generated test data, through Kafka and a worker.

`nautobot-server generate_test_data` (factory-boy) fills a database with a fixed seed (made once,
then kept as a template: deploy/devdb.py). Every object of every model streamsync can sync is
exported as an upsert event, as a resync reads Nautobot; the events are shuffled with a fixed seed,
published, and applied by a real worker to a fresh database that has the same reference data (see
REFERENCE). The fresh database is then exported the same way and every field of every object is
compared with what was exported. The per-model report is printed; models the export leaves out
are named with the reason (docs/models.md lists them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ROOT, Stream, WorkerProcess, write_nautobot_config

# In every run (docs/models.md, "Round trip of Nautobot's generated test data"): about 14 minutes on
# 2 cores. `bash deploy/test.sh -m roundtrip` runs it alone.
pytestmark = [pytest.mark.integration, pytest.mark.roundtrip]

SEED = "streamsync-14"
SHUFFLE_SEED = 14
SOURCE = "generated"
# Reference data a deployment has before any source writes: copied from the generated database
# into the fresh one, its rows replacing the fresh database's own defaults. Users are not synced
# (docs/models.md) and saved views name their owner; statuses, roles and tags are synced too, so
# their events update what is there.
REFERENCE = ["users.user", "extras.status", "extras.role", "extras.tag"]
# How long the worker may take: 812 s measured on 2 cores (1,485 s before assignments were written
# in bulk); the report says how far it got when the budget runs out.
CONVERGE_TIMEOUT = float(os.getenv("STREAMSYNC_ROUNDTRIP_TIMEOUT", "1800"))
# What the fresh database has of its own: the permission `streamsync setup-user` grants the worker.
OWN = {json.dumps({"name": "streamsync: streamsync"})}
# Shuffled, a child may come thousands of events before its parent: the default policy gives up on
# a key after about four minutes of waiting, as it should for a live stream. A bulk load from a
# dump, as this is, retries for as long as the load lasts.
RETRY = {"max_attempts": 1000, "backoff": 1.0, "backoff_max": 15.0}


@pytest.fixture
def databases(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(the generated data, a fresh database with its reference data), the fresh one dropped after the test."""
    from deploy import devdb
    from tests.conftest import TEST_DB

    generated = devdb.ensure_generated(SEED)
    fresh = f"{TEST_DB}_rt"
    devdb.create_database(fresh)
    _copy_reference(generated, fresh, tmp_path / "reference.json")
    yield generated, fresh
    if not os.getenv("STREAMSYNC_KEEP_TEST_DB"):
        devdb.drop_database(fresh)


def _manage(database: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NAUTOBOT_DB_NAME": database}
    result = subprocess.run(
        ["nautobot-server", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, f"nautobot-server {args[0]} on {database}:\n{output}"
    return result


def _copy_reference(generated: str, fresh: str, path: Path) -> None:
    """The generated database's REFERENCE rows in place of the fresh one's (Nautobot's defaults)."""
    dump = _manage(generated, "dumpdata", "--natural-foreign", *REFERENCE).stdout
    script = (
        "from streamsync.cli.nautobot_setup import setup; setup()\n"
        "from django.apps import apps\n"
        f"for label in reversed({REFERENCE!r}): apps.get_model(label).objects.all().delete()\n"
    )
    subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "NAUTOBOT_DB_NAME": fresh}, check=True, capture_output=True
    )
    path.write_text(dump)
    _manage(fresh, "loaddata", str(path))


def _export(database: str, out: Path, names: list[str] | None = None) -> dict[str, Any]:
    """tests/integration/roundtrip_export.py run on `database`."""
    env = {**os.environ, "NAUTOBOT_DB_NAME": database}
    result = subprocess.run(
        [sys.executable, "-m", "tests.integration.roundtrip_export", str(out), *(names or [])],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"export of {database} failed:\n{result.stderr[-6000:]}"
    exported: dict[str, Any] = json.loads(out.read_text())
    return exported


def _by_key(objects: list[dict[str, Any]], to_many: list[str]) -> dict[str, dict[str, Any]]:
    """Objects by key; to-many attributes (content types, tags, ...) sorted, as Nautobot keeps them in no order.

    Other lists (a JSON custom field's, say) compare as they are.
    """
    return {json.dumps(obj["key"], sort_keys=True): _sorted(obj["attrs"], to_many) for obj in objects}


def _sorted(attrs: dict[str, Any], to_many: list[str]) -> dict[str, Any]:
    def order(item: Any) -> str:
        return json.dumps(item, sort_keys=True)

    return {
        name: sorted(value, key=order) if name in to_many and isinstance(value, list) else value
        for name, value in attrs.items()
    }


def _events(exported: dict[str, Any]) -> list[dict[str, Any]]:
    events = [
        {"schema": "streamsync.event/v1", "source": SOURCE, "model": model, "op": "upsert", **obj}
        for model, objects in sorted(exported["objects"].items())
        for obj in objects
    ]
    random.Random(SHUFFLE_SEED).shuffle(events)  # noqa: S311 (a repeatable order, no secret)
    return events


def _settled(fresh: str, stream: Stream, events: int) -> bool:
    """Every event acknowledged (the worker's positions at the topic's end) and none parked for a retry."""
    from django.db import connections

    alias = _alias(fresh)
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM streamsync_parkedevent WHERE source = %s", [SOURCE])
        parked = cursor.fetchone()[0]
        cursor.execute(
            'SELECT coalesce(sum(next_offset), 0) FROM streamsync_position WHERE "group" = %s AND topic LIKE %s',
            [stream.group, f"{stream.prefix}.%"],
        )
        acknowledged = cursor.fetchone()[0]
    return parked == 0 and acknowledged >= events


def _progress(fresh: str, stream: Stream) -> str:
    """Events acknowledged and parked, for the report."""
    from django.db import connections

    with connections[_alias(fresh)].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM streamsync_parkedevent WHERE source = %s", [SOURCE])
        parked = cursor.fetchone()[0]
        cursor.execute(
            'SELECT coalesce(sum(next_offset), 0) FROM streamsync_position WHERE "group" = %s', [stream.group]
        )
        acknowledged = cursor.fetchone()[0]
    return f"{acknowledged} event(s) acknowledged, {parked} parked"


def _alias(database: str) -> str:
    """A Django connection to `database`, next to the run's own."""
    from django.db import connections

    if database not in connections.databases:
        connections.databases[database] = {**connections.databases["default"], "NAME": database}
    return database


def _report(exported: dict[str, Any], applied: dict[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
    """Rows of the per-model table, and per model the keys whose fields differ (or that are missing)."""
    rows = [f"{'model':<32} {'exported':>8} {'applied':>8} {'different':>9}  skipped"]
    different: dict[str, list[str]] = {}
    for model in sorted(exported["objects"]):
        many = exported["to_many"][model]
        want = _by_key(exported["objects"][model], many)
        have = _by_key(applied["objects"].get(model, []), many)
        wrong = sorted(key for key in want if have.get(key) != want[key])
        extra = sorted(key for key in have if key not in want and key not in OWN)
        ambiguous = exported["ambiguous"].get(model, [])
        if wrong or extra:
            different[model] = [*wrong, *(f"not exported: {key}" for key in extra)]
        skipped = f"{len(ambiguous)} ambiguous key(s)" if ambiguous else ""
        rows.append(f"{model:<32} {len(want):>8} {len(want) - len(wrong):>8} {len(wrong) + len(extra):>9}  {skipped}")
    for label, skip in sorted(exported["skipped"].items()):
        rows.append(f"{label:<32} {0:>8} {0:>8} {0:>9}  {skip['count']} object(s): {skip['why']}")
    return rows, different


def test_generated_test_data_round_trips_through_a_worker(
    stream: Stream, start_worker: Any, tmp_path: Path, databases: tuple[str, str]
) -> None:
    generated, fresh = databases
    started = time.monotonic()
    exported = _export(generated, tmp_path / "exported.json")
    names = exported["models"]
    config = write_nautobot_config(tmp_path / "nautobot_config.py", sources={SOURCE: {"models": names}}, retry=RETRY)
    on = dataclasses.replace(stream, extra_env={"NAUTOBOT_CONFIG": str(config), "NAUTOBOT_DB_NAME": fresh})
    granted = on.cli("setup-user")
    assert granted.returncode == 0, granted.stderr

    events = _events(exported)
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    published = on.cli("publish", SOURCE, str(path), timeout=600)
    assert published.returncode == 0, published.stderr
    exported_in = time.monotonic() - started

    worker: WorkerProcess = start_worker(on=on)
    applying = time.monotonic()
    deadline = applying + CONVERGE_TIMEOUT
    while not (settled := _settled(fresh, on, len(events))) and time.monotonic() < deadline:
        worker.assert_alive()
        time.sleep(2)
    converged_in = time.monotonic() - applying
    progress = _progress(fresh, on)
    worker.stop()

    applied = _export(fresh, tmp_path / "applied.json", names)
    rows, different = _report(exported, applied)
    print(f"\n{len(events)} events over {len(names)} models; exported and published in {exported_in:.0f}s")
    print(f"worker {'converged' if settled else 'had not converged'} after {converged_in:.0f}s: {progress}")
    print("\n".join(rows))
    for model, keys in sorted(different.items()):
        many = exported["to_many"][model]
        want, have = _by_key(exported["objects"][model], many), _by_key(applied["objects"].get(model, []), many)
        for key in keys[:3]:
            print(f"  {model} {key}:\n    exported {want.get(key)}\n    applied  {have.get(key)}")
    assert settled, f"not every event applied after {CONVERGE_TIMEOUT:.0f}s: {progress}"
    assert not different, f"objects that differ after the round trip: { {m: len(k) for m, k in different.items()} }"
