"""Which partition a record's key goes to: the one rule every streamsync producer is given by name.

Events for one object are applied in order only because they share a partition, and that holds
only while every producer of a topic maps a key to the same partition. The Java client and
aiokafka hash keys with murmur2; librdkafka (confluent-kafka) hashes with CRC32 unless told
`partitioner=murmur2_random`. streamsync's producers, this package's Publisher among them, follow
the Java client (docs/contract.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from aiokafka.partitioner import DefaultPartitioner, murmur2

_KEYLESS: Final = DefaultPartitioner()


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the Java client's default partitioner picks for `key` on a topic of `partitions` partitions."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def murmur2_partitioner(key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
    """The partitioner of every streamsync producer: a key goes where the Java client sends it.

    It has the form aiokafka's `partitioner=` and faust's `producer_partitioner` take. A keyed
    record goes by partition number, as in Java, not by its place in `all_partitions` (aiokafka
    hands over a set's order). A record without a key has no order to keep: it goes to any
    available partition, as aiokafka's DefaultPartitioner chooses.
    """
    if key is None:
        return int(_KEYLESS(None, all_partitions, available))
    return partition_for(key, len(all_partitions))


# How every producer of a streamsync topic is set up, this package's Publisher and the worker's own
# alike: keys placed by the rule above, and a key's records kept in order and without duplicates
# across retries (idempotence), written once every in-sync replica has them (acks=all).
PRODUCER_SETTINGS: Final[dict[str, Any]] = {
    "acks": "all",
    "enable_idempotence": True,
    "partitioner": murmur2_partitioner,
}
