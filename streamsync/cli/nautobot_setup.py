"""Setting Nautobot up outside `nautobot-server` (CLI, dev database tooling, tests)."""

from __future__ import annotations

import os
import warnings


def setup(config: str | None = None) -> None:
    """Load nautobot_config.py as `nautobot-server` does (NAUTOBOT_CONFIG), then Django; idempotent.

    Nautobot 3.2 on Django 5.2 emits dozens of deprecation warnings of its own while importing;
    they say nothing actionable to a streamsync user, so they are silenced here.
    """
    import nautobot

    if config:
        os.environ["NAUTOBOT_CONFIG"] = config
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(nautobot|django|django_tables2)(\.|$)")
    warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module=r"(nautobot|django)(\.|$)")
    nautobot.setup()
