"""The console and the API docs in a real browser: what an operator clicks, and what they must not see."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, Route, expect

from tests.browser.conftest import ConsoleService, screenshot
from tests.conftest import activity_event, attempt

pytestmark = [pytest.mark.browser, pytest.mark.integration]

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


def _log_in(page: Page, service: ConsoleService, key: str) -> None:
    page.goto(f"{service.url}/console")
    expect(page).to_have_url(f"{service.url}/console/login")
    page.fill("#api_key", key)
    page.click("button[type=submit]")


def _admin(service: ConsoleService) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.admin_key}"}


@pytest.mark.parametrize(
    ("path", "rendered"), [("/docs", ".opblock"), ("/redoc", "[data-section-id^='tag/']")]
)
def test_api_docs_render_with_nothing_fetched_from_elsewhere(
    page: Page, console_service: ConsoleService, path: str, rendered: str, tmp_path: Path
) -> None:
    """The page renders its operations, with the network beyond the service cut; a request for another
    origin (ReDoc's own logo is one) is stopped by the page's policy before it leaves the browser."""
    fetched: list[str] = []

    def cut(route: Route) -> None:
        fetched.append(route.request.url)
        route.abort()

    page.route(lambda url: not _here(url, console_service), cut)
    page.goto(f"{console_service.url}{path}")
    page.wait_for_selector(rendered, timeout=30_000)
    assert page.locator(rendered).count() > 5
    assert fetched == []  # nothing got past the policy
    screenshot(page, f"docs{path.replace('/', '-')}", tmp_path, full_page=False)


def _here(url: str, service: ConsoleService) -> bool:
    return url.startswith((service.url, "data:", f"blob:{service.url}"))


def test_refused_without_a_key_and_read_only_with_a_metrics_key(
    page: Page, console_service: ConsoleService, tmp_path: Path
) -> None:
    page.goto(f"{console_service.url}/console/rules")
    expect(page).to_have_url(f"{console_service.url}/console/login")
    screenshot(page, "login", tmp_path)
    page.fill("#api_key", "eik_wrong")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("Unknown or revoked API key")
    page.fill("#api_key", console_service.ingest_key)
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("neither the admin nor the metrics scope")

    page.fill("#api_key", console_service.metrics_key)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{console_service.url}/console")
    expect(page.locator("header .who")).to_contain_text("grafana")
    expect(page.locator("header nav")).not_to_contain_text("Routing rules")
    page.goto(f"{console_service.url}/console/rules")
    expect(page.locator("main .error")).to_contain_text("needs a key with the admin scope")


def test_live_figures_move_while_events_are_posted(
    page: Page, console_service: ConsoleService, tmp_path: Path
) -> None:
    _log_in(page, console_service, console_service.admin_key)
    accepted, published = page.locator("[data-total=accepted]"), page.locator("[data-total=published]")

    def total(figure: Locator) -> int:
        return int(figure.inner_text().replace(",", ""))

    before = (total(accepted), total(published))
    with httpx.Client(
        base_url=console_service.url, headers={"Authorization": f"Bearer {console_service.ingest_key}"}
    ) as client:
        for n in range(5):
            answer = client.post(
                "/v1/events/attempts", json=attempt(user_id=f"live-{n}", quality=3), timeout=15
            )
            assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + 20  # the overview refreshes every 2 s
    while time.monotonic() < deadline and not (
        total(accepted) >= before[0] + 5 and total(published) >= before[1] + 5
    ):
        page.wait_for_timeout(250)
    assert total(accepted) >= before[0] + 5
    assert total(published) >= before[1] + 5  # quality 3: one topic each
    expect(page.locator("[data-ready]")).to_have_attribute("data-ready", "true")
    expect(page.locator("svg.chart")).to_be_visible()
    screenshot(page, "overview", tmp_path)


def test_create_a_rule_and_test_an_event_against_it(
    page: Page, console_service: ConsoleService, tmp_path: Path
) -> None:
    _log_in(page, console_service, console_service.admin_key)
    page.click("header nav >> text=Routing rules")
    topic = console_service.topics["kafka_topic_activities"]
    rule = (
        '{"id": "videos-browser", "name": "Videos watched", "event_types": ["activity"], '
        '"condition": {"field": "activity_type", "op": "==", "value": "video_watched"}, '
        f'"topics": ["{topic}"], "priority": 10, "key_template": "video-{{user_id}}"}}'
    )
    page.fill("#new-rule textarea", rule)
    page.click("#new-rule button[type=submit]")
    expect(page.locator(".notice")).to_contain_text("Rule videos-browser saved.")
    expect(page.locator("tr[data-rule=videos-browser]")).to_contain_text("enabled")

    page.fill("#test-event textarea", '{"event_type": "activity", "user_id": "u-7", "activity_type": "video_watched", '
              f'"occurred_at": "{activity_event()["occurred_at"]}"}}')  # fmt: skip
    page.click("#test-event button[type=submit]")
    result = page.locator("[data-test-result]")
    expect(result).to_contain_text("videos-browser")
    expect(result).to_contain_text(topic)
    expect(result).to_contain_text("video-u-7")
    screenshot(page, "rules", tmp_path)

    page.locator("tr[data-rule=videos-browser] summary", has_text="Edit").click()
    editor = page.locator("tr[data-rule=videos-browser] .edit-form textarea")
    expect(editor).to_contain_text('"priority": 10')
    editor.fill(editor.input_value().replace('"Videos watched"', '"Videos watched (edited)"'))
    page.locator("tr[data-rule=videos-browser] .edit-form button").click()
    expect(page.locator(".notice")).to_contain_text("Rule videos-browser saved.")
    page.fill("input[name=q]", "edited")
    page.locator("form.filters button").click()
    expect(page.locator("table.rules tbody tr")).to_have_count(1)
    expect(page.locator("tr[data-rule=videos-browser]")).to_contain_text("Videos watched (edited)")

    page.locator("tr[data-rule=videos-browser] button", has_text="Disable").click()
    expect(page.locator("tr[data-rule=videos-browser]")).to_contain_text("disabled")
    page.locator("tr[data-rule=videos-browser] button", has_text="Delete").click()
    expect(page.locator(".notice")).to_contain_text("Rule videos-browser deleted.")
    answer = httpx.get(
        f"{console_service.url}/admin/routing-rules/videos-browser", headers=_admin(console_service)
    )
    assert answer.status_code == 404


def test_replay_a_dead_letter_after_a_dry_run(
    page: Page, console_service: ConsoleService, tmp_path: Path
) -> None:
    with httpx.Client(
        base_url=console_service.url, headers={"Authorization": f"Bearer {console_service.ingest_key}"}
    ) as client:
        big = activity_event(user_id="too-big", properties={"blob": "x" * 3000})
        answer = client.post("/v1/events/activities", json=big, timeout=30)
    assert answer.status_code == 422, answer.text
    event_id = answer.json()["event_id"]

    _log_in(page, console_service, console_service.admin_key)
    page.goto(f"{console_service.url}/console/dlq?reason=MSG_SIZE")
    expect(page.locator(f"tr[data-event-id='{event_id}']")).to_be_visible()
    page.locator(f"tr[data-event-id='{event_id}'] summary").click()
    expect(page.locator(f"tr[data-event-id='{event_id}'] pre")).to_contain_text("too-big")
    screenshot(page, "dead-letters", tmp_path)

    page.click("text=Replay the filtered selection: dry run first")
    expect(page.locator("[data-replay] h2")).to_have_text("Dry run")
    matched = int(page.locator("[data-matched]").inner_text())
    assert matched >= 1
    expect(page.locator("[data-replayed]")).to_have_text("0")
    page.click(f"text=Replay these {matched} records")
    expect(page.locator("[data-replay] h2")).to_have_text("Replayed")
    expect(page.locator("[data-replayed]")).to_have_text(str(matched))
    audit = httpx.get(
        f"{console_service.url}/admin/audit?action=dlq.replay", headers=_admin(console_service)
    ).json()
    assert audit["entries"][0]["key_name"] == "ops"


def test_an_xss_attempt_is_shown_as_text(page: Page, console_service: ConsoleService) -> None:
    rule = {
        "id": "xss-browser",
        "name": XSS,
        "event_types": ["activity"],
        "condition": {"field": "activity_type", "op": "==", "value": XSS},
        "topics": [console_service.topics["kafka_topic_activities"]],
    }
    created = httpx.post(
        f"{console_service.url}/admin/routing-rules", json=rule, headers=_admin(console_service)
    )
    assert created.status_code == 201, created.text
    try:
        violations: list[str] = []
        page.on("console", lambda message: violations.append(message.text))
        _log_in(page, console_service, console_service.admin_key)
        for path in ("/console/rules", "/console/audit"):
            page.goto(f"{console_service.url}{path}")
            expect(page.locator("main")).to_contain_text("<script>window.__xss = 1</script>")
            assert page.evaluate("window.__xss") is None
        assert page.locator("main script").count() == 0
        assert page.locator("main img").count() == 0
    finally:
        httpx.delete(
            f"{console_service.url}/admin/routing-rules/xss-browser", headers=_admin(console_service)
        )


def test_every_page_renders(page: Page, console_service: ConsoleService, tmp_path: Path) -> None:
    """Each page with what it lists, screenshotted; no page asks for anything outside the service."""
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    _log_in(page, console_service, console_service.admin_key)
    for name, path, shows in [
        ("event-types", "/console/event-types", "attempt"),
        ("event-type", "/console/event-types/attempt", "Version 1"),
        ("topics", "/console/topics", console_service.topics["kafka_topic_attempts"]),
        ("api-keys", "/console/keys", "grafana"),
        ("audit-trail", "/console/audit", "Audit trail"),
    ]:
        page.goto(f"{console_service.url}{path}")
        expect(page.locator("main")).to_contain_text(shows)
        screenshot(page, name, tmp_path)
    assert [url for url in requested if not _here(url, console_service)] == []


def test_register_and_evolve_an_event_type_with_the_compatibility_answer_shown(
    page: Page, console_service: ConsoleService, tmp_path: Path
) -> None:
    _log_in(page, console_service, console_service.admin_key)
    page.click("header nav >> text=Event types")
    definition = (
        '{"name": "browser.lesson_rated", "description": "a learner rated a lesson", "owner": "content", '
        '"schema": {"type": "object", "properties": {"lesson_id": {"type": "string"}, '
        '"stars": {"type": "integer", "minimum": 1, "maximum": 5}}, "required": ["lesson_id"], '
        '"additionalProperties": false}, '
        '"partition_key": "lesson_id"}'
    )
    page.fill("#new-type textarea", definition)
    page.click("#new-type button[type=submit]")
    expect(page.locator(".notice")).to_contain_text("Event type browser.lesson_rated registered.")
    page.get_by_role("link", name="browser.lesson_rated").click()

    # A new required field without a default breaks backward compatibility: refused, each problem named.
    breaking = (
        '{"type": "object", "properties": {"lesson_id": {"type": "string"}, "stars": {"type": "integer"}, '
        '"comment": {"type": "string"}}, "required": ["lesson_id", "comment"]}'
    )
    page.fill("#evolve textarea", breaking)
    page.click("#evolve button[type=submit]")
    expect(page.locator("main .error")).to_contain_text("comment")
    expect(page.locator("#evolve textarea")).to_have_value(breaking)  # kept, to be fixed

    compatible = (
        '{"type": "object", "properties": {"lesson_id": {"type": "string"}, "stars": {"type": "integer"}, '
        '"comment": {"type": "string", "maxLength": 500}}, "required": ["lesson_id"], "additionalProperties": false}'
    )
    page.fill("#evolve textarea", compatible)
    page.click("#evolve button[type=submit]")
    expect(page.locator(".notice")).to_contain_text("Version 2 registered")
    expect(page.locator("[data-schema-version='1']")).to_contain_text('"minimum": 1')
    expect(page.locator("[data-schema-version='2']")).to_contain_text('"maxLength": 500')
    screenshot(page, "event-type-versions", tmp_path)
