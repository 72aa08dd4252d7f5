"""API keys, scopes and per-key rate limits."""
