"""An example target: an inventory database (SQLite) that receives Nautobot's VLANs.

It stands for any system of record that should follow Nautobot: the models say how one object is
created, updated and deleted there, the adapter how a batch's objects are loaded by key. Configure:

    PLUGINS_CONFIG["streamsync"]["targets"] = {
        "inventory": {
            "adapter": "streamsync.targets.sqlite.SQLiteInventory",
            "models": ["vlan"],
            "options": {"path": "/var/lib/inventory/inventory.db"},
        }
    }
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self

from diffsync import DiffSyncModel

from streamsync.targets.base import TargetAdapter, TargetUnavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS vlan (
    vid         INTEGER NOT NULL CHECK (vid BETWEEN 1 AND 4094),
    vlan_group  TEXT    NOT NULL,  -- '' for a VLAN without a group
    name        TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    tenant      TEXT,
    description TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (vid, vlan_group)
)
"""


def _group(value: str | None) -> str:
    return value or ""


class InventoryVLAN(DiffSyncModel):
    """A VLAN row of the inventory; same key as Nautobot's VLAN, fewer attributes (no role, no tags)."""

    _modelname = "vlan"
    _identifiers = ("vid", "vlan_group__name")
    _attributes = ("name", "status__name", "tenant__name", "description")

    vid: int
    vlan_group__name: str | None = None
    name: str
    status__name: str = "Active"
    tenant__name: str | None = None
    description: str = ""

    @classmethod
    def create(cls, adapter: Any, ids: dict[str, Any], attrs: dict[str, Any]) -> Self | None:
        """INSERT the row."""
        model = super().create(adapter, ids, attrs)
        if model is not None:
            adapter.execute(
                "INSERT INTO vlan (vid, vlan_group, name, status, tenant, description) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    model.vid,
                    _group(model.vlan_group__name),
                    model.name,
                    model.status__name,
                    model.tenant__name,
                    model.description,
                ),
            )
        return model

    def update(self, attrs: dict[str, Any]) -> Self | None:
        """UPDATE only the columns that changed."""
        columns = {"name": "name", "status__name": "status", "tenant__name": "tenant", "description": "description"}
        assignments = ", ".join(f"{columns[name]} = ?" for name in attrs)
        self.adapter.execute(  # type: ignore[union-attr]
            f"UPDATE vlan SET {assignments} WHERE vid = ? AND vlan_group = ?",  # noqa: S608 (column names are fixed)
            (*attrs.values(), self.vid, _group(self.vlan_group__name)),
        )
        return super().update(attrs)

    def delete(self) -> Self | None:
        """DELETE the row."""
        self.adapter.execute(  # type: ignore[union-attr]
            "DELETE FROM vlan WHERE vid = ? AND vlan_group = ?", (self.vid, _group(self.vlan_group__name))
        )
        return super().delete()


class SQLiteInventory(TargetAdapter):
    """The inventory database at `path`; one connection and one transaction per batch."""

    vlan = InventoryVLAN
    top_level: ClassVar[list[str]] = ["vlan"]

    def __init__(self, *args: Any, path: str, timeout: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.connection = sqlite3.connect(path, timeout=timeout, isolation_level=None)
            self.connection.execute(SCHEMA)
            self.connection.execute("BEGIN IMMEDIATE")  # the batch's one write transaction
        except sqlite3.OperationalError as error:  # locked, unreadable, disk full: not the objects' fault
            raise TargetUnavailable(f"inventory database {path}: {error}") from error

    def load_keys(self, keys: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        """One query for the batch's VLANs."""
        wanted = [(k["vid"], _group(k.get("vlan_group__name"))) for k in keys.get("vlan", [])]
        if not wanted:
            return
        pairs = ", ".join("(?, ?)" for _ in wanted)  # one placeholder pair per key; values stay parameters
        columns = "vid, vlan_group, name, status, tenant, description"
        sql = f"SELECT {columns} FROM vlan WHERE (vid, vlan_group) IN (VALUES {pairs})"  # noqa: S608
        rows = self.execute(sql, tuple(value for pair in wanted for value in pair)).fetchall()
        for vid, group, name, status, tenant, description in rows:
            self.add(
                InventoryVLAN(
                    vid=vid,
                    vlan_group__name=group or None,
                    name=name,
                    status__name=status,
                    tenant__name=tenant,
                    description=description,
                )
            )

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run one statement; a locked database is the target being unavailable, not a bad object."""
        try:
            return self.connection.execute(sql, parameters)
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise TargetUnavailable(f"inventory database: {error}") from error
            raise

    @contextlib.contextmanager
    def object_scope(self) -> Iterator[None]:
        """A savepoint per object: a refused row undoes only itself."""
        self.connection.execute("SAVEPOINT object")
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK TO object")
            raise
        finally:
            self.connection.execute("RELEASE object")

    def commit(self) -> None:
        """COMMIT the batch."""
        try:
            self.connection.execute("COMMIT")
        except sqlite3.OperationalError as error:
            raise TargetUnavailable(f"inventory database: {error}") from error

    def close(self) -> None:
        """Roll back whatever was not committed, and close."""
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")
        self.connection.close()
