"""What a worker and the health page show: Prometheus metrics, batch log, health, logging."""
