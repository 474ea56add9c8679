"""Keys map to partitions exactly as the Java client maps them, and every producer is given that rule."""

from __future__ import annotations

import pytest

from streamsync.contract.partitioning import murmur2_partitioner, partition_for
from streamsync.kafka.clients import producer_kwargs

PARTITION_COUNTS = (1, 3, 6, 7, 100, 2147483647)

# Computed once by the Java client (kafka-clients 4.1.1, BuiltInPartitioner.partitionForKey, what
# KafkaProducer uses for a keyed record) with tests/integration/ProduceKeys.java:
#   java -cp "$STREAMSYNC_HOME/kafka/lib-4.1.1/*" tests/integration/ProduceKeys.java partitions N < keys.hex
# for each N of PARTITION_COUNTS. 2147483647 partitions keep nearly all of the hash's 31 bits.
JAVA_VECTORS: list[tuple[bytes, tuple[int, ...]]] = [
    (b"", (0, 0, 3, 2, 81, 275646681)),
    (b"a", (0, 1, 4, 5, 24, 584102524)),
    (b"ab", (0, 2, 2, 0, 34, 316155434)),
    (b"abc", (0, 0, 3, 4, 7, 479470107)),
    (b"abcd", (0, 2, 2, 5, 0, 823834100)),
    (b'vlan:{"vid":100,"vlan_group__name":"dc1"}', (0, 0, 0, 3, 8, 322597908)),
    (b'vlangroup:{"name":"dc1"}', (0, 1, 4, 2, 94, 981355594)),
    ('location:{"location_type__name":"Site","name":"Zürich"}'.encode(), (0, 0, 0, 5, 8, 288314808)),
    ('device:{"location__name":"東京","name":"東京-core-1"}'.encode(), (0, 0, 3, 3, 51, 378606651)),
    ('interface:{"device__name":"rtr-ß","name":"Gi0/1"}'.encode(), (0, 0, 0, 5, 12, 434592912)),
    (b'prefix:{"namespace__name":"Global","network":"10.0.0.0","prefix_length":8}', (0, 1, 1, 2, 91, 1346903791)),
    (b'ipaddress:{"host":"2001:db8::1","parent__namespace__name":"Global"}', (0, 0, 0, 1, 20, 1925477520)),
    ('tenant:{"name":"🚀 launch"}'.encode(), (0, 1, 4, 3, 6, 952538506)),
]


@pytest.mark.parametrize(("key", "expected"), JAVA_VECTORS, ids=[k.decode() or "empty" for k, _ in JAVA_VECTORS])
def test_partition_for_matches_the_java_client(key: bytes, expected: tuple[int, ...]) -> None:
    assert tuple(partition_for(key, n) for n in PARTITION_COUNTS) == expected


def test_a_topic_without_partitions_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        partition_for(b"a", 0)


@pytest.mark.parametrize("partitions", [3, 6, 7])
def test_the_partitioner_sends_a_key_by_partition_number_whatever_order_it_is_given(partitions: int) -> None:
    ascending = list(range(partitions))
    for key, _ in JAVA_VECTORS:
        expected = partition_for(key, partitions)
        assert murmur2_partitioner(key, ascending, ascending) == expected
        assert murmur2_partitioner(key, ascending[::-1], ascending[:1]) == expected


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    chosen = {murmur2_partitioner(None, [0, 1, 2, 3, 4, 5], [2, 5]) for _ in range(200)}
    assert chosen == {2, 5}
    assert {murmur2_partitioner(None, [0, 1, 2], []) for _ in range(200)} <= {0, 1, 2}


def test_every_producer_outside_faust_is_given_the_partitioner() -> None:
    assert producer_kwargs("127.0.0.1:9092")["partitioner"] is murmur2_partitioner


def test_the_faust_app_is_given_the_partitioner() -> None:
    from streamsync.agents.app import create_app
    from streamsync.settings import StreamsyncSettings

    app = create_app(StreamsyncSettings.model_validate({}))
    assert app.producer.partitioner is murmur2_partitioner
