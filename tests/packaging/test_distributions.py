"""The three distributions as users install them: built as wheels, then run outside the checkout.

- event-ingest (the service) runs its migrations from the installed package, with no alembic.ini or
  alembic/ folder beside it;
- event-ingest-client installs alone into a clean virtualenv, without the service's dependencies,
  and publishes to a running service.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import orjson
import pytest

from app.devbroker import free_port
from tests.conftest import activity_event, topic_settings
from tests.integration.test_service_process import _env, _running_service

ROOT = Path(__file__).resolve().parents[2]
PROJECTS = {"service": ROOT, "models": ROOT / "packages/event-models", "client": ROOT / "packages/client"}
SERVER_ONLY = {"fastapi", "uvicorn", "confluent-kafka", "sqlalchemy", "alembic", "starlette", "lmdb"}


def _run(*command: str | Path, timeout: float = 300, **options: object) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **options,
    )  # type: ignore[call-overload]
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return str(done.stdout)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, *PROJECTS.values())
    built = {path.name.split("-")[0]: path for path in out.glob("*.whl")}
    return {
        "service": built["event_ingest"],
        "models": built["event_ingest_models"],
        "client": built["event_ingest_client"],
    }


def test_the_service_wheel_migrates_a_database_from_its_own_files(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    unpacked = tmp_path / "site"
    for name in ("service", "models"):
        with zipfile.ZipFile(wheels[name]) as wheel:
            wheel.extractall(unpacked)
    elsewhere = tmp_path / "elsewhere"  # no alembic.ini, no alembic/ here
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(unpacked), "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}

    where = _run(sys.executable, "-c", "from app.database import migrations; print(migrations.scripts_directory())",
                 cwd=elsewhere, env=env)  # fmt: skip
    migrated = _run(sys.executable, "-m", "app", "migrate", cwd=elsewhere, env=env)

    assert Path(where.strip()).is_relative_to(unpacked)
    assert "database at head" in migrated
    tables = _run(sys.executable, "-c", "import sqlite3, sys; print(sorted(name for (name,) in sqlite3.connect("
                  "sys.argv[1]).execute(\"select name from sqlite_master where type='table'\")))",
                  str(tmp_path / "fresh.db"))  # fmt: skip
    assert "alembic_version" in tables
    assert "spooled_records" in tables


def test_the_client_installs_alone_and_publishes_to_a_running_service(
    wheels: dict[str, Path], tmp_path: Path, kafka_bootstrap: str, sqlite_url: str
) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    _run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        wheels["client"],
        wheels["models"],
    )

    installed = {
        item["name"].lower() for item in orjson.loads(_run(python, "-m", "pip", "list", "--format=json"))
    }
    assert "event-ingest-client" in installed
    assert not installed & SERVER_ONLY
    assert _run(venv / "bin" / "ingest", "--version").startswith("ingest (event-ingest-client) ")

    port = free_port()
    topics = {key.upper(): value for key, value in topic_settings(f"dist{port}").items()}
    script = tmp_path / "publish.py"
    script.write_text(
        "import sys, logging\n"
        "from ingest_client import EventClient\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "event = {'event_type': 'activity', **eval(sys.argv[2])}\n"
        "with EventClient(sys.argv[1], delivery_timeout=30) as client:\n"
        "    print(client.publish(event).status)\n"
        "    print(client.publish_event(event))\n"
        "with EventClient(sys.argv[3], retries=1, backoff=0, delivery_timeout=5) as unreachable:\n"
        "    print(unreachable.publish_event(event))\n"
    )
    env = _env(
        KAFKA_BROKERS=kafka_bootstrap, DATABASE_URL=sqlite_url, DATA_DIR=str(tmp_path / "data"), **topics
    )
    with _running_service(env, port, tmp_path / "service.log"):
        done = subprocess.run(
            [python, script, f"http://127.0.0.1:{port}", repr(activity_event()), f"http://127.0.0.1:{free_port()}"],
            capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["accepted", "True", "False"]
    assert "event not published: cannot reach" in done.stderr
