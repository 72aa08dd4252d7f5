"""Ingest: what one request does with its events (validate, drop repeats, publish) before the answer."""
