"""Real services for integration tests: Kafka, and worker processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The installed console script, as users run it.
STREAMSYNC = str(Path(sys.executable).parent / "streamsync")


def _docker_engine() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=20).returncode == 0


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Kafka broker: an existing one (STREAMSYNC_KAFKA_BOOTSTRAP), testcontainers' (Docker), or deploy/'s."""
    if os.getenv("STREAMSYNC_KAFKA_BOOTSTRAP"):
        yield os.environ["STREAMSYNC_KAFKA_BOOTSTRAP"]
        return
    if _docker_engine():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    started = subprocess.run(["bash", str(ROOT / "deploy" / "kafka.sh"), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"the local Kafka broker did not start:\n{started.stdout}\n{started.stderr}", pytrace=False)
    yield f"127.0.0.1:{os.getenv('STREAMSYNC_KAFKA_PORT', '9092')}"


@dataclass
class Stream:
    """One test's isolated slice of Kafka: its own topic prefix and consumer group."""

    bootstrap: str
    prefix: str
    group: str

    def env(self) -> dict[str, str]:
        """Environment for a streamsync process working on this slice."""
        return {
            **os.environ,
            "STREAMSYNC_KAFKA_BOOTSTRAP": self.bootstrap,
            "STREAMSYNC_TOPIC_PREFIX": self.prefix,
            "STREAMSYNC_GROUP_ID": self.group,
            "STREAMSYNC_LOG_FORMAT": "json",
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
def stream(kafka_bootstrap: str) -> Stream:
    """Fresh topic prefix and consumer group for one test."""
    tag = uuid.uuid4().hex[:8]
    return Stream(bootstrap=kafka_bootstrap, prefix=f"t{tag}", group=f"streamsync-t{tag}")


class WorkerProcess:
    """A real `streamsync worker` process, its output captured to a file for failure reports."""

    def __init__(self, stream: Stream, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [STREAMSYNC, "worker", *args],
            env=stream.env(),
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
    """Start worker processes on the test's stream; all are stopped at the end of the test."""
    workers: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        worker = WorkerProcess(stream, tmp_path / f"worker{len(workers)}.log", *args)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


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
