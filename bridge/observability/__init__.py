"""Logs and metrics: the request context, Prometheus metrics, JSON logging."""
