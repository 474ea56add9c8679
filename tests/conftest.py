"""Set-up shared by every test: Nautobot's settings and app registry, which need no database or Redis.

The unit tests (tests/unit) run on this alone, in seconds, without any service. The integration
tests (tests/integration) add a fresh migrated database of their own and the real stack: see
tests/integration/conftest.py. A service that cannot be reached fails the run with the reason;
nothing skips.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Before Nautobot's settings are read: the database an integration run clones the migrated template into.
os.environ.setdefault("NAUTOBOT_CONFIG", str(ROOT / "deploy" / "nautobot_config.py"))
TEST_DB = os.environ.setdefault("NAUTOBOT_DB_NAME", f"streamsync_test_{os.getpid()}_{uuid.uuid4().hex[:6]}")


def pytest_configure(config: object) -> None:
    """Set Nautobot up: settings and app registry, no connection yet."""
    from streamsync.cli.nautobot_setup import setup

    setup()
