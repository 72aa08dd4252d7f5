"""Browser tests: Debian's Chromium, driven by Playwright, against the service in its own process.

Playwright never downloads a browser here: it drives `/usr/bin/chromium` (Debian's package
`chromium`, which `make test` installs when missing), or CHROMIUM_PATH.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from app.database import migrations
from app.devbroker import free_port
from app.security.keys import generate_key
from tests.conftest import topic_settings
from tests.integration.test_service_process import _env, _start, _stop, _wait_ready

pytestmark = pytest.mark.browser

# Without the background-networking switches Chromium tries to reach Google's services at start.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = (
    Path(os.environ.get("CONSOLE_SCREENSHOTS_DIR", "")) if os.environ.get("CONSOLE_SCREENSHOTS_DIR") else None
)


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            "Chromium is missing: install Debian's package chromium (make test does), or set CHROMIUM_PATH"
        )
    return path


@dataclass(frozen=True)
class ConsoleService:
    url: str
    admin_key: str
    metrics_key: str
    ingest_key: str
    topics: dict[str, str]


@pytest.fixture(scope="module")
def console_service(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleService]:
    """`python -m app` with authentication on and three keys (admin, metrics, ingest); messages over
    2000 bytes are refused by the producer, so a big event goes to the dead-letter topic."""
    directory = tmp_path_factory.mktemp("console")
    database_url = f"sqlite:///{directory / 'ingest.db'}"
    migrations.upgrade(database_url)
    keys = {"admin": generate_key(), "metrics": generate_key(), "ingest": generate_key()}
    api_keys = [
        {"name": "ops", "key": keys["admin"], "scopes": ["admin", "metrics"]},
        {"name": "grafana", "key": keys["metrics"], "scopes": ["metrics"]},
        {"name": "producer", "key": keys["ingest"], "scopes": ["ingest"]},
    ]
    topics = topic_settings(f"console{uuid.uuid4().hex[:6]}")
    port = free_port()
    env = _env(
        AUTH_ENABLED="true",
        API_KEYS=orjson.dumps(api_keys).decode(),
        KAFKA_BROKERS=kafka_bootstrap,
        KAFKA_MESSAGE_MAX_BYTES="2000",
        DATABASE_URL=database_url,
        PORT=str(port),
        **{name.upper(): value for name, value in topics.items()},
    )
    log = directory / "service.log"
    process = _start(env, log)
    try:
        _wait_ready(port, process, log)
        yield ConsoleService(
            f"http://127.0.0.1:{port}", keys["admin"], keys["metrics"], keys["ingest"], topics
        )
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module scope, not session: Playwright's sync API runs an event loop in this thread while it is
    # open, and the asyncio tests after this module could not start theirs.
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def screenshot(page: Page, name: str, tmp_path: Path, *, full_page: bool = True) -> Path:
    """A screenshot, into CONSOLE_SCREENSHOTS_DIR when set (`make console-screenshots`)."""
    folder = SCREENSHOTS or tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
