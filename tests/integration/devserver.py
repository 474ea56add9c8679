"""A real Nautobot development server (`nautobot-server runserver`) on this run's database, for a browser or HTTP."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import free_port

NAUTOBOT_SERVER = str(Path(sys.executable).parent / "nautobot-server")


class NautobotServer:
    """`nautobot-server runserver` in a process of its own, its output in a file for failure reports.

    `env` is the whole environment (a test's Stream.env() plus what it adds): the server reads
    streamsync's settings from it as any Nautobot process does. Static files are served too
    (`--insecure`), so a browser sees the page as styled.
    """

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [NAUTOBOT_SERVER, "runserver", f"127.0.0.1:{self.port}", "--noreload", "--insecure"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        """Where a browser reaches it."""
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180) -> None:
        """Until the login page answers; fail with the server's output if it exits or does not answer in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"nautobot-server exited with {self.proc.returncode}:\n{self.output()[-6000:]}", pytrace=False
                )
            try:
                with urllib.request.urlopen(f"{self.url}/login/", timeout=10) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        pytest.fail(f"nautobot-server did not answer within {timeout}s:\n{self.output()[-6000:]}", pytrace=False)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 30 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
