"""The producer client: the worker's own envelope code, checked and keyed before anything is sent."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import pytest

import streamsync_client
from streamsync.contract import envelope, partitioning, topics
from streamsync.kafka.clients import producer_kwargs
from streamsync_client import (
    PRODUCER_SETTINGS,
    BlockingPublisher,
    EnvelopeError,
    Event,
    Op,
    Publisher,
    RejectCode,
    build_event,
    canonical_key,
    decode,
)

ROOT = Path(__file__).resolve().parents[2]


def _nested(levels: int) -> object:
    value: object = "x"
    for _ in range(levels):
        value = [value]
    return value


def test_the_worker_decodes_with_the_clients_own_code() -> None:
    assert envelope.Event is Event
    assert envelope.decode is decode
    assert envelope.canonical_key is canonical_key
    assert partitioning.murmur2_partitioner is streamsync_client.murmur2_partitioner
    assert topics.events_topic is streamsync_client.events_topic


def test_streamsyncs_producers_are_set_up_as_the_clients() -> None:
    kwargs = producer_kwargs("127.0.0.1:9092")
    assert {name: kwargs[name] for name in PRODUCER_SETTINGS} == PRODUCER_SETTINGS
    assert PRODUCER_SETTINGS["acks"] == "all"
    assert PRODUCER_SETTINGS["enable_idempotence"] is True


def test_the_app_requires_the_client_version_of_this_repository() -> None:
    app = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    client = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    assert f"streamsync-client=={client['version']}" in app
    assert set(client["dependencies"]) == {"aiokafka>=0.13,<0.15", "pydantic>=2,<3"}
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    assert f"streamsync-client=={client['version']}" in constraints


def test_build_event_gives_what_the_worker_reads_back() -> None:
    event = build_event("ipam", "vlan", Op.UPSERT, {"vid": 100, "vlan_group__name": "dc1"}, {"name": "users"})
    assert decode(event.to_bytes()) == event
    assert event.canonical_key == 'vlan:{"vid":100,"vlan_group__name":"dc1"}'


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"key": {"vid": 1.5}}, RejectCode.INVALID_ENVELOPE),
        ({"key": {"vid": "1"}, "model": ""}, RejectCode.INVALID_ENVELOPE),
        ({"attrs": {"name": "a\x00b"}}, RejectCode.UNSTORABLE_STRING),
        ({"attrs": {"name": _nested(31)}}, RejectCode.TOO_DEEP),
    ],
)
def test_build_event_refuses_what_the_worker_would_dead_letter(fields: dict[str, object], code: RejectCode) -> None:
    args: dict[str, object] = {"model": "vlan", "key": {"vid": 1}, "attrs": {}, **fields}
    with pytest.raises(EnvelopeError) as raised:
        build_event("ipam", str(args["model"]), Op.UPSERT, args["key"], args["attrs"])  # type: ignore[arg-type]
    assert raised.value.code == code


def test_a_publisher_sends_only_its_sources_events_and_only_once_started() -> None:
    publisher = Publisher("ipam", "127.0.0.1:1")
    assert publisher.topic == "streamsync.ipam.events"
    other = build_event("cmdb", "vlan", Op.DELETE, {"vid": 1})
    with pytest.raises(ValueError, match="'cmdb' is not this publisher's 'ipam'"):
        asyncio.run(publisher.send(other))
    with pytest.raises(RuntimeError, match="not started"):
        asyncio.run(publisher.upsert("vlan", {"vid": 1}, {"name": "x"}))
    assert asyncio.run(publisher.flush()) == 0


def test_a_blocking_publisher_says_when_it_is_not_started() -> None:
    publisher = BlockingPublisher("ipam", "127.0.0.1:1")
    with pytest.raises(RuntimeError, match="not started"):
        publisher.upsert("vlan", {"vid": 1}, {"name": "x"})
    publisher.close()  # nothing to close
