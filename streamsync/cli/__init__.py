"""The `streamsync` command: one console script, a module per command group."""

from streamsync.cli import deadletters, events, recovery, users, worker  # noqa: F401 - each registers its commands
from streamsync.cli.main import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
