"""Execution: targets in order, each with retries (tenacity) and a breaker; then the canned reply."""
