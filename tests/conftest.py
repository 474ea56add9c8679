"""Session set-up shared by all tests: Nautobot on a fresh migrated database of its own.

Integration tests run against the real stack. A service that cannot be reached fails the run
with the reason; nothing here skips.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Before Nautobot's settings import: this run's own database, cloned from the migrated template.
os.environ.setdefault("NAUTOBOT_CONFIG", str(ROOT / "deploy" / "nautobot_config.py"))
TEST_DB = os.environ.setdefault("NAUTOBOT_DB_NAME", f"streamsync_test_{os.getpid()}_{uuid.uuid4().hex[:6]}")


def pytest_configure(config: object) -> None:
    """Clone the migrated template into this run's database, then set Nautobot up on it."""
    import pytest

    from deploy import devdb

    try:
        devdb.create_database(TEST_DB)
    except Exception as error:  # the database server is part of the test environment: say why it failed
        pytest.exit(
            f"cannot create the test database {TEST_DB} ({error!r}). Start the stack first: bash deploy/stack.sh up",
            returncode=3,
        )
    from streamsync.cli.nautobot_setup import setup

    setup()
    from django.core.cache import cache

    cache.clear()  # Redis may hold cached rows of another database


def pytest_unconfigure(config: object) -> None:
    """Drop this run's database unless asked to keep it for a post-mortem."""
    if os.getenv("STREAMSYNC_KEEP_TEST_DB"):
        return
    from django.db import connections

    from deploy import devdb

    connections.close_all()
    devdb.drop_database(TEST_DB)
