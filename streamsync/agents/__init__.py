"""Faust agents: read streamsync's topics, hand batches to the engine, commit after the database does."""
