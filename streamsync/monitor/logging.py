"""Structured logs: one structlog pipeline for streamsync, diffsync, faust, aiokafka and Nautobot.

Every record, whether from structlog or the stdlib `logging` module, leaves through the same
formatter as a JSON object (STREAMSYNC_LOG_FORMAT=json, the default off a terminal) or a
readable console line (`console`, the default on a terminal).
"""

from __future__ import annotations

import logging
import logging.config
import os
import sys
from typing import Any

import structlog

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]

# diffsync logs every create/update at INFO: a measurable cost on the hot path, and noise.
QUIET_LOGGERS = {"diffsync": "WARNING", "aiokafka": "WARNING", "faust": "WARNING", "mode": "WARNING"}


def _format(fmt: str | None) -> str:
    return fmt or os.getenv("STREAMSYNC_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")


def _renderers(fmt: str | None) -> list[Any]:
    """The last processors of every record, stdlib's and structlog's alike.

    Exceptions are rendered here, once, for both kinds of record: the formatter hands a stdlib
    record's `exc_info` (faust's, aiokafka's, Django's) to the chain, and structlog's
    `log.exception()` / `exc_info=True` arrive with theirs untouched. JSON gets the traceback as
    text in `exception` (a tuple would come out as "<traceback object at 0x...>"); the console
    renderer prints its own readable traceback.
    """
    if _format(fmt) == "console":
        return [structlog.dev.ConsoleRenderer()]
    return [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]


def logging_config(level: str = "INFO", fmt: str | None = None) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict routing stdlib records through structlog's formatter."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_renderers(fmt)],
                "foreign_pre_chain": _SHARED,
            }
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "structlog", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level, "handlers": ["default"]},
        "loggers": {
            # Nautobot's own loggers carry handlers of their own: route them through ours instead.
            "nautobot": {"level": "WARNING", "handlers": [], "propagate": True},
            "django": {"level": "WARNING", "handlers": [], "propagate": True},
            **{name: {"level": lvl, "handlers": [], "propagate": True} for name, lvl in QUIET_LOGGERS.items()},
            "streamsync": {"level": level, "handlers": [], "propagate": True},
        },
    }


def structlog_processors() -> list[Any]:
    """The processors of structlog's own loggers: they end by handing the event to the stdlib handler's formatter."""
    return [
        structlog.stdlib.filter_by_level,
        *_SHARED,
        structlog.processors.StackInfoRenderer(),
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ]


def configure(level: str = "INFO", fmt: str | None = None) -> dict[str, Any]:
    """Configure structlog and stdlib logging; returns the dictConfig (faust's Worker wants it too).

    structlog's chain leaves `exc_info` alone: the formatter renders it (see `_renderers`). The
    handler formats synchronously, inside the `except` block that logged, so `exc_info=True`
    still finds the exception there.
    """
    structlog.configure(
        processors=structlog_processors(),
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    config = logging_config(level, fmt)
    logging.config.dictConfig(config)
    return config
