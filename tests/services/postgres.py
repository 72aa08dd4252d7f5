"""A throwaway PostgreSQL server from Debian's binaries: its own data directory, a free 127.0.0.1
port, stopped by PID.

pytest-postgresql does the same through `pg_ctl` as the current user; these machines and CI run
as root, which `initdb` and `postgres` refuse, so the server here runs as the `postgres` system user
when started by root. It is also used outside pytest (the benchmarks), hence a plain class.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from app.devbroker import free_port, port_open

# Debian installs each major version under /usr/lib/postgresql/<major>/bin.
DEBIAN_ROOT = Path("/usr/lib/postgresql")


class PostgresUnavailableError(RuntimeError):
    """No server could be started here; the message says why and what to install."""


def binaries() -> Path:
    """The newest Debian PostgreSQL bin directory (PG_BINDIR overrides)."""
    configured = os.environ.get("PG_BINDIR")
    candidates = [Path(configured)] if configured else sorted(DEBIAN_ROOT.glob("*/bin"), key=_major)
    for candidate in reversed(candidates):
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    raise PostgresUnavailableError(
        "no PostgreSQL server binaries (initdb, postgres) under /usr/lib/postgresql/*/bin: "
        "install Debian's postgresql package, or set TEST_POSTGRES_URL to a server of your own"
    )


def _major(path: Path) -> int:
    name = path.parent.name
    return int(name) if name.isdigit() else 0


class PostgresServer:
    """One PostgreSQL server in `directory` on 127.0.0.1:`port`, superuser `postgres`, no password.

    As root, `directory` must be reachable by the `postgres` user: a fresh `tempfile.mkdtemp()` in
    /tmp is (pytest's own temp directories are not: pytest keeps their parent private, 0700).

    `durable=False` (tests) turns fsync off: the data is thrown away anyway. Benchmarks of the
    shipped configuration keep the defaults.
    """

    def __init__(self, directory: Path, port: int | None = None, durable: bool = False) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.durable = durable
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the `postgres` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def start(self, timeout: float = 60.0) -> PostgresServer:
        bindir = binaries()
        data = self.directory / "data"
        self.directory.mkdir(parents=True, exist_ok=True)
        as_user = _drop_root_prefix(self.directory)
        if not (data / "PG_VERSION").exists():
            initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
            initdb += ["--no-sync", "--no-instructions"]
            result = subprocess.run(as_user + initdb, capture_output=True, timeout=timeout, check=False)
            if result.returncode != 0:
                raise PostgresUnavailableError(
                    f"initdb failed: {result.stderr.decode(errors='replace').strip()}"
                )
        options = ["-p", str(self.port), "-k", str(self.directory), "-c", "listen_addresses=127.0.0.1"]
        if not self.durable:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*as_user, str(bindir / "postgres"), "-D", str(data), *options],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while not self._accepts_connections(bindir):
            if self.process.poll() is not None:
                raise PostgresUnavailableError(
                    f"postgres exited with code {self.process.returncode}: {self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise PostgresUnavailableError(
                    f"postgres did not accept connections within {timeout}s: {self._log_tail()}"
                )
            time.sleep(0.1)
        return self

    def _accepts_connections(self, bindir: Path) -> bool:
        if not port_open(self.port):
            return False
        ready = subprocess.run(
            [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False,
            timeout=10,
        )
        return ready.returncode == 0

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-5:])
        return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        """SIGINT (PostgreSQL's fast shutdown), then SIGKILL if it has not exited within `timeout`."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _drop_root_prefix(directory: Path) -> list[str]:
    """As root: hand `directory` to the `postgres` user and run the server as that user."""
    if os.geteuid() != 0:
        return []
    try:
        user = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PostgresUnavailableError(
            "running as root and there is no `postgres` user to run the server as"
        ) from exc
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise PostgresUnavailableError("running as root and `setpriv` (util-linux) is missing")
    os.chown(directory, user.pw_uid, user.pw_gid)
    # setpriv execs the server in place (no parent left between), so our PID is the postmaster's.
    return [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
