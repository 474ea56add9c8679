"""streamsync's REST API under /api/plugins/streamsync/: the health page's report as JSON."""
