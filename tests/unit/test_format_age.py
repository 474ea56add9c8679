"""Ages as `streamsync lag` and the health page print them."""

from __future__ import annotations

import pytest

from streamsync.ops.lag import format_age


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.0, "0.0s"),
        (0.84, "0.8s"),
        (9.96, "10.0s"),
        (42.7, "42s"),
        (187, "3m07s"),
        (7500, "2h05m"),
        (273_600, "3d04h"),
    ],
)
def test_ages_are_short_and_keep_two_units(seconds: float | None, text: str) -> None:
    assert format_age(seconds) == text
