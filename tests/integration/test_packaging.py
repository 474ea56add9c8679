"""The distributions as users install them: built, installed into clean virtualenvs, and run.

The app's wheel with constraints.txt makes a Nautobot that loads the app; the client's wheel
alone makes a producer without Nautobot, whose events a real worker applies.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamsync.kafka.admin import TopicSpec, ensure_topics
from tests.integration.conftest import Stream, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "nautobot_config.py"


@dataclass(frozen=True)
class Dists:
    app_wheel: Path
    app_sdist: Path
    client_wheel: Path
    client_sdist: Path


def _run(argv: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run argv to completion; fail the test with its output if it fails. Returns stdout."""
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"{argv} exited with {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def _clean_env() -> dict[str, str]:
    """The environment without this virtualenv: a clean one sees only what was installed into it."""
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix))
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _venv(path: Path, *wheels: Path) -> Path:
    """A virtualenv of the base interpreter, without system site-packages, with `wheels` and constraints.txt."""
    _run([sys.executable, "-m", "venv", path], cwd=path.parent)
    _run(
        [path / "bin" / "python", "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", *wheels],
        cwd=path.parent,
    )
    return path


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    """Wheel and sdist of both distributions, built as `python -m build` builds them (isolated)."""
    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    for project in (ROOT / "client", ROOT):
        _run([sys.executable, "-m", "build", "--outdir", out, project], cwd=out)
    print(f"built both distributions in {time.monotonic() - started:.0f}s")
    return Dists(
        app_wheel=out / "nautobot_app_streamsync-0.1.0-py3-none-any.whl",
        app_sdist=out / "nautobot_app_streamsync-0.1.0.tar.gz",
        client_wheel=out / "streamsync_client-0.1.0-py3-none-any.whl",
        client_sdist=out / "streamsync_client-0.1.0.tar.gz",
    )


def test_the_app_wheel_holds_the_app_and_nothing_of_development(dists: Dists) -> None:
    names = zipfile.ZipFile(dists.app_wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"streamsync", "nautobot_app_streamsync-0.1.0.dist-info"}
    own_migrations = sorted(p.name for p in (ROOT / "streamsync" / "migrations").glob("0*.py"))
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("streamsync/migrations/0")) == own_migrations
    assert "streamsync/templates/streamsync/health.html" in names
    assert "streamsync/py.typed" in names
    assert "nautobot_app_streamsync-0.1.0.dist-info/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(dists.app_wheel).read("nautobot_app_streamsync-0.1.0.dist-info/METADATA").decode()
    assert "Requires-Dist: streamsync-client==0.1.0" in metadata
    assert "License-Expression: Apache-2.0" in metadata

    client = zipfile.ZipFile(dists.client_wheel).namelist()
    assert {name.split("/")[0] for name in client} == {"streamsync_client", "streamsync_client-0.1.0.dist-info"}
    assert "streamsync_client/py.typed" in client
    requires = zipfile.ZipFile(dists.client_wheel).read("streamsync_client-0.1.0.dist-info/METADATA").decode()
    assert [line for line in requires.splitlines() if line.startswith("Requires-Dist")] == [
        "Requires-Dist: aiokafka<0.15,>=0.13",
        "Requires-Dist: pydantic<3,>=2",
    ]

    with tarfile.open(dists.app_sdist) as archive:
        sdist = {m.name.split("/", 1)[-1] for m in archive.getmembers()}
    assert {"LICENSE", "pyproject.toml", "README.md", "streamsync/migrations/0001_parked_events.py"} <= sdist
    assert not {"tests", "deploy", "bench", "client"} & {name.split("/")[0] for name in sdist}


@pytest.fixture(scope="module")
def app_venv(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Path:
    started = time.monotonic()
    venv = _venv(tmp_path_factory.mktemp("app") / "venv", dists.client_wheel, dists.app_wheel)
    print(f"installed the app's wheel into a clean virtualenv in {time.monotonic() - started:.0f}s")
    return venv


def test_the_installed_wheel_is_an_app_nautobot_loads(app_venv: Path, tmp_path: Path) -> None:
    env = _clean_env()  # NAUTOBOT_DB_NAME stays: this run's migrated database
    bin_ = app_venv / "bin"
    server: list[str | Path] = [bin_ / "nautobot-server", f"--config={CONFIG}"]
    assert "System check identified no issues" in _run([*server, "check"], cwd=tmp_path, env=env)
    migrations = _run([*server, "showmigrations", "streamsync"], cwd=tmp_path, env=env)
    assert migrations.count("[X]") == len(list((ROOT / "streamsync" / "migrations").glob("0*.py"))), migrations
    loaded = _run(
        [
            bin_ / "python",
            "-c",
            "import json, nautobot; nautobot.setup(); import streamsync; from django.apps import apps;"
            "from django.template.loader import get_template; c = apps.get_app_config('streamsync');"
            "print(json.dumps([streamsync.__file__, c.version, c.min_version, c.max_version,"
            " get_template('streamsync/health.html').origin.name]))",
        ],
        cwd=tmp_path,
        env={**env, "NAUTOBOT_CONFIG": str(CONFIG)},
    )
    where, version, low, high, template = json.loads(loaded.strip().splitlines()[-1])
    assert where.startswith(str(app_venv)) and template.startswith(str(app_venv))
    assert (version, low, high) == ("0.1.0", "3.2.0", "3.2.9999")

    assert "Stream change events between Kafka and Nautobot." in _run([bin_ / "streamsync", "--help"], cwd=tmp_path)
    schema = json.loads(_run([bin_ / "streamsync", "schema"], cwd=tmp_path, env=env))
    assert schema == json.loads((ROOT / "docs" / "schema" / "event-v1.json").read_text())


# A producer on its own: the client's wheel in a virtualenv without Nautobot, publishing with
# both publishers, checking what it can offline first.
PRODUCER = """
import asyncio, json, sys

try:
    import nautobot
except ModuleNotFoundError:
    pass
else:
    sys.exit("nautobot is importable: " + nautobot.__file__)
for name in ("streamsync", "django", "diffsync", "faust"):
    try:
        __import__(name)
    except ModuleNotFoundError:
        continue
    sys.exit(name + " is importable")

from streamsync_client import BlockingPublisher, EnvelopeError, Op, Publisher, build_event, decode, partition_for

bootstrap, prefix, group = sys.argv[1:4]
event = build_event("ipam", "vlan", Op.UPSERT, {"vid": 100, "vlan_group__name": "dc1"}, {"name": "users"})
assert decode(event.to_bytes()) == event
# The Java client's partition of this key on 7 partitions (tests/unit/test_partitioning.py).
assert partition_for(b'vlan:{"vid":100,"vlan_group__name":"dc1"}', 7) == 3
try:
    build_event("ipam", "vlan", Op.UPSERT, {"vid": 1, "vlan_group__name": "a\\x00b"})
except EnvelopeError as error:
    assert error.code == "unstorable_string", error.code
else:
    sys.exit("a NUL was not refused")

with BlockingPublisher("ipam", bootstrap, topic_prefix=prefix) as publisher:
    publisher.upsert("vlan", {"vid": 10, "vlan_group__name": group}, {"name": "ten", "description": "a"})
    publisher.upsert("vlan", {"vid": 20, "vlan_group__name": group}, {"name": "twenty"})
    sent = publisher.flush()


async def more() -> int:
    async with Publisher("ipam", bootstrap, topic_prefix=prefix) as publisher:
        await publisher.upsert("vlan", {"vid": 10, "vlan_group__name": group}, {"description": "b"})
        await publisher.delete("vlan", {"vid": 20, "vlan_group__name": group})
        await publisher.upsert("vlan", {"vid": 30, "vlan_group__name": group}, {"name": "thirty"})
        return await publisher.flush()


print(json.dumps({"sent": sent + asyncio.run(more())}))
"""


@pytest.fixture(scope="module")
def client_venv(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    started = time.monotonic()
    venv = _venv(tmp_path_factory.mktemp("client") / "venv", dists.client_wheel)
    print(f"installed the client's wheel into a clean virtualenv in {time.monotonic() - started:.0f}s")
    yield venv


def test_the_client_alone_produces_events_a_real_worker_applies(
    client_venv: Path, stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    from nautobot.ipam.models import VLAN, VLANGroup

    installed = _run([client_venv / "bin" / "python", "-m", "pip", "list", "--format=json"], cwd=tmp_path)
    names = {package["name"].lower() for package in json.loads(installed)}
    assert "streamsync-client" in names
    assert not names & {"nautobot", "nautobot-app-streamsync", "django", "faust-streaming"}

    group = f"g-{uuid.uuid4().hex[:8]}"
    VLANGroup.objects.create(name=group)
    asyncio.run(ensure_topics(stream.bootstrap, [TopicSpec(f"{stream.prefix}.ipam.events", 3)]))
    worker = start_worker("--source", "ipam", "--batch-timeout", "0.2")
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    out = _run(
        [client_venv / "bin" / "python", script, stream.bootstrap, stream.prefix, group], cwd=tmp_path, env=_clean_env()
    )
    assert json.loads(out.strip().splitlines()[-1]) == {"sent": 5}

    def state() -> dict[int, tuple[str, str]]:
        return {v.vid: (v.name, v.description) for v in VLAN.objects.filter(vlan_group__name=group)}

    expected = {10: ("ten", "b"), 30: ("thirty", "")}
    wait_for(lambda: state() == expected, 120, f"VLANs {expected}", worker)
