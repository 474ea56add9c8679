"""Nautobot to a remote system: the example SQLite inventory target, in process and behind a real worker.

The store is a real SQLite database file; Nautobot's changes travel broker → outbox → relay →
`<prefix>.nautobot.events` → target agent, on the real stack.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamsync.contract.envelope import Event
from streamsync.sync.batch import Outcome
from streamsync.targets import TargetUnavailable
from streamsync.targets.apply import TargetEngine
from streamsync.targets.sqlite import SQLiteInventory
from tests.integration.conftest import Stream, WorkerProcess, free_port, wait_for, write_nautobot_config
from tests.integration.prometheus import scrape, value
from tests.integration.state_helpers import publish, vlan_event, vlan_key

pytestmark = pytest.mark.integration

REFUSE_FORBIDDEN = """
CREATE TRIGGER refuse_forbidden BEFORE INSERT ON vlan WHEN NEW.name = 'forbidden'
BEGIN SELECT RAISE(ABORT, 'refused by the inventory: name is forbidden'); END
"""


def _rows(path: Path) -> dict[tuple[int, str], dict[str, Any]]:
    """Every VLAN row of the inventory, by (vid, group)."""
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        try:
            rows = db.execute("SELECT * FROM vlan").fetchall()
        except sqlite3.OperationalError:  # not created yet
            return {}
    return {(row["vid"], row["vlan_group"]): dict(row) for row in rows}


def _event(op: str, vid: int, group: str | None, **attrs: Any) -> Event:
    return Event.model_validate(vlan_event(op, vid, group, "nautobot", **attrs))


def _vlan(vid: int, group: str | None, name: str, **attrs: Any) -> Event:
    """A Nautobot VLAN event as the event broker writes it: every attribute of the model."""
    return _event(
        "upsert",
        vid,
        group,
        **{
            "name": name,
            "status__name": "Active",
            "role__name": None,
            "tenant__name": None,
            "description": "",
            "tags": [],
        }
        | attrs,
    )


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    return tmp_path / "inventory.db"


@pytest.fixture
def engine(inventory: Path) -> TargetEngine:
    from streamsync.settings import TargetSettings

    config = TargetSettings(adapter="streamsync.targets.sqlite.SQLiteInventory", models=["vlan"])
    adapter = config.adapter_class()
    assert adapter is SQLiteInventory
    return TargetEngine(config.registry(), lambda: SQLiteInventory(path=str(inventory)))


def test_creates_updates_and_deletes_reach_the_store_and_a_repeat_writes_nothing(
    engine: TargetEngine, inventory: Path
) -> None:
    first = [_vlan(10, "dc1", "users"), _vlan(11, "dc1", "voice"), _vlan(12, None, "global")]
    result = engine.apply(first)
    assert [o.outcome for o in result.objects] == [Outcome.CREATED] * 3
    assert _rows(inventory)[(12, "")]["name"] == "global"

    second = [
        _vlan(10, "dc1", "users", description="floor 3"),
        _event("delete", 11, "dc1"),
        _event("delete", 99, "dc1"),  # never there
        _vlan(12, None, "global"),  # as it is
    ]
    result = engine.apply(second)
    assert {o.key: o.outcome for o in result.objects} == {
        'vlan:{"vid":10,"vlan_group__name":"dc1"}': Outcome.UPDATED,
        'vlan:{"vid":11,"vlan_group__name":"dc1"}': Outcome.DELETED,
        'vlan:{"vid":99,"vlan_group__name":"dc1"}': Outcome.UNCHANGED,
        'vlan:{"vid":12,"vlan_group__name":null}': Outcome.UNCHANGED,
    }
    assert _rows(inventory) == {
        (10, "dc1"): {
            "vid": 10,
            "vlan_group": "dc1",
            "name": "users",
            "status": "Active",
            "tenant": None,
            "description": "floor 3",
        },
        (12, ""): {
            "vid": 12,
            "vlan_group": "",
            "name": "global",
            "status": "Active",
            "tenant": None,
            "description": "",
        },
    }
    # Delivered again (at least once): the diff finds nothing to write.
    assert {o.outcome for o in engine.apply(first + second).objects} == {Outcome.UNCHANGED}


def test_an_object_the_store_refuses_fails_alone(engine: TargetEngine, inventory: Path) -> None:
    engine.apply([_vlan(1, "dc1", "seed")])
    with sqlite3.connect(inventory) as db:
        db.execute(REFUSE_FORBIDDEN)
    result = engine.apply([_vlan(2, "dc1", "forbidden"), _vlan(3, "dc1", "fine"), _event("delete", 1, "dc1")])
    outcomes = {o.key: (o.outcome, o.reason) for o in result.objects}
    assert outcomes['vlan:{"vid":2,"vlan_group__name":"dc1"}'][0] is Outcome.FAILED
    assert "refused by the inventory" in outcomes['vlan:{"vid":2,"vlan_group__name":"dc1"}'][1]
    assert set(_rows(inventory)) == {(3, "dc1")}


LOG_DELETES = """
CREATE TABLE IF NOT EXISTS deleted (vid INTEGER, name TEXT);
CREATE TRIGGER IF NOT EXISTS log_deletes AFTER DELETE ON vlan BEGIN INSERT INTO deleted VALUES (OLD.vid, OLD.name); END;
"""


def test_a_delete_and_an_upsert_of_one_key_in_one_batch_delete_the_row_and_create_it_again(
    engine: TargetEngine, inventory: Path
) -> None:
    """As in two batches: the store sees a delete, then an insert (its own identity, triggers, cascades)."""
    ends = []
    for batches in (
        [[_event("delete", 7, "dc1"), _vlan(7, "dc1", "new")]],
        [[_event("delete", 7, "dc1")], [_vlan(7, "dc1", "new")]],
    ):
        inventory.unlink(missing_ok=True)
        engine.apply([_vlan(7, "dc1", "old", description="was here")])
        with sqlite3.connect(inventory) as db:
            db.executescript(LOG_DELETES)
        outcomes = [o.outcome for batch in batches for o in engine.apply(batch).objects]
        with sqlite3.connect(inventory) as db:
            deleted = db.execute("SELECT vid, name FROM deleted").fetchall()
        ends.append((outcomes, deleted, _rows(inventory)))
    assert ends[0] == ends[1]
    outcomes, deleted, rows = ends[0]
    assert outcomes == [Outcome.DELETED, Outcome.CREATED]
    assert deleted == [(7, "old")]
    assert rows[(7, "dc1")]["description"] == "" and rows[(7, "dc1")]["name"] == "new"


def test_events_that_do_not_fit_the_model_are_rejected_and_nothing_is_written(
    engine: TargetEngine, inventory: Path
) -> None:
    result = engine.apply([_event("upsert", 5, "dc1", name="x", colour="red"), _vlan(6, "dc1", "ok")])
    assert [r.code.value for r in result.rejected] == ["undeclared_attribute"]
    assert set(_rows(inventory)) == {(6, "dc1")}


def test_a_locked_store_is_unavailable_and_keeps_nothing_of_the_batch(engine: TargetEngine, inventory: Path) -> None:
    engine.apply([_vlan(1, "dc1", "seed")])
    blocker = sqlite3.connect(inventory, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        fast = TargetEngine(engine.registry, lambda: SQLiteInventory(path=str(inventory), timeout=0.2))
        with pytest.raises(TargetUnavailable, match="locked"):
            fast.apply([_vlan(2, "dc1", "two")])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert set(_rows(inventory)) == {(1, "dc1")}
    engine.apply([_vlan(2, "dc1", "two")])
    assert set(_rows(inventory)) == {(1, "dc1"), (2, "dc1")}


NO_GROUP = 'vlan:{"vid":100,"vlan_group__name":null}'
NAMED_NONE = 'vlan:{"vid":100,"vlan_group__name":"None"}'


def _row(vid: int, group: str, name: str, **attrs: Any) -> dict[str, Any]:
    """An inventory row as `_rows` reads it, with the values a VLAN event sets unless given."""
    return {
        "vid": vid,
        "vlan_group": group,
        "name": name,
        "status": "Active",
        "tenant": None,
        "description": "",
    } | attrs


def test_vlans_whose_unique_ids_collide_are_two_rows_through_create_update_and_delete(
    engine: TargetEngine, inventory: Path
) -> None:
    """No group and a group named "None": rows (100, '') and (100, 'None'), both `100__None` to diffsync."""
    other = 'vlan:{"vid":11,"vlan_group__name":"dc1"}'
    created = engine.apply(
        [_vlan(100, None, "global"), _vlan(11, "dc1", "other"), _vlan(100, "None", "named", description="in None")]
    )
    assert [(o.key, o.outcome) for o in created.objects] == [
        (NO_GROUP, Outcome.CREATED),
        (other, Outcome.CREATED),
        (NAMED_NONE, Outcome.CREATED),
    ]
    assert _rows(inventory) == {
        (100, ""): _row(100, "", "global"),
        (11, "dc1"): _row(11, "dc1", "other"),
        (100, "None"): _row(100, "None", "named", description="in None"),
    }

    updated = engine.apply(
        [_vlan(100, "None", "named", description="still in None"), _vlan(100, None, "global", status__name="Reserved")]
    )
    assert {o.key: o.outcome for o in updated.objects} == {NAMED_NONE: Outcome.UPDATED, NO_GROUP: Outcome.UPDATED}
    assert _rows(inventory) == {
        (100, ""): _row(100, "", "global", status="Reserved"),
        (11, "dc1"): _row(11, "dc1", "other"),
        (100, "None"): _row(100, "None", "named", description="still in None"),
    }

    deleted = engine.apply([_event("delete", 100, None), _event("delete", 100, "None")])
    assert {o.key: o.outcome for o in deleted.objects} == {NO_GROUP: Outcome.DELETED, NAMED_NONE: Outcome.DELETED}
    assert _rows(inventory) == {(11, "dc1"): _row(11, "dc1", "other")}


def test_a_row_of_the_store_is_not_taken_for_its_namesake(engine: TargetEngine, inventory: Path) -> None:
    """Loaded together, the row without a group would stand for the VLAN in the group named "None" too."""
    engine.apply([_vlan(100, None, "global")])
    result = engine.apply([_vlan(100, "None", "named"), _vlan(100, None, "global", description="no group")])
    assert [(o.key, o.outcome) for o in result.objects] == [(NAMED_NONE, Outcome.CREATED), (NO_GROUP, Outcome.UPDATED)]
    assert _rows(inventory) == {
        (100, ""): _row(100, "", "global", description="no group"),
        (100, "None"): _row(100, "None", "named"),
    }


@pytest.fixture
def target_stream(stream: Stream, tmp_path: Path, inventory: Path) -> Stream:
    """The test's stream with "inventory" both a source and a target, writing to a SQLite file."""
    config = write_nautobot_config(
        tmp_path / "nautobot_config.py",
        sources={"ipam": {"models": ["vlan"]}, "inventory": {"models": ["vlan"]}},
        targets={
            "inventory": {
                "adapter": "streamsync.targets.sqlite.SQLiteInventory",
                "models": ["vlan"],
                "options": {"path": str(inventory)},
            }
        },
        batch_timeout=0.3,
    )
    return dataclasses.replace(stream, extra_env={"NAUTOBOT_CONFIG": str(config)})


def test_a_worker_writes_users_changes_to_the_target_but_not_the_targets_own_changes(
    broker: Any,
    alice: Any,
    group: str,
    target_stream: Stream,
    inventory: Path,
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    from nautobot.extras.context_managers import web_request_context
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    port = free_port()
    worker = start_worker("--metrics-port", str(port), "--metrics-address", "127.0.0.1", on=target_stream)
    active = Status.objects.get(name="Active")
    vlan_group = VLANGroup.objects.get(name=group)
    with web_request_context(alice):
        VLAN.objects.create(vid=100, name="users", vlan_group=vlan_group, status=active)
        VLAN.objects.create(vid=101, name="voice", vlan_group=vlan_group, status=active, description="phones")

    def row(vid: int) -> dict[str, Any] | None:
        return _rows(inventory).get((vid, group))

    wait_for(lambda: row(100) is not None and row(101) is not None, 90, "the new VLANs in the inventory", worker)
    assert row(101) == {
        "vid": 101,
        "vlan_group": group,
        "name": "voice",
        "status": "Active",
        "tenant": None,
        "description": "phones",
    }

    with web_request_context(alice):
        vlan = VLAN.objects.get(vid=100, vlan_group=vlan_group)
        vlan.description = "floor 3"
        vlan.validated_save()
        VLAN.objects.get(vid=101, vlan_group=vlan_group).delete()
    wait_for(
        lambda: (row(100) or {}).get("description") == "floor 3" and row(101) is None,
        60,
        "the update and the delete in the inventory",
        worker,
    )

    # The inventory's own change comes back from Nautobot marked as its own, and is skipped;
    # ipam's change is Nautobot's news for the inventory, and is written.
    from_inventory = vlan_event("upsert", 300, group, "inventory", name="from-inventory")
    publish(target_stream, tmp_path, from_inventory, source="inventory")
    publish(target_stream, tmp_path, vlan_event("upsert", 301, group, "ipam", name="from-ipam"), source="ipam")
    wait_for(lambda: row(301) is not None, 90, "ipam's VLAN in the inventory", worker)
    wait_for(lambda: '"echoes_skipped": 1' in worker.output(), 60, "the inventory's own change skipped", worker)
    assert VLAN.objects.filter(vid=300, vlan_group=vlan_group, name="from-inventory").exists()
    assert row(300) is None, "the inventory's own change was written back to it"

    # The worker counts what the target did, and the echo it skipped.
    samples = scrape(port)
    done = {
        outcome: value(samples, "streamsync_target_events_total", target="inventory", outcome=outcome)
        for outcome in ("created", "updated", "deleted")
    }
    assert done == {"created": 3.0, "updated": 1.0, "deleted": 1.0}
    assert value(samples, "streamsync_target_echoes_skipped_total", target="inventory") == 1.0


def test_a_change_the_target_refuses_is_dead_lettered_and_the_rest_goes_on(
    broker: Any,
    alice: Any,
    group: str,
    target_stream: Stream,
    inventory: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    from nautobot.extras.context_managers import web_request_context
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    with sqlite3.connect(inventory) as db:
        db.execute(
            "CREATE TABLE vlan (vid INTEGER, vlan_group TEXT, name TEXT, status TEXT, tenant TEXT, "
            "description TEXT NOT NULL DEFAULT '', PRIMARY KEY (vid, vlan_group))"
        )
        db.execute(REFUSE_FORBIDDEN)
    worker = start_worker(on=target_stream)
    active = Status.objects.get(name="Active")
    with web_request_context(alice):
        for vid, name in ((200, "forbidden"), (201, "fine")):
            VLAN.objects.create(vid=vid, name=name, vlan_group=VLANGroup.objects.get(name=group), status=active)

    wait_for(lambda: (201, group) in _rows(inventory), 90, "the accepted VLAN in the inventory", worker)

    def letters() -> list[dict[str, Any]]:
        listed = target_stream.cli("dlq", "list", "inventory", "--json")
        assert listed.returncode == 0, listed.stderr
        return [json.loads(line) for line in listed.stdout.splitlines()]

    wait_for(lambda: len(letters()) == 1, 60, "the refused VLAN's dead letter", worker)
    (letter,) = letters()
    assert letter["code"] == "apply_failed"
    assert "refused by the inventory" in letter["reason"]
    assert letter["original_topic"] == f"{target_stream.prefix}.nautobot.events"
    assert json.loads(letter["value"])["key"] == {"vid": 200, "vlan_group__name": group}
    assert (200, group) not in _rows(inventory)

    # The inventory's owners lift the rule; the replayed letter goes back to Nautobot's events topic.
    with sqlite3.connect(inventory) as db:
        db.execute("DROP TRIGGER refuse_forbidden")
    replayed = target_stream.cli("dlq", "replay", "inventory", "--yes")
    assert replayed.returncode == 0, replayed.stderr
    assert f"to {target_stream.prefix}.nautobot.events" in replayed.stdout
    wait_for(lambda: (200, group) in _rows(inventory), 60, "the replayed VLAN in the inventory", worker)


def _two_targets(stream: Stream, tmp_path: Path, inventory: Path, archive: Path) -> Stream:
    """The test's stream with two SQLite targets, "inventory" (also a source) and "archive"."""
    sqlite = "streamsync.targets.sqlite.SQLiteInventory"
    config = write_nautobot_config(
        tmp_path / "nautobot_config.py",
        sources={"inventory": {"models": ["vlan"]}},
        targets={
            "inventory": {"adapter": sqlite, "models": ["vlan"], "options": {"path": str(inventory)}},
            "archive": {"adapter": sqlite, "models": ["vlan"], "options": {"path": str(archive)}},
        },
        batch_timeout=0.3,
    )
    return dataclasses.replace(stream, extra_env={"NAUTOBOT_CONFIG": str(config)})


def _letters_of(stream: Stream, target: str) -> list[dict[str, Any]]:
    listed = stream.cli("dlq", "list", target, "--json")
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


def _target_batches(worker: WorkerProcess, target: str) -> list[dict[str, Any]]:
    """The worker's "target batch committed" log records of `target`."""
    found = []
    for line in worker.output().splitlines():
        if '"target batch committed"' in line:
            record = json.loads(line)
            if record.get("target") == target:
                found.append(record)
    return found


def test_a_targets_letters_are_replayed_to_that_target_alone_and_superseded_ones_not_at_all(
    broker: Any,
    alice: Any,
    group: str,
    stream: Stream,
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    from nautobot.extras.context_managers import web_request_context
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    inventory, archive = tmp_path / "inventory.db", tmp_path / "archive.db"
    with sqlite3.connect(inventory) as db:
        db.execute(
            "CREATE TABLE vlan (vid INTEGER, vlan_group TEXT, name TEXT, status TEXT, tenant TEXT, "
            "description TEXT NOT NULL DEFAULT '', PRIMARY KEY (vid, vlan_group))"
        )
        db.execute(REFUSE_FORBIDDEN.replace("NEW.name = 'forbidden'", "NEW.name LIKE 'forbidden%'"))
    on = _two_targets(stream, tmp_path, inventory, archive)
    port = free_port()
    worker = start_worker("--metrics-port", str(port), "--metrics-address", "127.0.0.1", on=on)
    active, vlan_group = Status.objects.get(name="Active"), VLANGroup.objects.get(name=group)
    with web_request_context(alice):
        for vid, name in ((200, "forbidden"), (201, "fine"), (202, "forbidden-too")):
            VLAN.objects.create(vid=vid, name=name, vlan_group=vlan_group, status=active)
    wait_for(lambda: len(_letters_of(on, "inventory")) == 2, 90, "the inventory's two letters", worker)
    # 202 is renamed: the inventory takes the newer change, and 202's letter is superseded by it.
    with web_request_context(alice):
        renamed = VLAN.objects.get(vid=202, vlan_group=vlan_group)
        renamed.name = "allowed"
        renamed.validated_save()
    wait_for(lambda: (202, group) in _rows(inventory), 60, "the renamed VLAN in the inventory", worker)
    wait_for(lambda: (_rows(archive).get((202, group)) or {}).get("name") == "allowed", 60, "the archive", worker)

    letters = {json.loads(letter["value"])["key"]["vid"]: letter for letter in _letters_of(on, "inventory")}
    assert sorted(letters) == [200, 202]
    assert letters[200]["superseded_by"] is None
    newer = letters[202]["superseded_by"]
    assert newer["topic"] == f"{on.prefix}.nautobot.events"
    assert newer["partition"] == letters[202]["original_partition"]
    assert newer["offset"] > letters[202]["original_offset"]
    assert _letters_of(on, "archive") == []

    # The archive's owners annotate their copy of 200: a stale copy of Nautobot's change would undo it.
    with sqlite3.connect(archive) as db:
        db.execute("UPDATE vlan SET description = 'kept by the archive' WHERE vid = 200")
    archived = _rows(archive)
    assert archived[(200, group)]["description"] == "kept by the archive"
    assert {vid for vid, _ in archived} == {200, 201, 202}

    with sqlite3.connect(inventory) as db:
        db.execute("DROP TRIGGER refuse_forbidden")
    replayed = on.cli("dlq", "replay", "inventory", "--yes")
    assert replayed.returncode == 0, replayed.stderr
    assert (
        f"replayed 1 dead letter(s) to {on.prefix}.nautobot.events; skipped 1 superseded, left out 0 truncated"
        in replayed.stdout
    )
    assert f"superseded, not replayed: {letters[202]['partition']}@{letters[202]['offset']}" in replayed.stderr

    wait_for(lambda: (200, group) in _rows(inventory), 60, "the replayed VLAN in the inventory", worker)
    wait_for(
        lambda: sum(b["redrives_skipped"] for b in _target_batches(worker, "archive")) == 1,
        60,
        "the archive skipping the inventory's letter",
        worker,
    )
    assert _rows(inventory) == {
        (200, group): _row(200, group, "forbidden"),
        (201, group): _row(201, group, "fine"),
        (202, group): _row(202, group, "allowed"),  # not rolled back to "forbidden-too"
    }
    assert _rows(archive) == archived
    assert sum(b["redrives_skipped"] for b in _target_batches(worker, "inventory")) == 0
    samples = scrape(port)
    skipped = {"agent": "streamsync.target.archive", "reason": "redrive_for_another_target"}
    assert value(samples, "streamsync_records_skipped_total", **skipped) == 1.0
    assert value(samples, "streamsync_target_events_total", target="archive", outcome="created") == 3.0
    assert _letters_of(on, "inventory") == []


def test_a_systems_own_change_replayed_from_its_target_letters_is_not_written_back_to_it(
    group: str,
    stream: Stream,
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """A letter keeps the original headers, `streamsync-origin` among them, and replay sends them on.

    The target agent skips its own changes before applying anything, so it refuses none by itself:
    the letter is written here as the worker writes one (`DeadLetter.record`), from the real echo
    record the relay produced for the inventory's own change.
    """
    from streamsync.contract.deadletter import APPLY_FAILED, DeadLetter
    from streamsync.contract.records import Origin
    from streamsync.kafka.admin import partitions
    from streamsync.kafka.clients import admin_client, consumer, produce_records
    from streamsync.outbox.broker import HEADER_ORIGIN

    inventory, archive = tmp_path / "inventory.db", tmp_path / "archive.db"
    on = _two_targets(stream, tmp_path, inventory, archive)
    worker = start_worker(on=on)
    publish(on, tmp_path, vlan_event("upsert", 300, group, "inventory", name="from-inventory"), source="inventory")
    wait_for(lambda: (300, group) in _rows(archive), 90, "the inventory's change in the archive", worker)
    wait_for(
        lambda: sum(b["echoes_skipped"] for b in _target_batches(worker, "inventory")) == 1, 60, "the echo", worker
    )
    nautobot_topic = f"{on.prefix}.nautobot.events"

    async def echo() -> Origin:
        """The record the relay produced for the inventory's change, as the target agent received it."""
        async with admin_client(on.bootstrap) as admin:
            tps = await partitions(admin, [nautobot_topic])
        async with consumer(on.bootstrap) as reader:
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            while True:
                for tp, records in (await reader.getmany(*tps, timeout_ms=1000)).items():
                    for r in records:
                        if r.key == vlan_key(300, group).encode():
                            headers = tuple((n, bytes(v)) for n, v in r.headers)
                            return Origin(r.key, r.value, tp.topic, tp.partition, r.offset, headers)

    original = asyncio.run(asyncio.wait_for(echo(), 60))
    assert original.header(HEADER_ORIGIN) == b"inventory"
    letter = DeadLetter.of(original, APPLY_FAILED, "refused by the inventory", source="nautobot")
    asyncio.run(produce_records(on.bootstrap, [letter.record(f"{on.prefix}.inventory.dlq", original, 1 << 20)]))
    (listed,) = _letters_of(on, "inventory")
    assert listed["superseded_by"] is None and listed["original_offset"] == original.offset

    replayed = on.cli("dlq", "replay", "inventory", "--yes")
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed 1 dead letter(s) to {nautobot_topic}" in replayed.stdout
    wait_for(
        lambda: sum(b["echoes_skipped"] for b in _target_batches(worker, "inventory")) == 2,
        60,
        "the replayed echo skipped by the inventory",
        worker,
    )
    wait_for(
        lambda: sum(b["redrives_skipped"] for b in _target_batches(worker, "archive")) == 1,
        60,
        "the replayed letter skipped by the archive",
        worker,
    )
    assert _rows(inventory) == {}, "the inventory's own change was written back to it"
    assert set(_rows(archive)) == {(300, group)}
