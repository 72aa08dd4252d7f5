"""The console's libraries wait for its first page, login or admin call, not for the app's creation."""

from __future__ import annotations

from pathlib import Path

from tests.fresh_interpreter import run_probe

# jinja2 (the templates), cryptography (the session cookies) and httpx (the in-process admin calls)
# hold a sixth of an idle worker's memory; most workers never serve a console page.
_PROBE = """
import sys
from app.config.settings import load_settings
from app.factory import create_app
app = create_app(load_settings(_env_file=None, kafka_brokers="127.0.0.1:1", console_enabled=True))
print(sorted(m for m in ("jinja2", "cryptography", "httpx") if m in sys.modules))
console = app.state.console
console.sessions.open(console.sessions.seal("eik_x"))
assert console.templates.get_template("login.html") is not None
print(sorted(m for m in ("jinja2", "cryptography") if m in sys.modules))
"""


def test_creating_the_app_loads_none_of_the_console_libraries_until_it_needs_them(
    tmp_path: Path,
) -> None:
    assert run_probe(_PROBE, tmp_path) == ["[]", "['cryptography', 'jinja2']"]
