"""The envelope's JSON Schema, from the producer client, which builds it from the envelope's own constants."""

from streamsync_client.schema import envelope_schema

__all__ = ["envelope_schema"]
