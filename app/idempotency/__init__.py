"""Idempotency: an event sent twice (same client_attempt_id or Idempotency-Key) is published once."""
