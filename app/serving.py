"""Serving with several worker processes, each on a listening socket of its own (Linux).

uvicorn's own workers share one listening socket: whichever process wakes first accepts, so a few
long-lived keep-alive connections (a load balancer's, a benchmark's) can all land on one worker
while the other idles. `make bench` saw 90 % of the load on one of two workers, and the busy one's
queueing tripled the p95 latency. Here the parent opens one socket per worker on the same port with
SO_REUSEPORT, and the kernel spreads new connections evenly over them; each worker accepts on its
own socket only.

The parent supervises: SIGINT/SIGTERM are passed to the workers as SIGTERM (each drains and stops),
and a worker that dies is started again on its socket (connections waiting in its backlog are kept).
A worker whose start-up failed (a configuration fault: restarting will not mend it), or more than
MAX_DEATHS deaths within DEATH_WINDOW, stop the service with an error, for its own supervisor to see.
Elsewhere than Linux (no connection spreading by SO_REUSEPORT) uvicorn's own workers are used.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.context import SpawnProcess
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from app.devbroker import port_open
from app.http_protocol import HTTP_PROTOCOL

logger = logging.getLogger("app.serving")

APP = "app.factory:create_app"
STARTUP_FAILED = 3  # a worker's exit status when its app did not start (uvicorn's own code for it)
MAX_DEATHS, DEATH_WINDOW = 5, 60.0  # seconds
LISTEN_BACKLOG = 2048  # uvicorn's default


def serve(
    host: str,
    port: int,
    workers: int,
    log_level: str,
    log_format: str,
    stop_timeout: float,
    *,
    reload: bool = False,
) -> int:
    """Serve the app until SIGINT/SIGTERM; returns the process exit status.

    `stop_timeout`: seconds a worker gets to drain and stop after SIGTERM before it is killed.
    `reload` (development, one worker): uvicorn restarts the app when a file of the package changes.
    """
    options: dict[str, Any] = {
        "factory": True,
        "log_config": None,
        "access_log": False,
        "http": HTTP_PROTOCOL,  # a loop turn's answers sent together, each in one write
    }
    if reload:
        package = str(Path(__file__).resolve().parent)
        uvicorn.run(APP, host=host, port=port, reload=True, reload_dirs=[package], **options)
        return 0
    if workers == 1:
        uvicorn.run(APP, host=host, port=port, **options)
        return 0
    if not sys.platform.startswith("linux"):
        uvicorn.run(APP, host=host, port=port, workers=workers, **options)
        return 0
    # SO_REUSEPORT would let us bind beside another server of the same user: refuse instead.
    if port_open(port, "127.0.0.1" if host in {"0.0.0.0", "::"} else host):
        logger.error("port already in use", extra={"host": host, "port": port})
        return 1
    sockets = [_listening_socket(host, port) for _ in range(workers)]
    options.update(host=host, port=port)
    return _Supervisor(sockets, options, (log_level, log_format), stop_timeout).run()


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _worker(sock: socket.socket, options: dict[str, Any], log_level: str, log_format: str) -> None:
    """A worker process: the app served on its own socket (started by spawn, so configure logging)."""
    from app.observability.logging import configure_logging

    configure_logging(log_level, log_format)
    server = uvicorn.Server(uvicorn.Config(APP, **options))
    # Ctrl-C reaches the workers too: uvicorn has shut down cleanly when it re-raises it.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILED)


class _Supervisor:
    def __init__(
        self,
        sockets: list[socket.socket],
        options: dict[str, Any],
        logging_options: tuple[str, str],
        stop_timeout: float,
    ) -> None:
        self.sockets = sockets
        self.arguments = (options, *logging_options)
        self.stop_timeout = stop_timeout
        self.context = multiprocessing.get_context("spawn")  # a fresh interpreter, as uvicorn's workers
        self.workers: list[SpawnProcess | None] = [None] * len(sockets)
        self.deaths: list[float] = []
        self.stopping = False

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_stop_signal)
        for slot in range(len(self.sockets)):
            self._start(slot)
        status = 0
        while not self.stopping:
            time.sleep(0.5)
            for slot, process in enumerate(self.workers):
                if process is None or process.is_alive() or self.stopping:
                    continue
                _forget_metrics_of(process.pid)
                now = time.monotonic()
                self.deaths = [*(death for death in self.deaths if now - death < DEATH_WINDOW), now]
                details = {"pid": process.pid, "exitcode": process.exitcode}
                if process.exitcode == STARTUP_FAILED or len(self.deaths) > MAX_DEATHS:
                    logger.error(
                        "worker failed to start, or keeps dying: stopping the service", extra=details
                    )
                    self.stopping, status = True, 1
                    break
                logger.error("worker died: starting another", extra=details)
                self._start(slot)
        self._stop_all()
        for sock in self.sockets:
            sock.close()
        return status

    def _start(self, slot: int) -> None:
        process = self.context.Process(
            target=_worker, args=(self.sockets[slot], *self.arguments), name=f"worker-{slot}"
        )
        process.start()
        self.workers[slot] = process
        logger.info("worker started", extra={"pid": process.pid})

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _stop_all(self) -> None:
        running = [process for process in self.workers if process is not None and process.is_alive()]
        for process in running:
            assert process.pid is not None
            os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                logger.error("worker did not stop in time: killed", extra={"pid": process.pid})
                process.kill()
                process.join(5)


def _forget_metrics_of(pid: int | None) -> None:
    """A dead worker's live gauges must stop counting in the Prometheus sum."""
    if pid is not None and "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
