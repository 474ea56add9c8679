"""Real services for integration tests: a migrated database of the run's own, Kafka, and worker processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The installed console script, as users run it.
STREAMSYNC = str(Path(sys.executable).parent / "streamsync")


def _docker_engine() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=20).returncode == 0


def pytest_configure(config: object) -> None:
    """Clone the migrated template into this run's database (tests.conftest named it)."""
    from deploy import devdb
    from tests.conftest import TEST_DB

    try:
        devdb.create_database(TEST_DB)
    except Exception as error:  # the database server is part of the test environment: say why it failed
        pytest.exit(
            f"cannot create the test database {TEST_DB} ({error!r}). Start the stack first: bash deploy/stack.sh up",
            returncode=3,
        )
    from django.core.cache import cache

    cache.clear()  # Redis may hold cached rows of another database


def pytest_unconfigure(config: object) -> None:
    """Drop this run's database unless asked to keep it for a post-mortem."""
    if os.getenv("STREAMSYNC_KEEP_TEST_DB"):
        return
    from django.db import connections

    from deploy import devdb
    from tests.conftest import TEST_DB

    connections.close_all()
    devdb.drop_database(TEST_DB)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka broker: an existing one (STREAMSYNC_KAFKA_BOOTSTRAP), testcontainers' (Docker), or the run's own.

    The run's own is deploy/kafka.sh with a fresh home and free ports: it starts from empty storage, so
    topics that earlier runs left in the stack's broker never slow its start or show up in a test.
    """
    if os.getenv("STREAMSYNC_KAFKA_BOOTSTRAP"):
        yield os.environ["STREAMSYNC_KAFKA_BOOTSTRAP"]
        return
    if _docker_engine():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    home = tmp_path_factory.mktemp("kafka-home")
    kafka = PrivateKafka(home, {"STREAMSYNC_KAFKA_HEAP_OPTS": "-Xms256m -Xmx1g"})
    kafka.start()
    try:
        yield kafka.bootstrap
    finally:
        kafka.stop()
        shutil.rmtree(home / "kafka" / "data", ignore_errors=True)


@pytest.fixture(autouse=True)
def _kafka_in_environment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point what a Kafka test runs in this process (settings, Nautobot's event broker) at the run's broker."""
    if "kafka_bootstrap" in request.fixturenames:
        monkeypatch.setenv("STREAMSYNC_KAFKA_BOOTSTRAP", request.getfixturevalue("kafka_bootstrap"))


@dataclass
class Stream:
    """One test's isolated slice of Kafka: its own topic prefix and consumer group."""

    bootstrap: str
    prefix: str
    group: str
    # More environment for its processes, e.g. NAUTOBOT_DB_PORT of a private PostgreSQL.
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """Environment for a streamsync process working on this slice."""
        return {
            **os.environ,
            "STREAMSYNC_KAFKA_BOOTSTRAP": self.bootstrap,
            "STREAMSYNC_TOPIC_PREFIX": self.prefix,
            "STREAMSYNC_GROUP_ID": self.group,
            "STREAMSYNC_LOG_FORMAT": "json",
            # Workers run side by side here: no /metrics port unless a test asks for one.
            "STREAMSYNC_METRICS_PORT": "0",
            **self.extra_env,
        }

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a `streamsync` command to completion."""
        return subprocess.run(
            [STREAMSYNC, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture
def stream(kafka_bootstrap: str) -> Iterator[Stream]:
    """Fresh topic prefix and consumer group for one test; its topics are deleted after it."""
    tag = uuid.uuid4().hex[:8]
    made = Stream(bootstrap=kafka_bootstrap, prefix=f"t{tag}", group=f"streamsync-t{tag}")
    yield made
    _delete_topics(made)


def _delete_topics(stream: Stream) -> None:
    """Delete a test's topics, so a broker that outlives the run (a user's own) does not fill up with them."""
    from streamsync.kafka.clients import admin_client
    from streamsync.settings import StreamsyncSettings

    async def delete() -> None:
        # The settings add the environment's TLS/SASL, as for the run's worker processes.
        async with admin_client(StreamsyncSettings.load({"kafka_bootstrap": stream.bootstrap}).kafka()) as admin:
            # Its own topics, and those Faust names after the consumer group (the assignor's leader topic).
            mine = (f"{stream.prefix}.", f"{stream.group}-")
            names = [name for name in await admin.list_topics() if name.startswith(mine)]
            if names:
                await admin.delete_topics(names)

    try:
        asyncio.run(delete())
    except Exception as error:  # a test that broke the broker on purpose is not failed by its cleanup
        warnings.warn(f"could not delete the topics of {stream.prefix}: {error!r}", stacklevel=1)


@pytest.fixture
def page_settings(stream: Stream, monkeypatch: pytest.MonkeyPatch) -> Stream:
    """The web app's streamsync settings (page, API, /health/) pointed at this test's topics and group."""
    monkeypatch.setenv("STREAMSYNC_KAFKA_BOOTSTRAP", stream.bootstrap)
    monkeypatch.setenv("STREAMSYNC_TOPIC_PREFIX", stream.prefix)
    monkeypatch.setenv("STREAMSYNC_GROUP_ID", stream.group)
    return stream


@pytest.fixture
def broker(stream: Stream) -> Iterator[Any]:
    """The streamsync event broker Nautobot registered from EVENT_BROKERS, writing for this test's topic prefix."""
    from nautobot.core.events import _EVENT_BROKERS

    from streamsync.contract.topics import events_topic
    from streamsync.outbox.broker import StreamsyncEventBroker
    from streamsync.settings import StreamsyncSettings

    brokers = [b for b in _EVENT_BROKERS if isinstance(b, StreamsyncEventBroker)]
    assert len(brokers) == 1, f"EVENT_BROKERS in nautobot_config.py should register it once: {_EVENT_BROKERS}"
    broker = brokers[0]
    broker.configure(StreamsyncSettings.load({"topic_prefix": stream.prefix}))
    assert broker.topic == events_topic("nautobot", stream.prefix)
    yield broker
    broker.configure()


@pytest.fixture
def alice() -> Any:
    """A normal (not superuser) Nautobot user."""
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="alice")
    return user


@pytest.fixture
def viewer() -> Any:
    """A user who may see streamsync's parked events (and so its health page), and nothing else."""
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from nautobot.users.models import ObjectPermission

    from streamsync.models.bookkeeping import ParkedEvent

    user = get_user_model().objects.create_user(username=f"viewer-{uuid.uuid4().hex[:6]}")
    permission = ObjectPermission.objects.create(name=f"p-{uuid.uuid4().hex[:8]}", actions=["view"])
    permission.users.add(user)
    permission.object_types.add(ContentType.objects.get_for_model(ParkedEvent))
    return user


@pytest.fixture
def group_named_none() -> Iterator[str]:
    """A VLAN group named "None" (a name diffsync spells like a null identifier), removed after the test.

    Removed with its VLANs: other tests (hostile envelopes) rely on no such group existing.
    """
    from nautobot.ipam.models import VLAN, VLANGroup

    VLANGroup.objects.get_or_create(name="None")
    yield "None"
    VLAN.objects.filter(vlan_group__name="None").delete()
    VLANGroup.objects.filter(name="None").delete()


@pytest.fixture
def group() -> str:
    from nautobot.ipam.models import VLANGroup

    name = f"g-{uuid.uuid4().hex[:8]}"
    VLANGroup.objects.create(name=name)
    return name


class WorkerProcess:
    """A real `streamsync worker` process, its output captured to a file for failure reports."""

    def __init__(
        self, stream: Stream, log_path: Path, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [STREAMSYNC, "worker", *args],
            env=stream.env() if env is None else env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        """Everything the worker printed so far."""
        return self.log_path.read_text(errors="replace")

    def assert_alive(self) -> None:
        """Fail with the worker's output when it has exited."""
        if self.proc.poll() is not None:
            pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.output()[-6000:]}", pytrace=False)

    def kill(self) -> int:
        """SIGKILL, as the kernel's OOM killer or a power cut would: no clean-up of any kind."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait, as a service manager would."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_worker(stream: Stream, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes on the test's stream (or another); all are stopped at the end of the test.

    `cwd` and `env` (the whole environment, instead of the stream's) are for tests of the process's surroundings.
    """
    workers: list[WorkerProcess] = []

    def start(
        *args: str, on: Stream | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        worker = WorkerProcess(on or stream, tmp_path / f"worker{len(workers)}.log", *args, cwd=cwd, env=env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def write_nautobot_config(path: Path, **streamsync: object) -> Path:
    """deploy/nautobot_config.py with keys of PLUGINS_CONFIG["streamsync"] replaced, for a worker process.

    Point a process at it with `NAUTOBOT_CONFIG` in `Stream.extra_env`.
    """
    path.write_text(
        f"exec(compile(open({str(ROOT / 'deploy' / 'nautobot_config.py')!r}).read(), 'nautobot_config.py', 'exec'))\n"
        f"PLUGINS_CONFIG['streamsync'].update({streamsync!r})\n"
    )
    return path


def wait_for(condition: Callable[[], bool], timeout: float, what: str, worker: WorkerProcess | None = None) -> None:
    """Poll `condition` until true; fail after `timeout` seconds naming `what` (and the worker's output)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if worker is not None:
            worker.assert_alive()
        time.sleep(0.25)
    detail = f"\nworker output:\n{worker.output()[-6000:]}" if worker else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what}{detail}", pytrace=False)


# ---------------------------------------------------------------- private services
# Tests that stop and start a service get instances of their own: other test runs share the stack's.


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shared_home() -> Path:
    """The stack's STREAMSYNC_HOME, as deploy/lib/common.sh computes it."""
    if os.getenv("STREAMSYNC_HOME"):
        return Path(os.environ["STREAMSYNC_HOME"])
    if os.getuid() == 0:
        return Path("/var/lib/streamsync")
    return Path(os.getenv("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamsync"


def _deploy(script: str, command: str, env: dict[str, str], timeout: float = 180) -> float:
    """Run deploy/<script> <command>; fail the test with its output if it fails. Returns the seconds it took."""
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(ROOT / "deploy" / script), command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"deploy/{script} {command} failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
    return time.monotonic() - started


class PrivateKafka:
    """A one-node broker of one test's own (deploy/kafka.sh with its own home and ports), to stop and start.

    Kafka's jars are not fetched again: the stack's cached ones are linked in. `extra_env` takes
    more of deploy/kafka.sh's settings, e.g. STREAMSYNC_KAFKA_EXTRA_PROPERTIES for TLS/SASL listeners.
    """

    def __init__(self, home: Path, extra_env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.controller_port = free_port()
        self.env = {
            "STREAMSYNC_HOME": str(home),
            "STREAMSYNC_KAFKA_PORT": str(self.port),
            "STREAMSYNC_KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "STREAMSYNC_KAFKA_HEAP_OPTS": "-Xms128m -Xmx512m",
            **(extra_env or {}),
        }
        _deploy("kafka.sh", "fetch", {})  # fills (or finds) the stack's jar cache
        (home / "kafka").mkdir(parents=True, exist_ok=True)
        for lib in (shared_home() / "kafka").glob("lib-*"):
            if (lib / ".complete").is_file() and not (home / "kafka" / lib.name).exists():
                (home / "kafka" / lib.name).symlink_to(lib)

    @property
    def bootstrap(self) -> str:
        """Where clients reach it."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> float:
        """Start (formatting storage the first time) and wait until it serves clients; returns seconds taken."""
        return _deploy("kafka.sh", "start", self.env)

    def stop(self) -> float:
        """Stop it by its pid file (TERM, KILL after 30 s); returns seconds taken."""
        return _deploy("kafka.sh", "stop", self.env)

    def log(self) -> str:
        """The broker's log, for failure reports."""
        path = self.home / "log" / "kafka.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[PrivateKafka]:
    """A running broker of this test's own; stopped at the end of the test."""
    kafka = PrivateKafka(tmp_path / "kafka-home")
    try:
        kafka.start()
        yield kafka
    finally:
        kafka.stop()


class PrivatePostgres:
    """A PostgreSQL cluster of one test's own (deploy/postgres.sh with its own home and port), to stop and start.

    Its databases are copies of the stack's migrated Nautobot template (`copy_template`), reachable
    from the test through a Django database alias (`alias`).
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.env = {"STREAMSYNC_HOME": str(home), "STREAMSYNC_PG_PORT": str(self.port)}
        self._aliases: list[str] = []

    def start(self) -> float:
        """Start (initialising the cluster the first time); returns seconds taken."""
        return _deploy("postgres.sh", "start", self.env)

    def stop(self) -> float:
        """Stop it (pg_ctl stop -m fast, by its own pid file); returns seconds taken."""
        return _deploy("postgres.sh", "stop", self.env)

    def copy_template(self, name: str) -> float:
        """Create database `name` here as a copy of the stack's migrated template; returns seconds taken."""
        from django.conf import settings

        from deploy import devdb

        started = time.monotonic()
        shared = settings.DATABASES["default"]
        env = {**os.environ, "PGPASSWORD": shared["PASSWORD"]}
        template = devdb.ensure_template()
        here = ["-h", "127.0.0.1", "-p", str(self.port), "-U", shared["USER"]]
        there = ["-h", shared["HOST"], "-p", str(shared["PORT"]), "-U", shared["USER"]]
        subprocess.run([_pg_tool("createdb"), *here, name], env=env, check=True, capture_output=True, timeout=60)
        dump = subprocess.Popen(
            [_pg_tool("pg_dump"), *there, "-Fc", template],
            env=env,
            stdout=subprocess.PIPE,
        )
        restore = subprocess.run(
            [_pg_tool("pg_restore"), *here, "--no-owner", "-d", name],
            env=env,
            stdin=dump.stdout,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if dump.wait(60) != 0 or restore.returncode != 0:
            pytest.fail(f"copying template {template} failed: {restore.stderr}", pytrace=False)
        return time.monotonic() - started

    def alias(self, name: str) -> str:
        """A Django database alias for database `name` on this cluster (for `.using(alias)`)."""
        from django.db import connections

        alias = f"private_{self.port}_{name}"
        connections.settings[alias] = {**connections.settings["default"], "PORT": str(self.port), "NAME": name}
        self._aliases.append(alias)
        return alias

    def forget_aliases(self) -> None:
        """Close and remove the aliases handed out."""
        from django.db import connections

        for alias in self._aliases:
            connections[alias].close()
            del connections[alias]
            del connections.settings[alias]
        self._aliases.clear()

    def log(self) -> str:
        """The server's log, for failure reports."""
        path = self.home / "log" / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not candidates:
        pytest.fail(f"{name} not found (install postgresql-client)", pytrace=False)
    return str(candidates[-1])


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running PostgreSQL cluster of this test's own; stopped and removed at the end of the test."""
    # Not under pytest's tmp_path: as root the server runs as `postgres`, which must reach its directory.
    home = Path(tempfile.mkdtemp(prefix="streamsync-pg-"))
    home.chmod(0o755)
    postgres = PrivatePostgres(home)
    try:
        postgres.start()
        yield postgres
    finally:
        postgres.forget_aliases()
        postgres.stop()
        shutil.rmtree(home, ignore_errors=True)


class PrivateRedis:
    """A Redis of one test's own (deploy/redis.sh with its own home and port), to stop and start.

    Point a worker at it with `env` in `Stream.extra_env`: Nautobot's cache (and so every
    `validated_save` that reads custom fields) then lives there.
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.env = {"STREAMSYNC_HOME": str(home), "STREAMSYNC_REDIS_PORT": str(self.port)}

    @property
    def worker_env(self) -> dict[str, str]:
        """Environment that makes a worker's Nautobot use this Redis."""
        return {"NAUTOBOT_REDIS_HOST": "127.0.0.1", "NAUTOBOT_REDIS_PORT": str(self.port)}

    def start(self) -> float:
        """Start it; returns seconds taken."""
        return _deploy("redis.sh", "start", self.env)

    def stop(self) -> float:
        """Stop it by its pid file; returns seconds taken."""
        return _deploy("redis.sh", "stop", self.env)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A running Redis of this test's own; stopped at the end of the test."""
    redis = PrivateRedis(tmp_path / "redis-home")
    try:
        redis.start()
        yield redis
    finally:
        redis.stop()
