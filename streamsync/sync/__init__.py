"""The pipeline from events to Nautobot, with no Kafka in it.

Registry, batch semantics, adapters, engine, settling, positions, retries, ownership, the state merge.
"""
