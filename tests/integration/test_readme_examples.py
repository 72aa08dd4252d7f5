"""The README's client examples run against the service as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.factory import create_app
from tests.conftest import SettingsFactory, attempt, running
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _example(name: str) -> str:
    match = re.search(rf"```python\n# readme-example: {name}\n(.*?)```", README, re.S)
    assert match, f"README has no `{name}` example"
    return match.group(1)


async def test_airflow_example_publishes_attempts(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    app = create_app(settings)
    namespace: dict[str, Any] = {}
    exec(compile(_example("airflow"), "README airflow example", "exec"), namespace)
    real_client = namespace["EventClient"]
    async with running(app):
        # The example is synchronous; run it in a thread against the in-process service.
        import asyncio

        transport = _ThreadedASGI(app, asyncio.get_running_loop())
        namespace["EventClient"] = lambda url, **kw: real_client(url, transport=transport, **kw)
        count = await asyncio.to_thread(
            namespace["record_attempts"], [attempt(quality=1), attempt(quality=2)]
        )
    assert count == 2
    assert len(read_topic(settings.kafka_brokers, settings.kafka_topic_attempts, expected=2)) == 2


async def test_deadlines_example_runs_as_written(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import ingest_client

    settings = make_settings()
    app = create_app(settings)
    namespace: dict[str, Any] = {}
    real_client = ingest_client.EventClient
    async with running(app):
        transport = _ThreadedASGI(app, asyncio.get_running_loop())
        # The example imports EventClient itself: hand it one that talks to the in-process service.
        monkeypatch.setattr(
            ingest_client, "EventClient", lambda url, **kw: real_client(url, transport=transport, **kw)
        )
        await asyncio.to_thread(
            exec, compile(_example("deadlines"), "README deadlines example", "exec"), namespace
        )
    assert namespace["result"].ok
    assert len(read_topic(settings.kafka_brokers, settings.kafka_topic_activities, expected=3)) == 3


async def test_workflow_example_publishes_a_registered_type(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import ingest_client

    settings = make_settings(
        event_types_files=str(ROOT / "event_types" / "workflow.json"), kafka_allowed_topics="workflow.events"
    )
    app = create_app(settings)
    namespace: dict[str, Any] = {}
    real_client = ingest_client.EventClient
    async with running(app):
        transport = _ThreadedASGI(app, asyncio.get_running_loop())
        monkeypatch.setattr(
            ingest_client, "EventClient", lambda url, **kw: real_client(url, transport=transport, **kw)
        )
        await asyncio.to_thread(
            exec, compile(_example("workflow"), "README workflow example", "exec"), namespace
        )
    assert namespace["taken"] is True
    records = read_topic(settings.kafka_brokers, "workflow.events", expected=1)
    assert any(record.key == b"example_dag" and b"run_124" in record.value for record in records)


async def test_fastapi_example_batches_in_the_background(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    service = create_app(settings)
    namespace: dict[str, Any] = {}
    exec(compile(_example("fastapi"), "README fastapi example", "exec"), namespace)
    real_client = namespace["AsyncEventClient"]
    namespace["AsyncEventClient"] = lambda url, **kw: real_client(
        url, transport=httpx.ASGITransport(service), **kw
    )
    example = namespace["app"]
    async with (
        running(service),
        example.router.lifespan_context(example),
        httpx.AsyncClient(transport=httpx.ASGITransport(example), base_url="http://127.0.0.1") as client,
    ):
        answer = await client.post("/lessons/L-9/open", params={"user_id": "reader"})
        assert answer.json() == {"status": "ok"}
    # Leaving the example's lifespan closed its client, which flushed the queued event.
    (record,) = read_topic(settings.kafka_brokers, settings.kafka_topic_activities, expected=1)
    assert record.key == b"reader"


class _ThreadedASGI(httpx.BaseTransport):
    """Lets a synchronous httpx client in a worker thread call an ASGI app on the test's loop."""

    def __init__(self, app: Any, loop: Any) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self._loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        import asyncio

        async def call() -> httpx.Response:
            body = request.read()
            async_request = httpx.Request(request.method, request.url, headers=request.headers, content=body)
            response = await self._inner.handle_async_request(async_request)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=60)
