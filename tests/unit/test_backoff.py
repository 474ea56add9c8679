"""The one back-off: doubling from the first delay to the cap, never waiting longer, spread by jitter."""

from __future__ import annotations

import pytest

from streamsync.settings import RetryPolicy
from streamsync.sync.backoff import backoff


@pytest.mark.parametrize(
    ("failures", "full"), [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (500, 30.0)]
)
def test_delays_double_up_to_the_cap_less_up_to_a_fifth(failures: int, full: float) -> None:
    delays = [backoff(failures, 0.5, 30.0) for _ in range(200)]
    assert all(0.8 * full <= d <= full for d in delays)
    assert len(set(delays)) > 1  # jitter: workers that failed together do not retry together


def test_parked_retries_wait_as_the_policy_says() -> None:
    policy = RetryPolicy(backoff=2.0, backoff_max=60.0)
    assert 1.6 <= policy.delay(1).total_seconds() <= 2.0
    assert 12.8 <= policy.delay(4).total_seconds() <= 16.0
    assert 48.0 <= policy.delay(20).total_seconds() <= 60.0
