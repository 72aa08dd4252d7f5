"""Learning analytics on the event topics, on Quix Streams (see the repository's README)."""
