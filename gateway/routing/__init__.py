"""Routing: rule matching over request signals, the classifier call, and building the `Plan`."""
