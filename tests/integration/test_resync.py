"""`streamsync resync`: Nautobot brought back to a source's state topic, within what the source owns."""

from __future__ import annotations

import getpass
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import STREAMSYNC, Stream, wait_for
from tests.integration.state_helpers import own_source, produce_state, publish, vlan_event, vlan_key, vlans

pytestmark = pytest.mark.integration


def _summary(output: str) -> dict[str, list[int]]:
    """The summary table: model -> [create, update, delete, unchanged, claim]."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["MODEL", "CREATE"])
    rows = {}
    for line in lines[start + 1 :]:
        cells = line.split()
        if len(cells) != 6 or not all(c.isdigit() for c in cells[1:]):
            break
        rows[cells[0]] = [int(c) for c in cells[1:]]
    return rows


def test_resync_repairs_drift_and_leaves_unowned_objects_alone(
    stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    from nautobot.extras.models import ObjectChange, Status
    from nautobot.ipam.models import VLAN, VLANGroup

    stream, source = own_source(stream, tmp_path)
    group = f"rs-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    worker = start_worker("--source", source, "--batch-timeout", "0.2", on=stream)
    publish(
        stream,
        tmp_path,
        *(vlan_event("upsert", vid, group, source, name=f"v{vid}", description=f"d{vid}") for vid in (1, 2, 3, 4)),
        source=source,
    )
    streamed = {vid: (f"v{vid}", f"d{vid}") for vid in (1, 2, 3, 4)}
    wait_for(lambda: vlans(group) == streamed, 120, "the streamed VLANs", worker)
    assert worker.stop() == 0

    # Drift: edited by hand, deleted by hand, renumbered by hand (it keeps its unique name), made by
    # hand outside the source, and gone at the source (a tombstone, as a snapshot that lacks it writes).
    edited = VLAN.objects.get(vlan_group__name=group, vid=1)
    edited.description = "edited by hand"
    edited.validated_save()
    renumbered = VLAN.objects.get(vlan_group__name=group, vid=4)
    renumbered.vid = 14
    renumbered.validated_save()
    VLAN.objects.get(vlan_group__name=group, vid=2).delete()
    active = Status.objects.get(name="Active")
    VLAN.objects.create(vlan_group=VLANGroup.objects.get(name=group), vid=5, name="by hand", status=active)
    produce_state(stream, source, [(vlan_key(3, group), None)])
    drifted = {1: ("v1", "edited by hand"), 3: ("v3", "d3"), 14: ("v4", "d4"), 5: ("by hand", "")}
    assert vlans(group) == drifted

    dry = stream.cli("resync", source, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert _summary(dry.stdout) == {"vlan": [2, 1, 2, 0, 0], "total": [2, 1, 2, 0, 0]}
    assert "dry run: nothing changed" in dry.stdout
    assert vlans(group) == drifted

    applied = stream.cli("resync", source, "--yes")
    assert applied.returncode == 0, applied.stderr
    assert "created 2, updated 1, deleted 2, claimed 0" in applied.stdout
    assert vlans(group) == {1: ("v1", "d1"), 2: ("v2", "d2"), 4: ("v4", "d4"), 5: ("by hand", "")}
    # Written as the streamsync user; the change log names who ran the command, and where.
    started_by = f"{getpass.getuser()} on {socket.gethostname()}"
    detail = f"streamsync:{source} resync started by {started_by} (streamsync resync)"
    two = VLAN.objects.get(vlan_group__name=group, vid=2)
    [created] = ObjectChange.objects.filter(changed_object_id=two.pk, action="create", change_context_detail=detail)
    assert (created.user_name, created.change_context) == ("streamsync", "orm")

    # The recreated VLANs are owned again, so the next resync has nothing left to do.
    again = stream.cli("resync", source, "--dry-run")
    assert again.returncode == 0, again.stderr
    assert _summary(again.stdout)["total"] == [0, 0, 0, 3, 0]


def test_resync_claims_matching_objects_and_reports_what_fails(stream: Stream, tmp_path: Path) -> None:
    """A state written by a snapshot: objects that already match are claimed; what Nautobot refuses fails loudly."""
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    stream, source = own_source(stream, tmp_path)
    group = f"rs-{uuid.uuid4().hex[:6]}"
    vlan_group = VLANGroup.objects.create(name=group)
    VLAN.objects.create(vlan_group=vlan_group, vid=7, name="seven", status=Status.objects.get(name="Active"))

    def state(vid: int, **attrs: Any) -> tuple[str, dict[str, Any]]:
        return vlan_key(vid, group), vlan_event("upsert", vid, group, source, **attrs)

    produce_state(stream, source, [state(7, name="seven"), state(8, name="eight", status__name="No such status")])

    refused = subprocess.run(
        [STREAMSYNC, "resync", source], env=stream.env(), input="n\n", capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1, refused.stderr
    assert "apply 1 change(s) to Nautobot? [y/N]" in refused.stdout
    assert set(vlans(group)) == {7}

    result = stream.cli("resync", source, "--yes")
    assert result.returncode == 1
    assert _summary(result.stdout)["vlan"] == [1, 0, 0, 1, 1]
    assert f"failed: {vlan_key(8, group)}: " in result.stderr
    assert "1 object(s) could not be applied" in result.stderr
    assert vlans(group) == {7: ("seven", "")}

    # Claimed: once the source no longer has it, a resync deletes it.
    produce_state(stream, source, [(vlan_key(7, group), None), (vlan_key(8, group), None)])
    result = stream.cli("resync", source, "--yes")
    assert result.returncode == 0, result.stderr
    assert "deleted 1" in result.stdout
    assert vlans(group) == {}


def test_resync_applies_what_workers_put_on_the_state_topic_while_it_ran(stream: Stream, tmp_path: Path) -> None:
    """The state read at the start must not win over changes streamed during the resync."""
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    stream, source = own_source(stream, tmp_path)
    group = f"rs-{uuid.uuid4().hex[:6]}"
    vlan_group = VLANGroup.objects.create(name=group)
    one = VLAN.objects.create(vlan_group=vlan_group, vid=1, name="hand", status=Status.objects.get(name="Active"))

    def state(vid: int, **attrs: Any) -> tuple[str, dict[str, Any]]:
        return vlan_key(vid, group), vlan_event("upsert", vid, group, source, **attrs)

    produce_state(stream, source, [state(1, name="old"), state(2, name="two")])
    resync = subprocess.Popen(
        [STREAMSYNC, "resync", source],
        env=stream.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert resync.stdout is not None
    summary: list[list[str]] = []
    for line in iter(resync.stdout.readline, ""):
        summary.append(line.split())
        if line.startswith("total"):
            break
    assert summary[-1] == ["total", "1", "1", "0", "0", "0"], (summary, resync.stderr and resync.stderr.read())

    # While it waits for its confirmation, a worker applies newer events: VLAN 1 renamed, VLAN 2 deleted.
    one.name = "new"
    one.validated_save()
    produce_state(stream, source, [state(1, name="new"), (vlan_key(2, group), None)])

    out, err = resync.communicate("y\n", timeout=180)
    assert resync.returncode == 0, err
    assert "created 1, updated 2, deleted 1," in out  # the second update and the delete: catching up
    assert "then applied 2 record(s) the workers added to the state topic meanwhile" in out
    assert vlans(group) == {1: ("new", "")}


def _vlan_rows(group: str, source: str) -> dict[int, dict[str, Any]]:
    """Every VLAN of `group`, every attribute the source could set, its primary key and whether `source` owns it."""
    from nautobot.ipam.models import VLAN

    from streamsync.models.bookkeeping import OwnedObject

    owned = set(OwnedObject.objects.filter(source=source).values_list("object_id", flat=True))
    return {
        v.vid: {
            "pk": v.pk,
            "name": v.name,
            "status": v.status.name,
            "role": v.role.name if v.role else None,
            "tenant": v.tenant.name if v.tenant else None,
            "description": v.description,
            "tags": sorted(t.name for t in v.tags.all()),
            "owned": v.pk in owned,
        }
        for v in VLAN.objects.filter(vlan_group__name=group).select_related("status", "role", "tenant")
    }


def test_a_planned_delete_leaves_alone_an_object_changed_or_replaced_since_the_plan(
    stream: Stream, tmp_path: Path
) -> None:
    """Between the plan and the confirmation, users work on: what the plan would delete must still be what it saw."""
    from django.contrib.contenttypes.models import ContentType
    from nautobot.dcim.models import Location, LocationType
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    stream, source = own_source(stream, tmp_path)
    group = f"rs-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)

    def state(vid: int, **attrs: Any) -> tuple[str, dict[str, Any]]:
        return vlan_key(vid, group), vlan_event("upsert", vid, group, source, **attrs)

    # The source's VLANs 1 to 5, made (and owned) by a first resync.
    produce_state(stream, source, [state(vid, name=f"v{vid}", description=f"d{vid}") for vid in range(1, 6)])
    first = stream.cli("resync", source, "--yes")
    assert first.returncode == 0, first.stderr
    assert "created 5, updated 0, deleted 0, claimed 0 in" in first.stdout
    planned = _vlan_rows(group, source)
    # A user puts VLAN 3 at a location: deleting the VLAN deletes that assignment with it.
    site = LocationType.objects.create(name=f"site-{group}")
    site.content_types.add(ContentType.objects.get_for_model(VLAN))
    location = Location.objects.create(name=f"dc-{group}", location_type=site, status=Status.objects.get(name="Active"))
    VLAN.objects.get(vlan_group__name=group, vid=3).locations.add(location)

    # Then the source drops 1, 2 and 3, changes 4 and adds 6.
    gone = [(vlan_key(vid, group), None) for vid in (1, 2, 3)]
    produce_state(stream, source, [*gone, state(4, name="v4", description="new"), state(6, name="v6")])
    resync = subprocess.Popen(
        [STREAMSYNC, "resync", source],
        env=stream.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert resync.stdout is not None
    summary: list[list[str]] = []
    for line in iter(resync.stdout.readline, ""):
        summary.append(line.split())
        if line.startswith("total"):
            break
    assert summary[-2:] == [["vlan", "1", "1", "3", "1", "0"], ["total", "1", "1", "3", "1", "0"]], summary
    # What the deletes take with them, before the question.
    assert [resync.stdout.readline().rstrip("\n") for _ in range(11)] == [
        "MODEL                        DELETE  CASCADE  PROTECTED-BY",
        "ipam.vlan                         3        0             0",
        "ipam.vlanlocationassignment       0        1             0",
        "total                             3        1             0",
        f"{vlan_key(1, group)}: ipam.vlan v1 (1)",
        "    nothing else",
        f"{vlan_key(2, group)}: ipam.vlan v2 (2)",
        "    nothing else",
        f"{vlan_key(3, group)}: ipam.vlan v3 (3)",
        f"    1 vlan location assignment: v3 (3): dc-{group}",
        "this resync will delete 3 VLANs, cascading to 1 vlan location assignment",
    ]
    question = (
        "apply 5 change(s) to Nautobot; this resync will delete 3 VLANs, cascading to 1 vlan location assignment? "
    )
    assert resync.stdout.read(len(question) + 7) == question + "[y/N]: "

    # While it waits for its confirmation, a user edits VLAN 1, and replaces VLAN 2 with one of their own.
    edited = VLAN.objects.get(vlan_group__name=group, vid=1)
    edited.description = "kept by hand"
    edited.validated_save()
    VLAN.objects.get(vlan_group__name=group, vid=2).delete()
    replacement = VLAN.objects.create(
        vlan_group=VLANGroup.objects.get(name=group), vid=2, name="hand-made", status=Status.objects.get(name="Active")
    )

    out, err = resync.communicate("y\n", timeout=180)
    assert resync.returncode == 0, err
    assert out.startswith("created 1, updated 1, deleted 1, claimed 0, left alone 2 in"), out
    assert err.splitlines()[-2:] == [
        f"{vlan_key(1, group)}: changed since the plan: left alone",
        f"{vlan_key(2, group)}: replaced since the plan by another object with its identifiers: left alone",
    ]
    end = _vlan_rows(group, source)
    assert end == {
        1: {**planned[1], "description": "kept by hand"},
        2: {**planned[2], "pk": replacement.pk, "name": "hand-made", "description": "", "owned": False},
        4: {**planned[4], "description": "new"},
        5: planned[5],
        6: {**planned[5], "pk": end[6]["pk"], "name": "v6", "description": ""},
    }
    assert Location.objects.filter(pk=location.pk).exists() and not location.vlans.exists()

    # VLAN 1 is still the source's, which no longer has it: the next plan deletes it, for all to see.
    again = stream.cli("resync", source, "--dry-run")
    assert again.returncode == 0, again.stderr
    assert _summary(again.stdout)["vlan"] == [0, 0, 1, 3, 0]


def test_a_planned_delete_is_checked_under_its_rows_lock() -> None:
    """Between the check and the delete nobody can change the row: `admit` locks it until the transaction ends."""
    import threading

    from django.db import OperationalError, connection, connections, transaction
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    from streamsync.contract.envelope import Event, Op
    from streamsync.models import builtin_model
    from streamsync.ops import guard
    from streamsync.sync import ownership
    from streamsync.sync.registry import ModelRegistry

    source, group = f"s{uuid.uuid4().hex[:8]}", f"rs-{uuid.uuid4().hex[:6]}"
    registry = ModelRegistry([builtin_model("vlan")])
    vlan = VLAN.objects.create(
        vlan_group=VLANGroup.objects.create(name=group), vid=1, name="v1", status=Status.objects.get(name="Active")
    )
    ownership.claim(source, [(registry.get("vlan"), vlan_key(1, group), vlan.pk)])
    event = Event(source=source, model="vlan", op=Op.DELETE, key={"vid": 1, "vlan_group__name": group})
    planned = guard.PlannedDelete(event, vlan.pk, guard.fingerprints(VLAN, [vlan.pk])[vlan.pk])

    def edit() -> str:
        """A user's save from another connection, giving up after half a second of waiting."""
        outcome: list[str] = []

        def run() -> None:
            try:
                with connections["default"].cursor() as cursor:
                    cursor.execute("SET lock_timeout = '500ms'")
                    cursor.execute("UPDATE ipam_vlan SET description = 'by hand' WHERE id = %s", [vlan.pk])
                outcome.append("saved")
            except OperationalError as error:
                outcome.append(f"waited: {type(error.__cause__).__name__}")
            finally:
                connections["default"].close()

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(30)
        return outcome[0]

    with transaction.atomic():
        admission = guard.admit(source, registry, [planned])
        assert admission.admitted == [planned] and not admission.left_alone
        assert edit() == "waited: LockNotAvailable"
        transaction.set_rollback(True)
    assert not connection.in_atomic_block
    assert edit() == "saved"
    assert VLAN.objects.get(pk=vlan.pk).description == "by hand"


def test_resync_never_creates_its_user_and_refuses_before_writing(stream: Stream, tmp_path: Path) -> None:
    from django.contrib.auth import get_user_model
    from nautobot.ipam.models import VLANGroup

    missing = f"gone-{uuid.uuid4().hex[:6]}"
    stream, source = own_source(stream, tmp_path, user=missing)
    get_user_model().objects.filter(username=missing).delete()  # set up by own_source; deleted since
    group = f"rs-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    produce_state(stream, source, [(vlan_key(1, group), vlan_event("upsert", 1, group, source, name="one"))])

    refused = stream.cli("resync", source, "--yes")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        f"Error: Nautobot user {missing!r} does not exist: streamsync does not write as it; "
        "grant them (docs/security.md) or run: streamsync setup-user"
    )
    assert vlans(group) == {}
    assert not get_user_model().objects.filter(username=missing).exists()
