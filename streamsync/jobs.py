"""Nautobot Jobs of the app: the full resync, runnable from the UI and listed in the SSoT dashboard.

The Job is a nautobot-ssot `DataSource`, so it shows in the SSoT dashboard with its Sync records
(dry-run or not, load/diff/sync times, the create/update/delete summary), but its work is
`streamsync.ops.resync`'s, exactly what `streamsync resync SOURCE` does: read the source's state topic,
plan against Nautobot over what the source owns, apply through the engine.

Who started it and who writes are two users. The writes are the least-privilege streamsync user's
(checked in every chunk's transaction, never created here); the Job's user, who started it, is
named in every change's context detail ("streamsync:ipam resync started by alice (job result
...)", context "Job") and owns the JobResult, which the SSoT dashboard shows as the Sync's user.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from nautobot.core.celery import register_jobs
from nautobot.extras.choices import ObjectChangeEventContextChoices
from nautobot.extras.jobs import ChoiceVar
from nautobot_ssot.jobs.base import DataSource

from streamsync.ops import resync
from streamsync.ops.cascade import format_report, headline
from streamsync.settings import StreamsyncSettings
from streamsync.sync.engine import ChangeLog, SyncEngine
from streamsync.sync.permissions import Writer, WriterBlocked

name = "streamsync"  # the Jobs' group in Nautobot's Jobs list


def _source_choices() -> list[tuple[str, str]]:
    """The configured sources, read when Nautobot loads the app's Jobs."""
    try:
        return [(source, source) for source in sorted(StreamsyncSettings.load().sources)]
    except ValueError:  # an invalid PLUGINS_CONFIG: the worker says why; the Job offers nothing
        return []


class _Progress:
    """Logs each phase's progress to the Job's log at most every `every` seconds, and at its end."""

    def __init__(self, logger: Any, every: float = 5.0) -> None:
        self.logger = logger
        self.every = every
        self._last: dict[str, float] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last.get(phase, 0.0) < self.every:
            return
        self._last[phase] = now
        self.logger.info("%s: %d of %d", phase, done, total)


class StreamsyncResync(DataSource):
    """Bring Nautobot back to a source's state topic: repairs whatever streaming missed."""

    source = ChoiceVar(choices=_source_choices, description="The source whose state topic is the truth.")

    class Meta:
        """What Nautobot and the SSoT dashboard show."""

        name = "streamsync resync"
        description = (
            "Diff a streamsync source's state topic against Nautobot and apply the difference. Deletes only "
            "objects the source owns and its state lacks, with their cascade (in the log), and only if unchanged "
            "since the plan (docs/resync.md)."
        )
        data_source = "streamsync state topic"
        has_sensitive_variables = False

    def run(self, *args: Any, **kwargs: Any) -> None:
        """Keep the chosen source; the base class creates the Sync record and calls `sync_data`."""
        self.source_name = kwargs.pop("source")
        super().run(*args, **kwargs)

    def sync_data(self, memory_profiling: bool) -> None:
        """Read, plan, and (unless dry-run) apply: the Sync record gets the times and the summary."""
        if not self.sync:
            return
        settings = StreamsyncSettings.load()
        registry = settings.source(self.source_name).registry()
        progress = _Progress(self.logger)

        started = time.perf_counter()
        state = resync.read(settings.kafka(), self.source_name, settings.topic_prefix, progress)
        read_at = time.perf_counter()
        self.logger.info("Read %d state record(s), %d live key(s)", state.records, len(state.live()))
        self.sync.source_load_time = timedelta(seconds=read_at - started)

        plan = resync.plan(self.source_name, registry, state, progress)
        self.sync.diff_time = timedelta(seconds=time.perf_counter() - read_at)
        totals = plan.totals()
        self.sync.summary = {
            "create": totals.create,
            "update": totals.update,
            "delete": totals.delete,
            "no-change": totals.unchanged,
            "skip": len(plan.problems),
        }
        self.sync.diff = {
            name: {"create": c.create, "update": c.update, "delete": c.delete, "no-change": c.unchanged}
            for name, c in plan.counts.items()
        }
        self.sync.save()
        self.logger.info("Plan:\n%s", resync.format_summary(plan))
        if plan.deletes:
            deleted = resync.cascade_of(plan, registry, progress)
            self.logger.info("The deletes and their cascade:\n%s", format_report(deleted))
            self.logger.info("This resync will delete %s", headline(deleted))
        for problem in plan.problems[:50]:
            self.logger.warning("Left alone: %s: %s", problem.key, problem.reason)

        if self.sync.dry_run:
            self.logger.info("Dry run: nothing written.")
            return
        # Writes as the streamsync user, which must hold the source's permissions (docs/security.md): said
        # before the first write, and checked again in every chunk's transaction.
        writer = Writer.of(settings.user, registry)
        found = writer.standing()
        if found.blocked is not None:
            raise WriterBlocked(found)
        self.logger.info("Writing as %s; started by %s", settings.user, self.started_by())
        applied_at = time.perf_counter()
        result = resync.apply(plan, SyncEngine(registry, writer, self.changelog()), progress)
        self.sync.sync_time = timedelta(seconds=time.perf_counter() - applied_at)
        self.sync.save()
        self.logger.info(
            "Applied: %d created, %d updated, %d deleted, %d claimed, %d left alone",
            result.count("created"),
            result.count("updated"),
            result.count("deleted"),
            result.claimed,
            len(result.left_alone),
        )
        for line in resync.describe_problems(result.left_alone):
            self.logger.warning("Not deleted: %s", line)
        for line in resync.describe_failures(result.failed):
            self.logger.error("Failed: %s", line)
        for problem in result.rejected[:50]:
            self.logger.error("Rejected: %s: %s", problem.key, problem.reason)
        if result.failed or result.rejected:
            count = len(result.failed) + len(result.rejected)
            raise RuntimeError(f"{count} object(s) could not be applied; see the log")

    def started_by(self) -> str:
        """The username of whoever started this run (the JobResult's user)."""
        user = self.user
        return user.username if user is not None else "an unknown user"

    def changelog(self) -> ChangeLog:
        """How the change log records this run's writes: a Job's, started by the Job's user."""
        return ChangeLog(
            note=f"resync started by {self.started_by()} (job result {self.job_result.pk})",
            context=ObjectChangeEventContextChoices.CONTEXT_JOB,
        )


jobs = [StreamsyncResync]
register_jobs(*jobs)
