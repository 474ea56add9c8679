"""Operating a source: resync, snapshot, offsets (replay), dead letters, lag."""
