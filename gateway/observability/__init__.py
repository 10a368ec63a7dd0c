"""Metrics, structured logs, usage and cost accounting."""
