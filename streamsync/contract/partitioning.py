"""Which partition a record's key goes to, and how every producer is set up: from the producer client.

`streamsync_client.partitioning` holds the rule (murmur2, as the Java client) so that producers
using the client and streamsync's own producers place keys alike (docs/contract.md).
"""

from streamsync_client.partitioning import PRODUCER_SETTINGS, murmur2_partitioner, partition_for

__all__ = ["PRODUCER_SETTINGS", "murmur2_partitioner", "partition_for"]
