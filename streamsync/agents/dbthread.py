"""The thread a worker's ORM work runs on: Django's ORM is synchronous, faust is asyncio."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class DatabaseThread:
    """All ORM work on one thread: Django's ORM is synchronous and its connections are per thread.

    One thread also means one connection and writes in the order batches arrive.
    """

    def __init__(self, name: str = "streamsync-db") -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` on the database thread without blocking the event loop (the consumer keeps heartbeating)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(_with_fresh_connection, fn, *args, **kwargs)
        )


def _with_fresh_connection(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    from django.db import close_old_connections

    # Drops connections that died (e.g. a database restart) so this batch opens a new one.
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()
