"""How long to wait before trying again: the one back-off every retry in streamsync uses.

Doubling from a first delay up to a cap, with jitter, so that workers that failed together (a
database restart) do not all come back in the same instant.
"""

from __future__ import annotations

import random

# The longest wait between attempts against the infrastructure (the database, Kafka, a target).
INFRASTRUCTURE_CAP_SECONDS = 30.0


def backoff(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after `failures` failures in a row: `base`, doubling, at most `cap`, less up to 20%."""
    delay = min(cap, base * 2 ** min(max(failures, 1) - 1, 30))
    return delay * random.uniform(0.8, 1.0)  # noqa: S311 - spreading retries, not secrets
