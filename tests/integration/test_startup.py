"""Start-up refuses what cannot work, with one line saying why, and works where nothing was prepared.

Every refusal is checked as a user sees it: the command exits non-zero and prints exactly one
`Error:` line naming the thing (path, migrations, topic) and the fix, with no traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ROOT, Stream, wait_for, write_nautobot_config
from tests.integration.state_helpers import own_source, publish, vlan_event, vlans

pytestmark = pytest.mark.integration


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one `Error:` line of a command that refused to start (failing the test otherwise)."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"expected a refusal, got exit code 0:\n{output[-4000:]}"
    assert "Traceback" not in output, output[-4000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, f"expected one Error: line:\n{result.stderr[-4000:]}"
    return errors[0]


def topics(stream: Stream) -> set[str]:
    """The topic names on the broker."""
    from streamsync.kafka.clients import admin_client

    async def names() -> set[str]:
        async with admin_client(stream.bootstrap) as admin:
            return set(await admin.list_topics())

    return asyncio.run(names())


# ---------------------------------------------------------------- the data directory


def test_a_worker_on_a_new_machine_creates_its_data_directory_and_applies_events(
    stream: Stream, start_worker: Any, tmp_path: Path, group: str
) -> None:
    """No STREAMSYNC_HOME, a HOME without ~/.cache, the working directory elsewhere: faust's datadir is made."""
    home, workdir = tmp_path / "home", tmp_path / "workdir"
    home.mkdir()
    workdir.mkdir()
    env = {key: value for key, value in stream.env().items() if key != "STREAMSYNC_HOME"}
    worker = start_worker("--source", "ipam", "--batch-timeout", "0.2", cwd=workdir, env={**env, "HOME": str(home)})

    publish(stream, tmp_path, vlan_event("upsert", 310, group, name="first-start"))
    wait_for(lambda: vlans(group) == {310: ("first-start", "")}, 120, "VLAN 310 in Nautobot", worker)
    assert (home / ".cache" / "streamsync" / "faust").is_dir()
    assert list(workdir.iterdir()) == []  # nothing of faust's in the working directory


def test_a_data_dir_that_cannot_be_created_is_refused_naming_it(stream: Stream, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    data_dir = blocker / "faust"
    config = write_nautobot_config(tmp_path / "nautobot_config.py", data_dir=str(data_dir))
    on = dataclasses.replace(stream, extra_env={"NAUTOBOT_CONFIG": str(config)})

    line = refusal(on.cli("worker", "--source", "ipam", timeout=90))
    assert f"cannot create the data directory {data_dir}: Not a directory" in line
    assert 'data_dir in PLUGINS_CONFIG["streamsync"]' in line
    assert f"{stream.prefix}.ipam.events" not in topics(stream)  # refused before anything was made


# ---------------------------------------------------------------- streamsync's migrations


@pytest.fixture(scope="module")
def unmigrated_db() -> Any:
    """A database of these tests' own: Nautobot migrated, streamsync's migrations rolled back. Dropped afterwards.

    Shared by the commands below, which all refuse it before writing anything.
    """
    from deploy import devdb

    name = f"streamsync_unmigrated_{uuid.uuid4().hex[:8]}"
    devdb.create_database(name)
    try:
        rolled_back = subprocess.run(
            ["nautobot-server", "migrate", "streamsync", "zero", "--no-input"],
            env={**os.environ, "NAUTOBOT_DB_NAME": name},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert rolled_back.returncode == 0, rolled_back.stdout[-3000:] + rolled_back.stderr[-3000:]
        yield name
    finally:
        devdb.drop_database(name)


@pytest.mark.parametrize(
    "command",
    [
        ("worker", "--source", "ipam"),
        ("resync", "ipam", "--dry-run"),
        ("snapshot", "ipam", "--adapter", "tests.integration.remote_adapter.RemoteAdapter", "--dry-run"),
        ("setup-user",),
        ("replay", "ipam", "--earliest", "--dry-run"),
    ],
    ids=lambda command: command[0],
)
def test_commands_writing_to_nautobot_refuse_a_database_without_streamsyncs_migrations(
    stream: Stream, unmigrated_db: str, command: tuple[str, ...]
) -> None:
    on = dataclasses.replace(stream, extra_env={"NAUTOBOT_DB_NAME": unmigrated_db})
    line = refusal(on.cli(*command, timeout=90))
    migrations = sorted(p.stem for p in (ROOT / "streamsync" / "migrations").glob("0*.py"))
    assert f"lacks {len(migrations)} migration(s) streamsync needs: " in line
    assert ", ".join(f"streamsync.{name}" for name in migrations) in line
    assert "run `nautobot-server migrate`" in line
    assert not {t for t in topics(stream) if t.startswith(f"{stream.prefix}.")}  # refused before Kafka


# ---------------------------------------------------------------- the state topic is compacted


def _create_topic(stream: Stream, name: str, **configs: str) -> None:
    from aiokafka.admin import NewTopic

    from streamsync.kafka.clients import admin_client

    async def create() -> None:
        async with admin_client(stream.bootstrap) as admin:
            await admin.create_topics([NewTopic(name, 3, 1, topic_configs=configs)])

    asyncio.run(create())


def _alter_topic(stream: Stream, name: str, **configs: str) -> None:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from streamsync.kafka.clients import admin_client

    async def alter() -> None:
        async with admin_client(stream.bootstrap) as admin:
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs)])

    asyncio.run(alter())


def test_a_state_topic_under_retention_is_refused_by_the_worker_resync_and_snapshot(
    stream: Stream, tmp_path: Path
) -> None:
    on, source = own_source(stream, tmp_path)
    state = f"{stream.prefix}.{source}.state"
    _create_topic(stream, state, **{"cleanup.policy": "delete"})
    fix = f"--entity-name {state} --add-config cleanup.policy=compact"

    worker = refusal(on.cli("worker", "--source", source, timeout=90))
    assert f"topic {state} has cleanup.policy=delete but must be compacted" in worker
    assert fix in worker
    assert f"{stream.prefix}.{source}.events" not in topics(stream)  # refused before creating the others

    resync = refusal(on.cli("resync", source, "--dry-run"))
    assert f"topic {state} has cleanup.policy=delete but must be compacted" in resync and fix in resync
    # Refused before the adapter is even imported: this one does not exist.
    snapshot = refusal(on.cli("snapshot", source, "--adapter", "no.such.Adapter", "--dry-run"))
    assert f"topic {state} has cleanup.policy=delete" in snapshot

    # compact,delete still drops a key's latest record once it is older than retention.ms.
    _alter_topic(stream, state, **{"cleanup.policy": "compact,delete"})
    line = refusal(on.cli("resync", source, "--dry-run"))
    assert f"topic {state} has cleanup.policy=compact,delete with retention.ms=" in line

    _alter_topic(stream, state, **{"cleanup.policy": "compact"})
    fixed = on.cli("resync", source, "--dry-run")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "dry run: nothing changed" in fixed.stdout
