"""The analytics component as a real process, run from its own environment (.venv-analytics, or
ANALYTICS_PYTHON): Quix Streams pins client libraries below the service's, so it has its own."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from app.devbroker import free_port

ROOT = Path(__file__).resolve().parents[2]


def analytics_python() -> str:
    configured = os.environ.get("ANALYTICS_PYTHON")
    python = Path(configured) if configured else ROOT / ".venv-analytics" / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"{python} is missing: `make analytics-install` sets up the analytics environment")
    return str(python)


class AnalyticsProcess:
    """`python -m learning_analytics` with the given environment; stopped by PID."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {**env, "ANALYTICS_PORT": str(self.port), "ANALYTICS_HOST": "127.0.0.1"}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_within: float = 90.0) -> AnalyticsProcess:
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith(("KAFKA_", "ANALYTICS_"))
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [analytics_python(), "-m", "learning_analytics"],
                cwd=ROOT,
                env={**environment, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + ready_within
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"analytics exited with {self.process.returncode}: {self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"analytics not ready within {ready_within} s: {self.log()[-3000:]}")

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (Quix commits on the way out), SIGKILL after `timeout`."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
