"""JSON logs carry exceptions as formatted tracebacks, from stdlib records and structlog alike."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from streamsync.monitor.logging import logging_config, structlog_processors


@pytest.fixture
def json_lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A stdlib logger whose handler has streamsync's JSON formatter (built from its dictConfig), and its output."""
    spec = dict(logging_config("INFO", "json")["formatters"]["structlog"])
    factory = spec.pop("()")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(factory(**spec))
    logger = logging.getLogger(f"streamsync.test_logging.{id(out)}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, out
    logger.removeHandler(handler)


def _records(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _fail() -> None:
    raise ValueError("boom")


def _assert_traceback(record: dict[str, Any]) -> None:
    assert "exc_info" not in record, record
    text = record.get("exception", "")
    assert text.startswith("Traceback (most recent call last):"), record
    assert 'in _fail\n    raise ValueError("boom")' in text
    assert text.rstrip().endswith("ValueError: boom")


def test_a_stdlib_record_with_exc_info_has_its_traceback_as_text(json_lines: Any) -> None:
    logger, out = json_lines
    try:
        _fail()
    except ValueError:
        logger.exception("Error: %r", "faust-style")  # how faust, aiokafka and Django log
    (record,) = _records(out)
    assert record["event"] == "Error: 'faust-style'"
    assert record["level"] == "error"
    _assert_traceback(record)
    assert "traceback object" not in out.getvalue()


@pytest.mark.parametrize("how", ["exception", "exc_info=True", "exc_info=error"])
def test_a_structlog_exception_has_its_traceback_as_text(json_lines: Any, how: str) -> None:
    logger, out = json_lines
    log = structlog.wrap_logger(logger, processors=structlog_processors(), wrapper_class=structlog.stdlib.BoundLogger)
    try:
        _fail()
    except ValueError as error:
        if how == "exception":
            log.exception("apply failed", batch=3)
        elif how == "exc_info=True":
            log.error("apply failed", batch=3, exc_info=True)
        else:
            log.warning("apply failed", batch=3, exc_info=error)
    (record,) = _records(out)
    assert record["event"] == "apply failed"
    assert record["batch"] == 3
    _assert_traceback(record)


def test_a_fatal_start_up_error_of_the_worker_is_logged_with_its_traceback() -> None:
    """faust's Worker is mode's: an exception while starting is logged by `execute_from_commandline`.

    Run as the `worker` command runs it (logging configured by streamsync, the same dictConfig
    handed to the Worker), in a process of its own: the Worker exits the process.
    """
    script = textwrap.dedent(
        """
        import mode
        from streamsync.monitor import logging as streamsync_logging

        class Broken(mode.Service):
            async def on_start(self):
                raise FileNotFoundError(2, "No such file or directory")

        config = streamsync_logging.configure("INFO", "json")
        mode.Worker(Broken(), loglevel="info", logging_config=config, redirect_stdouts=False, quiet=True
                    ).execute_from_commandline()
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    errors = [r for r in map(json.loads, result.stderr.splitlines()) if r.get("level") == "error"]
    assert errors, result.stderr
    fatal = errors[0]
    assert "Error: FileNotFoundError(2, 'No such file or directory')" in fatal["event"]
    assert fatal["exception"].startswith("Traceback (most recent call last):"), fatal
    assert "in on_start" in fatal["exception"]
    assert "traceback object" not in result.stderr
