"""Every client the contract allows sends a key to the same partition: Java, streamsync, faust, confluent-kafka.

The same canonical keys are produced by each client to one topic, read back, and their partitions
compared with each other and with `partition_for`. librdkafka's own default (CRC32) is shown to
send some of them elsewhere: that is why the contract names `partitioner=murmur2_random`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import zlib
from collections import defaultdict
from pathlib import Path

import pytest

from streamsync.contract.envelope import canonical_key
from streamsync.contract.partitioning import murmur2_partitioner, partition_for
from streamsync.kafka.admin import TopicSpec, ensure_topics
from streamsync.kafka.clients import consumer, produce_raw
from tests.integration.conftest import ROOT, Stream, _deploy, shared_home

pytestmark = pytest.mark.integration

PARTITIONS = 6
PRODUCE_KEYS = Path(__file__).with_name("ProduceKeys.java")
CLIENTS = ("java", "streamsync", "faust", "confluent-murmur2_random")


def canonical_keys() -> list[bytes]:
    """50 keys as producers write them, non-ASCII identifiers included."""
    places = ["dc1", "Zürich", "東京", "São Paulo", "Kraków", "Αθήνα", "Москва", "🚀 lab", "Genève", "Reykjavík"]
    keys = [
        canonical_key("vlan", {"vid": vid, "vlan_group__name": place}) for place in places[:3] for vid in (1, 2, 100)
    ]
    keys += [canonical_key("location", {"name": place, "location_type__name": "Site"}) for place in places]
    keys += [canonical_key("vlangroup", {"name": place}) for place in places]
    keys += [canonical_key("device", {"name": f"rtr-{i}-ß", "location__name": places[i]}) for i in range(8)]
    keys += [canonical_key("interface", {"device__name": "東京-core-1", "name": f"Gi0/{i}"}) for i in range(6)]
    keys += [
        canonical_key("prefix", {"network": f"10.{i}.0.0", "prefix_length": 16, "namespace__name": "Global"})
        for i in range(4)
    ]
    keys += [
        canonical_key("ipaddress", {"host": f"2001:db8::{i}", "parent__namespace__name": "Global"}) for i in range(3)
    ]
    assert len(keys) == len(set(keys)) == 50
    return [key.encode() for key in keys]


def java() -> str:
    """The machine's java, as deploy/kafka.sh finds it; its absence fails the test, as Java 17 is required."""
    home = os.getenv("JAVA_HOME")
    found = f"{home}/bin/java" if home and os.access(f"{home}/bin/java", os.X_OK) else shutil.which("java")
    if not found:
        pytest.fail("java not found: Java 17 is part of the supported machine (README); install it", pytrace=False)
    return found


def kafka_jars() -> Path:
    """The stack's Kafka jars (kafka-clients among them), fetched by deploy/kafka.sh when missing."""
    _deploy("kafka.sh", "fetch", {})
    version = os.getenv("STREAMSYNC_KAFKA_VERSION")
    libs = [
        lib
        for lib in sorted((shared_home() / "kafka").glob("lib-*"))
        if (lib / ".complete").is_file() and (version is None or lib.name == f"lib-{version}")
    ]
    if not libs or not list(libs[-1].glob("kafka-clients-*.jar")):
        pytest.fail(f"no kafka-clients jar under {shared_home() / 'kafka'} after deploy/kafka.sh fetch", pytrace=False)
    return libs[-1]


def produce_with_java(bootstrap: str, topic: str, keys: list[bytes]) -> None:
    """The Java client, its partitioner left at the default, through ProduceKeys.java."""
    result = subprocess.run(
        [java(), "-cp", f"{kafka_jars()}/*", str(PRODUCE_KEYS), "produce", bootstrap, topic, "java"],
        input="".join(key.hex() + "\n" for key in keys),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"ProduceKeys.java failed:\n{result.stdout}\n{result.stderr}"


async def produce_with_faust(bootstrap: str, topic: str, keys: list[bytes]) -> None:
    """faust's producer as the worker builds it: create_app() with the project's settings."""
    from streamsync.agents.app import create_app
    from streamsync.settings import StreamsyncSettings

    app = create_app(StreamsyncSettings.load({"kafka_bootstrap": bootstrap}))
    producer = app.producer
    assert producer.partitioner is murmur2_partitioner
    await producer.start()
    try:
        pending = [await producer.send(topic, key, b"faust", None, None, None) for key in keys]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def produce_with_confluent(bootstrap: str, topic: str, keys: list[bytes], value: bytes, **config: str) -> None:
    """librdkafka through confluent-kafka, with `config` on top of its defaults."""
    from confluent_kafka import KafkaError, Message, Producer

    failures: list[str] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(str(error))

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", **config})
    for key in keys:
        producer.produce(topic, value=value, key=key, on_delivery=delivered)
    assert producer.flush(60) == 0, "confluent-kafka did not deliver every record within 60 s"
    assert not failures, failures


async def read_back(bootstrap: str, topic: str) -> dict[str, dict[bytes, set[int]]]:
    """Per producing client (the record's value), the partitions each key was found on."""
    from aiokafka import TopicPartition

    found: dict[str, dict[bytes, set[int]]] = defaultdict(lambda: defaultdict(set))
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    async with consumer(bootstrap) as client:
        client.assign(partitions)
        await client.seek_to_beginning(*partitions)
        ends = await client.end_offsets(partitions)
        deadline = time.monotonic() + 60
        while [tp for tp in partitions if await client.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"{topic} not read to its end offsets {ends} within 60 s"
            for tp, records in (await client.getmany(*partitions, timeout_ms=1000)).items():
                for record in records:
                    found[record.value.decode()][record.key].add(tp.partition)
    return found


def test_every_allowed_client_sends_a_key_to_the_partition_partition_for_names(stream: Stream) -> None:
    keys = canonical_keys()
    expected = {key: partition_for(key, PARTITIONS) for key in keys}
    assert set(expected.values()) == set(range(PARTITIONS)), "the keys should reach every partition"
    topic = f"{stream.prefix}.partitioning"
    asyncio.run(ensure_topics(stream.bootstrap, [TopicSpec(topic, partitions=PARTITIONS)]))

    produce_with_java(stream.bootstrap, topic, keys)
    asyncio.run(produce_raw(stream.bootstrap, topic, [(key, b"streamsync") for key in keys]))
    asyncio.run(produce_with_faust(stream.bootstrap, topic, keys))
    produce_with_confluent(stream.bootstrap, topic, keys, b"confluent-murmur2_random", partitioner="murmur2_random")

    found = asyncio.run(read_back(stream.bootstrap, topic))
    assert sorted(found) == sorted(CLIENTS)
    assert all(set(found[client]) == set(keys) for client in CLIENTS), "a client's keys are missing or extra"
    wrong = {
        client: {key.decode(): (sorted(found[client][key]), expected[key]) for key in keys}
        for client in CLIENTS
        if any(found[client][key] != {expected[key]} for key in keys)
    }
    assert not wrong, f"clients that sent keys elsewhere, per key (partitions found, expected): {wrong}"


def test_librdkafkas_default_partitioner_sends_some_keys_elsewhere(stream: Stream) -> None:
    keys = canonical_keys()
    topic = f"{stream.prefix}.partitioning-default"
    asyncio.run(ensure_topics(stream.bootstrap, [TopicSpec(topic, partitions=PARTITIONS)]))

    produce_with_confluent(stream.bootstrap, topic, keys, b"confluent-default")

    landed = asyncio.run(read_back(stream.bootstrap, topic))["confluent-default"]
    assert set(landed) == set(keys)
    assert all(landed[key] == {zlib.crc32(key) % PARTITIONS} for key in keys), "consistent_random is CRC32"
    moved = [key for key in keys if landed[key] != {partition_for(key, PARTITIONS)}]
    assert moved, "librdkafka's default matched murmur2 on every key: the contract's setting would not be needed"
