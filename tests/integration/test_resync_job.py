"""The resync as a Nautobot Job: listed in the SSoT dashboard, dry-run by default, and applying for real.

Run in process through Nautobot's own job runner, against the real broker (the state topic) and
the test database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stream
from tests.integration.state_helpers import produce_state, vlan_event, vlan_key, vlans

pytestmark = pytest.mark.integration


@pytest.fixture
def source(stream: Stream) -> Iterator[str]:
    """A source of the test's own, on the test's topics, in this process's PLUGINS_CONFIG for the Job to read."""
    from django.conf import settings
    from nautobot.ipam.models import VLAN

    from streamsync.sync.permissions import grant

    name = f"j{uuid.uuid4().hex[:8]}"
    config = settings.PLUGINS_CONFIG["streamsync"]
    saved = dict(config)
    config.update(
        sources={**config.get("sources", {}), name: {"models": ["vlan"]}},
        topic_prefix=stream.prefix,
        kafka_bootstrap=stream.bootstrap,
    )
    grant(config.get("user", "streamsync"), [VLAN])  # as `streamsync setup-user` does: the Job never creates it
    yield name
    config.clear()
    config.update(saved)


@pytest.fixture
def job_model() -> Any:
    """The Job's database record, as `nautobot-server post_upgrade` makes it; enabled."""
    from nautobot.extras.models import Job, JobQueue
    from nautobot.extras.utils import refresh_job_model_from_job_class

    from streamsync.jobs import StreamsyncResync

    model, _ = refresh_job_model_from_job_class(Job, StreamsyncResync, JobQueue)
    model.enabled = True
    model.validated_save()
    return model


def _run(job_model: Any, source: str, dryrun: bool, username: str = "test-user") -> tuple[Any, Any]:
    """Run the Job to its end as `username`; returns its JobResult and its SSoT Sync record."""
    from nautobot.core.testing import run_job_for_testing
    from nautobot_ssot.models import Sync

    result = run_job_for_testing(job_model, username=username, job_kwargs={"source": source, "dryrun": dryrun})
    result.refresh_from_db()
    return result, Sync.objects.get(job_result=result)


def _state(group: str, *vids: int) -> list[tuple[str, dict[str, Any] | None]]:
    return [
        (vlan_key(vid, group), vlan_event("upsert", vid, group, name=f"v{vid}", description=f"d{vid}")) for vid in vids
    ]


def test_the_job_is_an_ssot_data_source_and_repairs_drift_only_when_not_a_dry_run(
    stream: Stream, source: str, job_model: Any, tmp_path: Path
) -> None:
    from nautobot.ipam.models import VLAN, VLANGroup
    from nautobot_ssot.jobs import get_data_jobs

    data_sources, _ = get_data_jobs()
    assert job_model in data_sources, "the resync Job should be listed in the SSoT dashboard's data sources"

    group = f"jb-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    records = _state(group, 1, 2, 3)
    produce_state(stream, source, [(key, {**value, "source": source}) for key, value in records if value])

    result, sync = _run(job_model, source, dryrun=True)
    assert result.status == "SUCCESS", result.result
    assert sync.dry_run
    assert sync.summary == {"create": 3, "update": 0, "delete": 0, "no-change": 0, "skip": 0}
    assert vlans(group) == {}, "a dry run wrote to Nautobot"

    result, sync = _run(job_model, source, dryrun=False)
    assert result.status == "SUCCESS", result.result
    assert not sync.dry_run and sync.sync_time is not None
    assert vlans(group) == {1: ("v1", "d1"), 2: ("v2", "d2"), 3: ("v3", "d3")}

    # Drift by hand, and VLAN 3 gone at the source: the Job puts the source's picture back.
    edited = VLAN.objects.get(vlan_group__name=group, vid=1)
    edited.description = "edited by hand"
    edited.validated_save()
    produce_state(stream, source, [(vlan_key(3, group), None)])
    result, sync = _run(job_model, source, dryrun=False)
    assert result.status == "SUCCESS", result.result
    assert sync.summary == {"create": 0, "update": 1, "delete": 1, "no-change": 1, "skip": 0}
    assert vlans(group) == {1: ("v1", "d1"), 2: ("v2", "d2")}


def test_the_job_writes_as_the_streamsync_user_and_records_who_started_it(
    stream: Stream, source: str, job_model: Any, alice: Any
) -> None:
    """Run by a normal user: the writes are streamsync's, the change log and the Sync record name who started it."""
    from django.conf import settings
    from nautobot.extras.models import ObjectChange
    from nautobot.ipam.models import VLAN, VLANGroup
    from nautobot_ssot.models import Sync
    from nautobot_ssot.tables import SyncTable

    from streamsync.outbox.broker import applied_by_streamsync

    assert not (alice.is_superuser or alice.is_staff)
    writer = settings.PLUGINS_CONFIG["streamsync"].get("user", "streamsync")
    group = f"jb-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    produce_state(stream, source, [(key, {**value, "source": source}) for key, value in _state(group, 1, 2) if value])
    # One VLAN to create, one made by hand to update (without a change context: no change log entry of its own).
    VLAN.objects.create(
        vlan_group=VLANGroup.objects.get(name=group), vid=2, name="by hand", status=_active(), description="drift"
    )

    result, sync = _run(job_model, source, dryrun=False, username="alice")
    assert result.status == "SUCCESS", result.result
    assert vlans(group) == {1: ("v1", "d1"), 2: ("v2", "d2")}
    pks = list(VLAN.objects.filter(vlan_group__name=group).values_list("pk", flat=True))
    detail = f"streamsync:{source} resync started by alice (job result {result.pk})"
    changes = ObjectChange.objects.filter(changed_object_id__in=pks, user_name=writer)
    assert sorted((c.action, c.user.username, c.change_context, c.change_context_detail) for c in changes) == [
        ("create", writer, "job", detail),
        ("update", writer, "job", detail),
    ]
    assert not ObjectChange.objects.filter(changed_object_id__in=pks, user=alice).exists()
    # Still the source's own change for Nautobot's events: a consumer writing to the source skips it.
    assert applied_by_streamsync(detail, writer, writer) == source

    assert sync.job_result.user == alice and result.user == alice
    [row] = SyncTable(Sync.objects.filter(pk=sync.pk)).rows  # the SSoT dashboard's Sync history, column "User"
    assert str(row.get_cell_value("user")) == "alice"


def test_the_job_never_creates_a_missing_streamsync_user(stream: Stream, source: str, job_model: Any) -> None:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from nautobot.ipam.models import VLANGroup

    missing = f"gone-{uuid.uuid4().hex[:6]}"
    settings.PLUGINS_CONFIG["streamsync"]["user"] = missing  # the source fixture puts the settings back
    group = f"jb-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    produce_state(stream, source, [(key, {**value, "source": source}) for key, value in _state(group, 1) if value])

    result, _ = _run(job_model, source, dryrun=False)
    assert result.status == "FAILURE"
    assert f"Nautobot user {missing!r} does not exist" in str(result.result), result.result
    assert vlans(group) == {}
    assert not get_user_model().objects.filter(username=missing).exists()


def _active() -> Any:
    from nautobot.extras.models import Status

    return Status.objects.get(name="Active")
