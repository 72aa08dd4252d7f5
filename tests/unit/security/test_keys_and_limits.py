"""API keys, the key ring, token buckets and how a request presents its key."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine

from app.api.auth import presented_key, required_scope
from app.audit.trail import SYSTEM
from app.database import migrations
from app.security.__main__ import main as security_cli
from app.security.key_store import ApiKeyStore, KeyRing
from app.security.keys import ConfiguredApiKey, Scope, generate_key, hash_key
from app.security.rate_limit import RateLimiter
from event_models.models import EventType


def test_generated_keys_are_long_random_and_prefixed() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(key.startswith("eik_") and len(key) >= 40 for key in keys)


def test_configured_key_needs_exactly_one_secret() -> None:
    with pytest.raises(ValidationError, match="exactly one of sha256 and key"):
        ConfiguredApiKey(name="a", scopes=[Scope.INGEST])
    with pytest.raises(ValidationError, match="exactly one"):
        ConfiguredApiKey(name="a", scopes=[Scope.INGEST], key="k" * 20, sha256="0" * 64)
    with pytest.raises(ValidationError, match="64 lower-case hex"):
        ConfiguredApiKey(name="a", scopes=[Scope.INGEST], sha256="xyz")
    with pytest.raises(ValidationError, match="at least 16"):
        ConfiguredApiKey(name="a", scopes=[Scope.INGEST], key="short")
    with pytest.raises(ValidationError):
        ConfiguredApiKey(name="a", scopes=[], sha256="0" * 64)


async def test_key_ring_finds_configured_and_stored_keys_and_sees_revocation(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/keys.db"
    migrations.upgrade(url)
    engine = create_engine(url)
    try:
        store = ApiKeyStore(engine)
        configured = ConfiguredApiKey(name="ops", key="ops-key-0123456789", scopes=[Scope.ADMIN])
        ring = KeyRing([configured], store, interval=60)
        await ring.refresh()
        record, key = store.create("web", [Scope.INGEST], [EventType.ATTEMPT], None, SYSTEM)
        assert ring.lookup(key) is None  # not yet reloaded
        await ring.refresh()
        found = ring.lookup(key)
        assert found is not None
        assert found.name == "web"
        assert found.scopes == {Scope.INGEST}
        assert found.may_post("attempt")
        assert not found.may_post("session")
        ops = ring.lookup("ops-key-0123456789")
        assert ops is not None
        assert ops.source == "config"
        assert ops.may_post("session")
        assert ring.lookup("eik_unknown") is None
        store.revoke(record.id, SYSTEM)
        await ring.refresh()
        revoked = ring.lookup(key)
        assert revoked is not None
        assert revoked.revoked
        # Only the hash is stored.
        stored = [(digest, item) for digest, item in store.all()]
        assert stored[0][0] == hash_key(key)
        assert key not in repr(stored)
    finally:
        engine.dispose()


def test_token_bucket_allows_a_burst_then_paces_and_names_the_wait() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=10, burst=20, clock=lambda: now[0])
    assert all(limiter.take("k", 1) == 0 for _ in range(20))
    wait = limiter.take("k", 1)
    assert wait == pytest.approx(0.1)
    now[0] += 0.5  # five tokens back
    assert limiter.take("k", 5) == 0
    assert limiter.take("k", 1) > 0
    assert limiter.take("other", 1) == 0  # buckets are per caller


def test_a_request_larger_than_the_bucket_passes_when_full_and_leaves_debt() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=10, burst=20, clock=lambda: now[0])
    assert limiter.take("k", 100) == 0
    assert limiter.take("k", 1) == pytest.approx((1 + 80) / 10)


def test_rate_zero_means_no_limit_unless_the_key_has_its_own() -> None:
    limiter = RateLimiter(rate=0, burst=1)
    assert all(limiter.take("k", 1000) == 0 for _ in range(100))
    assert limiter.take("k", 1, rate=1) == 0
    assert limiter.take("k", 1, rate=1) > 0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"authorization", b"Bearer abc")], "abc"),
        ([(b"authorization", b"bearer  abc ")], "abc"),
        ([(b"x-api-key", b"xyz")], "xyz"),
        ([(b"authorization", b"Basic Zm9vOmJhcg==")], None),
        ([(b"authorization", b"Bearer ")], None),
        ([], None),
    ],
)
def test_presented_key(headers: list[tuple[bytes, bytes]], expected: str | None) -> None:
    assert presented_key(headers) == expected


def test_required_scope_by_path() -> None:
    assert required_scope("/v1/events/attempts", False) is Scope.INGEST
    assert required_scope("/admin/api-keys", False) is Scope.ADMIN
    assert required_scope("/metrics/prometheus", False) is Scope.METRICS
    assert required_scope("/metrics/prometheus", True) is None
    assert required_scope("/healthz", False) is None
    assert required_scope("/readyz", False) is None
    assert required_scope("/docs", False) is None
    assert required_scope("/administrator", False) is None


def test_cli_makes_an_api_keys_entry_whose_hash_matches_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert security_cli(["new-key", "--name", "web", "--scope", "ingest", "--event-type", "attempt"]) == 0
    out, err = capsys.readouterr()
    entry = json.loads(out)
    key = err.rsplit(" ", 1)[-1].strip()
    assert entry == {"name": "web", "sha256": hash_key(key), "scopes": ["ingest"], "event_types": ["attempt"]}
    ConfiguredApiKey.model_validate(entry)
