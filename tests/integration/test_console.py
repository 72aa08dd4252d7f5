"""The console over HTTP (no browser): login, cookie, scopes, CSRF, escaping, the offline docs.

The browser tests (tests/browser) click through the same pages in Chromium; these check what a
browser would not show: headers, cookie flags, refusals of forged requests.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.console.session import COOKIE_NAME, CSRF_FIELD, ConsoleSessions
from app.factory import create_app
from app.security.keys import generate_key
from tests.conftest import SettingsFactory, running

pytestmark = pytest.mark.integration

ADMIN_KEY, METRICS_KEY, INGEST_KEY = generate_key(), generate_key(), generate_key()
KEYS = [
    {"name": "ops", "key": ADMIN_KEY, "scopes": ["admin", "metrics"]},
    {"name": "grafana", "key": METRICS_KEY, "scopes": ["metrics"]},
    {"name": "producer", "key": INGEST_KEY, "scopes": ["ingest"]},
]
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


@pytest.fixture
async def console(make_settings: SettingsFactory) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(auth_enabled=True, api_keys=KEYS)
    async with running(create_app(settings)) as client:
        yield client


async def _login(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.post("/console/login", data={"api_key": key})


def _csrf(page: str) -> str:
    found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def test_pages_need_a_login_and_the_cookie_is_sealed_httponly_strict(
    console: httpx.AsyncClient,
) -> None:
    for path in ("/console", "/console/rules", "/console/dlq", "/console/overview/live"):
        answer = await console.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == "/console/login"
    fragment = await console.get("/console/overview/live", headers={"HX-Request": "true"})
    assert fragment.status_code == 401
    assert fragment.headers["HX-Redirect"] == "/console/login"

    assert (await _login(console, "eik_not-a-key")).status_code == 401
    refused = await _login(console, INGEST_KEY)
    assert refused.status_code == 403
    assert "neither the admin nor the metrics scope" in refused.text
    assert COOKIE_NAME not in console.cookies

    answer = await _login(console, ADMIN_KEY)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()
    assert "Path=/console" in cookie
    assert "Max-Age=" in cookie
    assert ADMIN_KEY not in cookie  # sealed: the key cannot be read from the cookie
    page = await console.get("/console")
    assert page.status_code == 200
    assert "ops" in page.text
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert page.headers["Cache-Control"] == "no-store"

    # An altered cookie is no session.
    value = console.cookies[COOKIE_NAME]
    console.cookies.set(
        COOKIE_NAME, value[:-2] + ("AA" if not value.endswith("AA") else "BB"), path="/console"
    )
    assert (await console.get("/console")).status_code == 303


async def test_a_metrics_key_sees_the_overview_only(console: httpx.AsyncClient) -> None:
    assert (await _login(console, METRICS_KEY)).status_code == 303
    overview = await console.get("/console")
    assert overview.status_code == 200
    assert "/console/rules" not in overview.text  # not in the navigation
    for path in ("/console/rules", "/console/event-types", "/console/dlq", "/console/keys", "/console/audit"):
        answer = await console.get(path)
        assert answer.status_code == 403, path
        assert "needs a key with the <code>admin</code> scope" in answer.text
    token = _csrf(overview.text)
    answer = await console.post("/console/rules", data={CSRF_FIELD: token, "rule": "{}"})
    assert answer.status_code == 403
    rules = (
        await console.get("/admin/routing-rules", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    ).json()
    assert len(rules["rules"]) == 5  # nothing changed


async def _attempts_topic(client: httpx.AsyncClient) -> str:
    """The test's own attempts topic (the tests' topics are unique to each test)."""
    answer = await client.get(
        "/admin/routing-rules/all-attempts", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    topic: str = answer.json()["topics"][0]
    return topic


async def test_changes_need_the_sessions_csrf_token_and_this_origin(console: httpx.AsyncClient) -> None:
    await _login(console, ADMIN_KEY)
    token = _csrf((await console.get("/console/rules")).text)
    topic = await _attempts_topic(console)
    rule = f'{{"id": "csrf", "name": "csrf", "event_types": ["attempt"], "topics": ["{topic}"]}}'

    assert (await console.post("/console/rules", data={"rule": rule})).status_code == 403
    assert (
        await console.post("/console/rules", data={"rule": rule, CSRF_FIELD: "forged"})
    ).status_code == 403
    other_site = {"Origin": "http://evil.example"}
    answer = await console.post("/console/rules", data={"rule": rule, CSRF_FIELD: token}, headers=other_site)
    assert answer.status_code == 403
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert (await console.get("/admin/routing-rules/csrf", headers=admin)).status_code == 404

    saved = await console.post("/console/rules", data={"rule": rule, CSRF_FIELD: token})
    assert saved.status_code == 200, saved.text
    assert "Rule csrf saved." in saved.text
    assert (await console.get("/admin/routing-rules/csrf", headers=admin)).status_code == 200
    audit = (await console.get("/admin/audit?action=routing_rule", headers=admin)).json()
    assert audit["entries"][0]["key_name"] == "ops"  # the console's change is the key's, in the trail
    assert audit["entries"][0]["request_id"] == saved.headers["x-request-id"]  # and the page's request

    # htmx sends the token as a header.
    test = await console.post(
        "/console/rules/test",
        data={"event": '{"event_type": "activity"}'},
        headers={"X-CSRF-Token": token},
    )
    assert test.status_code == 200
    assert "activity_type" in test.text  # the admin route's validation error, shown


async def test_admin_errors_are_shown_and_change_nothing(console: httpx.AsyncClient) -> None:
    await _login(console, ADMIN_KEY)
    token = _csrf((await console.get("/console/rules")).text)
    # A name with `?` stays one path segment: not "delete all-attempts" with a query.
    tricked = await console.post("/console/rules/all-attempts%3Fx/delete", data={CSRF_FIELD: token})
    assert tricked.status_code == 404
    assert "no routing rule &#39;all-attempts?x&#39;" in tricked.text
    not_json = await console.post("/console/rules", data={"rule": "{not json", CSRF_FIELD: token})
    assert not_json.status_code == 422
    assert "The rule is not JSON" in not_json.text
    forbidden_topic = (
        '{"id": "bad", "name": "bad", "event_types": ["attempt"], "topics": ["not.allowed.anywhere"]}'
    )
    refused = await console.post("/console/rules", data={"rule": forbidden_topic, CSRF_FIELD: token})
    assert refused.status_code == 422
    assert "topics" in refused.text
    assert "{not json" in not_json.text  # the draft is kept for the operator to fix


async def test_output_is_escaped(console: httpx.AsyncClient) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    rule: dict[str, Any] = {
        "id": "xss",
        "name": XSS,
        "event_types": ["activity"],
        "condition": {"field": "activity_type", "op": "==", "value": XSS},
        "topics": [await _attempts_topic(console)],
    }
    assert (await console.post("/admin/routing-rules", json=rule, headers=admin)).status_code == 201
    await _login(console, ADMIN_KEY)
    page = (await console.get("/console/rules")).text
    assert "<script>window.__xss" not in page
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in page
    audit = (await console.get("/console/audit")).text
    assert "<script>window.__xss" not in audit


async def test_logout_ends_the_session(console: httpx.AsyncClient) -> None:
    await _login(console, ADMIN_KEY)
    token = _csrf((await console.get("/console")).text)
    answer = await console.post("/console/logout", data={CSRF_FIELD: token})
    assert answer.status_code == 303
    assert (await console.get("/console")).status_code == 303


async def test_revoking_the_key_ends_its_sessions(console: httpx.AsyncClient) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    created = (
        await console.post("/admin/api-keys", json={"name": "temp", "scopes": ["admin"]}, headers=admin)
    ).json()
    await _login(console, created["key"])
    assert (await console.get("/console/rules")).status_code == 200
    assert (await console.delete(f"/admin/api-keys/{created['id']}", headers=admin)).status_code == 200
    assert (await console.get("/console/rules")).status_code == 303


async def test_console_can_be_switched_off(make_settings: SettingsFactory) -> None:
    async with running(create_app(make_settings(console_enabled=False))) as client:
        assert (await client.get("/console")).status_code == 404
        assert (await client.get("/console/static/console.css")).status_code == 404


async def test_without_authentication_the_console_opens_and_says_so(make_settings: SettingsFactory) -> None:
    async with running(create_app(make_settings())) as client:
        page = await client.get("/console")
        assert page.status_code == 200
        assert "Authentication is off (AUTH_ENABLED=false)" in page.text
        # Still no change without the token: another site could otherwise post to a local service.
        rule = '{"id": "x", "name": "x", "event_types": ["attempt"], "topics": ["user.attempts"]}'
        assert (await client.post("/console/rules", data={"rule": rule})).status_code == 403


def test_sessions_expire_and_need_their_secret() -> None:
    sessions = ConsoleSessions("one secret", ttl_seconds=60)
    cookie = sessions.seal("eik_x")
    opened = sessions.open(cookie)
    assert opened is not None
    assert opened.key == "eik_x"
    assert ConsoleSessions("another secret", 60).open(cookie) is None
    assert ConsoleSessions("one secret", 60).open(cookie) is not None  # another worker, same secret
    assert ConsoleSessions("one secret", -1).open(ConsoleSessions("one secret", -1).seal("eik_x")) is None
    assert sessions.open("garbage") is None
    assert sessions.open("") is None
    assert sessions.csrf_valid(cookie, sessions.csrf_token(cookie))
    assert not sessions.csrf_valid(cookie, sessions.csrf_token("another cookie"))
    assert not sessions.csrf_valid(cookie, None)


async def test_api_docs_come_from_the_service_with_a_strict_policy(
    service: tuple[httpx.AsyncClient, Any],
) -> None:
    client, _ = service
    for path in ("/docs", "/redoc"):
        page = await client.get(path)
        assert page.status_code == 200
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy
        assert "http" not in policy  # no other origin allowed
        assert "cdn" not in page.text.lower()
        for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page.text):
            assert (await client.get(asset)).status_code == 200, asset
