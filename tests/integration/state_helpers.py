"""Helpers shared by the state topic, snapshot, resync and replay tests: VLAN events and what the topics hold."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamsync.contract.envelope import canonical_key
from tests.integration.conftest import Stream, write_nautobot_config


def vlan_event(op: str, vid: int, group: str | None, source: str = "ipam", **attrs: Any) -> dict[str, Any]:
    """An envelope-v1 event for VLAN `vid` of `group`."""
    return {
        "schema": "streamsync.event/v1",
        "id": str(uuid.uuid4()),
        "source": source,
        "model": "vlan",
        "op": op,
        "key": {"vid": vid, "vlan_group__name": group},
        "attrs": attrs,
        "ts": "2026-11-25T17:00:00.123Z",
    }


def vlan_key(vid: int, group: str) -> str:
    """The canonical key of VLAN `vid` of `group`."""
    return canonical_key("vlan", {"vid": vid, "vlan_group__name": group})


def publish(stream: Stream, tmp_path: Path, *events: dict[str, Any], source: str = "ipam") -> None:
    """`streamsync publish SOURCE` a file of these events."""
    path = tmp_path / f"events-{uuid.uuid4().hex[:6]}.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    result = stream.cli("publish", source, str(path))
    assert result.returncode == 0, f"publish failed:\n{result.stdout}\n{result.stderr}"
    assert f"published {len(events)} event(s)" in result.stdout


def state_values(stream: Stream, source: str = "ipam") -> dict[str, Any]:
    """The state topic as a consumer sees it: per key the latest value, decoded (None for a tombstone)."""
    from streamsync.contract.topics import state_topic
    from streamsync.ops.statetopic import read_state

    read = asyncio.run(read_state(stream.bootstrap, state_topic(source, stream.prefix)))
    return {key: json.loads(value) if value is not None else None for key, value in read.values.items()}


def vlans(group: str) -> dict[int, tuple[str, str]]:
    """The VLANs of `group` in Nautobot: vid -> (name, description)."""
    from nautobot.ipam.models import VLAN

    return {v.vid: (v.name, v.description) for v in VLAN.objects.filter(vlan_group__name=group)}


def own_source(
    stream: Stream, tmp_path: Path, models: Sequence[str] = ("vlan",), **settings: Any
) -> tuple[Stream, str]:
    """A source of this test's own (writing `models`, VLANs unless told), and the stream whose processes know it.

    Its user is set up with the models' permissions, as an operator would before a resync.

    Ownership is per source name and the test database is shared by a whole run: a source of its
    own keeps a test's resync from seeing other tests' objects as its own.
    """
    from streamsync.settings import resolve_model
    from streamsync.sync.permissions import grant

    source = f"s{uuid.uuid4().hex[:8]}"
    sources = {source: {"models": list(models)}}
    config = write_nautobot_config(tmp_path / "nautobot_config.py", sources=sources, **settings)
    # As `streamsync setup-user` does: resync never creates it.
    grant(str(settings.get("user", "streamsync")), [resolve_model(name)._model for name in models])  # type: ignore[attr-defined]
    return dataclasses.replace(stream, extra_env={**stream.extra_env, "NAUTOBOT_CONFIG": str(config)}), source


def produce_state(stream: Stream, source: str, records: list[tuple[str, dict[str, Any] | None]]) -> None:
    """Write (key, value) records to SOURCE's state topic as they are; None is a tombstone."""
    from streamsync.contract.topics import state_topic
    from streamsync.kafka.admin import TopicSpec, ensure_topics
    from streamsync.kafka.clients import produce_raw

    topic = state_topic(source, stream.prefix)

    async def produce() -> None:
        await ensure_topics(stream.bootstrap, [TopicSpec(topic, compacted=True)])
        raw = [(key.encode(), json.dumps(value).encode() if value is not None else None) for key, value in records]
        await produce_raw(stream.bootstrap, topic, raw)

    asyncio.run(produce())
