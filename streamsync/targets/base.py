"""What a target is: the seed guide's Data Target, loaded by key instead of in full.

A user writes a `TargetAdapter` subclass whose DiffSync models (one per Nautobot model it receives,
same `_modelname` and `_identifiers`) implement `create`, `update` and `delete` against the remote
system, and `load_keys()`, which loads only the objects a batch names. streamsync does the rest:
reading Nautobot's change events, folding them per key, diffing each object and calling the CRUD.
docs/targets.md walks through writing one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from diffsync import Adapter

from streamsync.sync.faults import TargetUnavailable

__all__ = ["TargetAdapter", "TargetUnavailable"]


class TargetAdapter(Adapter):
    """A remote system streamsync writes Nautobot's changes to, one batch at a time.

    A new instance is made for every batch, with the target's `options` from PLUGINS_CONFIG as
    keyword arguments: keep connections or API clients that should outlive a batch at class or
    module level.
    """

    top_level: ClassVar[list[str]] = []

    def load_keys(self, keys: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        """Load (`self.add`) only the objects named in `keys`: model name -> identifier dicts.

        Objects that do not exist in the remote system are simply not added; the engine creates them.
        Called once per batch, or once per round when keys of the batch share a DiffSync unique id
        (a VLAN with no group and one in a group named "None"): the adapter's objects are removed
        before each further call, and `commit` comes after the last round.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement load_keys()")

    @contextlib.contextmanager
    def object_scope(self) -> Iterator[None]:
        """Wraps the writes of one object, so a failure can undo just that object (a savepoint, say)."""
        yield

    def commit(self) -> None:
        """Make the batch's writes durable; called once, after every object of the batch was tried.

        When it returns, the batch's offsets may be committed: events are not delivered again.
        """

    def close(self) -> None:
        """Release what the batch held (called after `commit`, and after a failure)."""
