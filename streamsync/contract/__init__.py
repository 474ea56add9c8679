"""What producers, consumers and dashboards depend on.

The envelope, topic names, records as received, dead letters, the partitioner.
"""
