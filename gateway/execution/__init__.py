"""Execution: targets in order, each with retries (tenacity) and a breaker, within one deadline; the whole
stream once committed; the degrade decision when every target failed."""
