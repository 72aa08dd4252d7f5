"""Observability: publisher metrics (JSON and Prometheus), health checks, structured logs."""
