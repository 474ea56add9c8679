"""What every benchmark does: measure on a database of its own, and say how far it got on stderr."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def progress(message: str) -> None:
    """A progress line on stderr (the table alone goes to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextmanager
def scratch_database(name: str) -> Iterator[None]:
    """A fresh clone of the migrated template named `name` for Nautobot to use, dropped at the end.

    Call it before anything reads Nautobot's settings: they name the database.
    """
    os.environ["NAUTOBOT_DB_NAME"] = name
    from deploy import devdb

    progress(f"cloning the migrated template into {name}")
    devdb.create_database(name)
    try:
        yield
    finally:
        from django.db import connections

        connections.close_all()
        devdb.drop_database(name)
        progress(f"dropped {name}")
