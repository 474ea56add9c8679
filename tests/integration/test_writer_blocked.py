"""A worker's Nautobot user deactivated, stripped of a permission or deleted mid-stream: the worker stops writing.

A real worker applies a stream of VLAN events (creates, partial updates, deletes) as a user of the
test's own; mid-stream the test breaks the user through Nautobot's ORM, as an administrator would.
From then on no batch may be applied and nothing may be dead-lettered: the stored positions, the
group's committed offsets, the change log and every VLAN stay as they are, while the worker says
why in its log, in `streamsync_writer_blocked` and on the health page. Once the user is put right,
the worker writes on by itself, and Nautobot ends exactly as the events say.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stream, WorkerProcess, free_port, write_nautobot_config
from tests.integration.prometheus import scrape, series
from tests.integration.state_helpers import publish
from tests.integration.test_resilience import (
    SOURCE,
    assert_end_state,
    batches,
    group_lag,
    lag_rows,
    log_records,
    logged_at,
    make_events,
    nautobot_state,
    report,
    vlan_group,
    wait,
    wait_caught_up,
    worker_args,
)
from tests.integration.wire_helpers import letters

pytestmark = pytest.mark.integration

AGENT = f"streamsync.sync.{SOURCE}"
BLOCKED = "not writing: the Nautobot user may not write this source's models"
RESUMED = "writing again: the Nautobot user may write this source's models"
VLAN_PERMS = ["ipam.view_vlan", "ipam.add_vlan", "ipam.change_vlan", "ipam.delete_vlan"]
# Longer than the back-off cap for a blocked writer (5 s), so the worker tries, and is refused, again.
HELD_SECONDS = 8


def _users() -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects


def _permission(username: str) -> Any:
    from nautobot.users.models import ObjectPermission

    return ObjectPermission.objects.get(name=f"streamsync: {username}")


def _deactivate(username: str) -> None:
    _users().filter(username=username).update(is_active=False)


def _reactivate(username: str, on: Stream) -> None:
    _users().filter(username=username).update(is_active=True)


def _withdraw_delete(username: str) -> None:
    permission = _permission(username)
    permission.actions = [action for action in permission.actions if action != "delete"]
    permission.save()


def _restore_delete(username: str, on: Stream) -> None:
    permission = _permission(username)
    permission.actions = [*permission.actions, "delete"]
    permission.save()


def _delete(username: str) -> None:
    deleted, _ = _users().filter(username=username).delete()
    assert deleted


def _setup_user(username: str, on: Stream) -> None:
    done = on.cli("setup-user")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        f"created Nautobot user {username!r} (not staff, not superuser, no usable password)"
    )


@dataclass(frozen=True)
class Case:
    """How the test breaks the user, what the worker should say about it, and how the test puts it right."""

    name: str
    breaks: Callable[[str], None]
    reason: str
    missing: list[str]
    fixes: Callable[[str, Stream], None]


CASES = [
    Case("deactivated", _deactivate, "user_inactive", VLAN_PERMS, _reactivate),
    Case("delete_withdrawn", _withdraw_delete, "permission_missing", ["ipam.delete_vlan"], _restore_delete),
    Case("deleted", _delete, "user_missing", VLAN_PERMS, _setup_user),
]


@dataclass(frozen=True)
class Where:
    """Everything that must not move while the writer is blocked."""

    positions: dict[int, int]
    committed: dict[int, int | None]
    vlans: dict[int, Any]
    changes: int
    committed_batches: int


def _where(stream: Stream, group: str, username: str, worker: WorkerProcess) -> Where:
    from nautobot.extras.models import ObjectChange

    from streamsync.models.bookkeeping import Position

    topic = f"{stream.prefix}.{SOURCE}.events"
    positions = Position.objects.filter(group=stream.group, agent=AGENT, topic=topic)
    return Where(
        positions=dict(positions.values_list("partition", "next_offset")),
        committed={row["partition"]: row["current_offset"] for row in lag_rows(stream)},
        vlans=nautobot_state(group),
        changes=ObjectChange.objects.filter(user_name=username).count(),
        committed_batches=len(batches(worker)),
    )


def _writer_gauges(port: int) -> dict[str, float]:
    """streamsync_writer_blocked of the source, by reason."""
    found = series(scrape(port), "streamsync_writer_blocked", source=SOURCE)
    return {dict(labels)["reason"]: sample for labels, sample in found.items()}


def _health_writer(username: str, monkeypatch: pytest.MonkeyPatch, stream: Stream) -> tuple[str, str]:
    """The health page's verdict on the source's writer (data-blocked), and its "not writing" alert, if any."""
    from django.conf import settings
    from django.test import Client

    from tests.integration.test_health_page import URL, _rows

    monkeypatch.setitem(settings.PLUGINS_CONFIG["streamsync"], "user", username)
    monkeypatch.setenv("STREAMSYNC_KAFKA_BOOTSTRAP", stream.bootstrap)
    monkeypatch.setenv("STREAMSYNC_TOPIC_PREFIX", stream.prefix)
    monkeypatch.setenv("STREAMSYNC_GROUP_ID", stream.group)
    admin, _ = _users().get_or_create(username="health-admin", defaults={"is_superuser": True})
    client = Client()
    client.force_login(admin)
    response = client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    [(attrs, _cells)] = [row for row in _rows(html, "data-writer") if row[0]["data-writer"] == SOURCE]
    start = html.find('id="streamsync-writer-blocked"')
    alert = html[start : html.find("</div>", start)] if start >= 0 else ""
    return attrs["data-blocked"], " ".join(re.sub(r"<[^>]+>", "", alert).split())


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_user_broken_mid_stream_stops_the_writes_until_it_is_put_right(
    case: Case, stream: Stream, start_worker: Callable[..., WorkerProcess], tmp_path: Path, monkeypatch: Any
) -> None:
    username = f"ss-{uuid.uuid4().hex[:8]}"
    port = free_port()
    config = write_nautobot_config(tmp_path / "nautobot_config.py", user=username)
    env = {
        "NAUTOBOT_CONFIG": str(config),
        "STREAMSYNC_METRICS_PORT": str(port),
        "STREAMSYNC_METRICS_ADDRESS": "127.0.0.1",
    }
    on = dataclasses.replace(stream, extra_env={**stream.extra_env, **env})
    group = vlan_group()
    events = make_events(group, count=500, keys=60, seed=11)

    worker = start_worker(*worker_args(batch_size=20, batch_timeout=0.2), on=on)  # creates the user at start-up
    publish(on, tmp_path, *events)
    wait(lambda: len(batches(worker)) >= 3, 180, "the worker's first committed batches", [worker])
    assert _writer_gauges(port) == {"user_missing": 0, "user_inactive": 0, "permission_missing": 0}

    case.breaks(username)
    broken_at = time.time()
    wait(lambda: bool(log_records(worker, BLOCKED)), 60, f"the worker to say it is blocked ({case.name})", [worker])
    [said] = log_records(worker, BLOCKED)
    assert (said["level"], said["source"], said["user"], said["reason"], said["missing"]) == (
        "error",
        SOURCE,
        username,
        case.reason,
        case.missing,
    )
    assert said["fix"] == "grant them (docs/security.md) or run: streamsync setup-user"
    time.sleep(2.5)  # Kafka's commit of the last batch settled before the break (broker_commit_interval: 1 s)

    held = _where(on, group, username, worker)
    lag = group_lag(on)
    report(
        f"{case.name}: the worker said it was blocked {logged_at(said) - broken_at:.2f}s after the break; "
        f"(committed, lag) {lag}"
    )
    assert lag is not None and lag[1] > 0, f"nothing left to hold back: {lag}"
    assert sum(held.positions.values()) == lag[0], "Kafka's committed offsets are where the database vouches"
    assert _writer_gauges(port) == {
        reason: float(reason == case.reason) for reason in ("user_missing", "user_inactive", "permission_missing")
    }
    verdict, alert = _health_writer(username, monkeypatch, on)
    assert verdict == case.reason and f"Not writing source {SOURCE}:" in alert, alert

    time.sleep(HELD_SECONDS)
    assert _where(on, group, username, worker) == held, "something moved while the writer was blocked"
    again = log_records(worker, BLOCKED)
    assert len(again) >= 2 and all(r["level"] == "warning" for r in again[1:]), again  # tried again, said why again
    assert letters(on) == {}, "a blocked writer dead-lettered events"
    if case.reason == "user_missing":
        assert not _users().filter(username=username).exists(), "the deleted user was created again"

    case.fixes(username, on)
    fixed_at = time.time()
    caught_up = wait_caught_up(on, len(events), [worker], timeout=240)
    [resumed] = log_records(worker, RESUMED)
    first = batches(worker)[held.committed_batches]
    report(
        f"{case.name}: first batch committed {logged_at(first) - fixed_at:.1f}s after the fix; "
        f"caught up {time.time() - fixed_at:.1f}s after it (poll {caught_up:.1f}s)"
    )
    assert resumed["user"] == username and resumed["source"] == SOURCE
    assert_end_state(group, events, [worker])
    assert letters(on) == {}
    assert _writer_gauges(port) == {"user_missing": 0, "user_inactive": 0, "permission_missing": 0}
    assert _health_writer(username, monkeypatch, on) == ("", "")
    worker.assert_alive()
