"""Nautobot to remote systems: targets apply Nautobot's change events through the user's DiffSync models."""

from streamsync.targets.base import TargetAdapter, TargetUnavailable

__all__ = ["TargetAdapter", "TargetUnavailable"]
