"""The two commands: `event-ingest` (the service) and `ingest` (the client's). Help and version with no
side effects, flags over the environment, and every error in one line on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app import main as service_command
from app import serving
from ingest_client import cli as client_command

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("module", ["app", "ingest_client"])
@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_answer_at_once_and_start_nothing(module: str, flag: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, flag],
        cwd=tmp_path,  # a dev broker or a database would leave files here
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "KAFKA_BROKERS": ""},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert list(tmp_path.iterdir()) == []
    name = "event-ingest" if module == "app" else "ingest"
    if flag == "--help":
        assert done.stdout.startswith(f"usage: {name}")
    else:
        assert done.stdout.startswith(name)
        assert done.stdout.strip().split()[-1][0].isdigit()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What `event-ingest` would serve with, without serving."""
    calls: list[dict[str, Any]] = []

    def serve(host: str, port: int, workers: int, *rest: Any, reload: bool = False) -> int:
        calls.append({"host": host, "port": port, "workers": workers, "reload": reload})
        return 0

    for name in ("HOST", "PORT", "WORKERS", "PROMETHEUS_MULTIPROC_DIR"):
        monkeypatch.setenv(name, "")  # recorded, so whatever the command sets is undone
        monkeypatch.delenv(name)
    monkeypatch.setenv("KAFKA_BROKERS", "127.0.0.1:1")  # no dev broker
    monkeypatch.setenv("IDEMPOTENCY_STORE", "auto")
    monkeypatch.setattr(serving, "serve", serve)
    monkeypatch.setattr(service_command, "_prometheus_multiprocess_dir", lambda: None)
    return calls


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--host", "127.0.0.2", "--port", "9001", "--workers", "2"],
        ["--host", "127.0.0.2", "--port", "9001", "--workers", "2"],
        ["--host", "127.0.0.2", "--port", "9001", "--workers", "2", "serve"],
    ],
)
def test_serve_flags_win_over_the_environment(
    served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    monkeypatch.setenv("PORT", "8999")
    service_command.main(argv)
    assert served == [{"host": "127.0.0.2", "port": 9001, "workers": 2, "reload": False}]


def test_serving_is_the_default_command_and_reads_the_environment(
    served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", "8999")
    service_command.main([])
    service_command.main(["serve", "--reload"])
    assert served == [
        {"host": "127.0.0.1", "port": 8999, "workers": 1, "reload": False},
        {"host": "127.0.0.1", "port": 8999, "workers": 1, "reload": True},
    ]


def _one_line_error(capsys: pytest.CaptureFixture[str], prefix: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(prefix), err
    return err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["serve", "--workers", "2", "--reload"], "--reload runs one worker"),
        (["--port", "0"], "invalid setting PORT='0'"),
        (["--workers", "many"], "argument --workers: invalid int value"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        # The analytics component lives in an environment of its own (packages/analytics).
        (["analytics"], "needs an environment of its own"),
    ],
)
def test_service_command_errors_are_one_line(
    served: list[dict[str, Any]], capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        service_command.main(argv)
    assert exited.value.code == 2
    assert says in _one_line_error(capsys, "event-ingest: ")
    assert served == []


def test_migrate_that_cannot_reach_its_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://ingest@127.0.0.1:9/ingest")  # nothing listens
    with pytest.raises(SystemExit) as exited:
        service_command.main(["migrate"])
    assert exited.value.code == 2
    assert "migration failed on postgresql+psycopg://" in _one_line_error(capsys, "event-ingest: ")


def _client_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        status = client_command.main(argv)
    except SystemExit as exited:  # argparse's own errors
        status = int(exited.code or 0)
    assert status == 2
    return _one_line_error(capsys, "ingest")  # `ingest send: ...` for a subcommand's usage error


def test_client_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"event_type": "attempt"}\n{not json\n')
    not_objects = tmp_path / "numbers.json"
    not_objects.write_text("[1, 2]")
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens in the tests' network

    assert "No such file or directory: /nonexistent.jsonl" in _client_error(
        ["send", "/nonexistent.jsonl"], capsys
    )
    assert "Is a directory" in _client_error(["send", str(tmp_path)], capsys)
    assert f"{bad_json}:2: not JSON" in _client_error(["--url", dead, "send", str(bad_json)], capsys)
    assert "item 0: an event is a JSON object, not int" in _client_error(["send", str(not_objects)], capsys)
    assert "invalid choice: 'serve'" in _client_error(["serve"], capsys)
    assert "unrecognized arguments: --frob" in _client_error(["send", "x", "--frob"], capsys)
    assert "invalid int value" in _client_error(["send", "x", "--batch-size", "ten"], capsys)
    assert f"cannot reach the service at {dead}" in _client_error(["--url", dead, "rules", "list"], capsys)
