"""Schemathesis against the service's own OpenAPI schema, over HTTP to a real service process.

Every operation gets valid and invalid requests (bounded in examples and time); the service must
never answer 5xx, and every answer must match what the schema declares (status, body, media type).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from app.devbroker import free_port
from tests.conftest import topic_settings
from tests.integration.test_service_process import _env, _running_service

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 12
TIME_BUDGET_SECONDS = 150
KEY = "fuzz-" + os.urandom(12).hex()
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]


def test_fuzzing_the_openapi_schema_finds_no_5xx_and_no_schema_break(
    kafka_bootstrap: str, tmp_path: Path, sqlite_url: str
) -> None:
    port = free_port()
    topics = {key.upper(): value for key, value in topic_settings(f"fuzz{port}").items()}
    env = _env(
        KAFKA_BROKERS=kafka_bootstrap,
        DATABASE_URL=sqlite_url,
        AUTH_ENABLED="true",
        API_KEYS=json.dumps([{"name": "fuzz", "key": KEY, "scopes": ["ingest", "admin", "metrics"]}]),
        DLQ_REPLAY_TIMEOUT="2s",
        KAFKA_PRODUCER_TIMEOUT="3s",
        **topics,
    )
    log = tmp_path / "service.log"
    base = f"http://127.0.0.1:{port}"
    failures: dict[str, str] = {}  # one example per operation and kind of failure
    calls = 0
    with _running_service(env, port, log):
        published = httpx.get(f"{base}/openapi.json", timeout=10).json()
        schema = schemathesis.openapi.from_dict(_bounded_arrays(published))
        deadline = time.monotonic() + TIME_BUDGET_SECONDS
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), f"schema has an operation schemathesis cannot read: {result.err()}"
            operation = result.ok()
            if time.monotonic() > deadline:
                failures[f"time budget spent before {operation.label}"] = ""
                break
            calls += _fuzz(operation, base, failures)
    print(
        f"\n[fuzz] operations={len(list(schema.get_all_operations()))} calls={calls} failures={len(failures)}"
    )
    assert not failures, "\n".join(failures) + "\n\n" + "\n\n".join(list(failures.values())[:5])
    assert "Traceback" not in log.read_text()


def _fuzz(operation: APIOperation[Any, Any, Any, Any], base: str, failures: dict[str, str]) -> int:
    """Valid and invalid requests to one operation; failures collected by kind. Returns the calls made."""
    calls = 0
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
    )

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def exercise(case: schemathesis.Case[Any]) -> None:
        nonlocal calls
        calls += 1
        response = case.call(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=15)
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseException as exc:  # collected, not raised: hypothesis would spend minutes shrinking
            kinds = [line for line in str(exc).splitlines() if line.startswith("- ST")] or ["?"]
            for kind in kinds:
                failures.setdefault(f"{operation.label}: {kind}", str(exc)[:1500])

    exercise()
    return calls


MAX_FUZZED_ITEMS = 4


def _bounded_arrays(document: Any) -> Any:
    """The schema with every `maxItems` capped at MAX_FUZZED_ITEMS.

    Routing conditions nest (`all`/`any` of up to 64 conditions, recursively): to break `maxItems`
    schemathesis builds 65 copies at every level, which grows exponentially (it exhausted 24 GB
    here). Capped, the arrays stay small. The checks used do not require the service to refuse
    what the fuzzer calls invalid, so an array of 5 conditions (valid to the service) is no failure.
    """
    if isinstance(document, dict):
        bounded = {key: _bounded_arrays(value) for key, value in document.items()}
        if isinstance(bounded.get("maxItems"), int):
            bounded["maxItems"] = min(bounded["maxItems"], MAX_FUZZED_ITEMS)
        return bounded
    if isinstance(document, list):
        return [_bounded_arrays(item) for item in document]
    return document
