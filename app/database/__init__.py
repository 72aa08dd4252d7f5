"""The service's own database: tables (spool, idempotency keys, routing rules, flags), engines, migrations."""
