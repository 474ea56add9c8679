"""What counts as a change of an attribute: the one comparison the engine, targets, resync and the broker share."""

from __future__ import annotations

import functools
import json
from typing import Any


def same(wanted: Any, current: Any) -> bool:
    """Equal, with lists (tags, content types) compared as sets: their order means nothing."""
    if isinstance(wanted, list) and isinstance(current, list):
        dump = functools.partial(json.dumps, sort_keys=True, default=str)
        return sorted(map(dump, wanted)) == sorted(map(dump, current))
    return bool(wanted == current)


def changed(wanted: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The attributes of `wanted` whose values differ from `current`."""
    return {name: value for name, value in wanted.items() if not same(value, current.get(name))}
