"""Nautobot's own changes on their way to Kafka: the event broker that writes them to the outbox."""
