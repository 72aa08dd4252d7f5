"""Event types as data: definitions, schema checks, compatibility, the registry."""
