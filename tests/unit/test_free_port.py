"""free_port: ports for the servers the tests and benches start, out of the kernel's way."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from app import devbroker
from app.devbroker import LOWEST_CHOSEN_PORT, free_port


def test_a_port_is_free_and_never_handed_out_twice() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # nobody holds it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the ephemeral range is read from /proc")
def test_ports_come_from_below_the_ephemeral_range() -> None:
    # The kernel may give a port of that range to any outgoing connection as its source port
    # before our server binds it.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(LOWEST_CHOSEN_PORT <= free_port() < low for _ in range(20))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the ephemeral range is read from /proc")
def test_without_room_below_the_range_the_kernel_chooses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    cramped = tmp_path / "ip_local_port_range"
    cramped.write_text(f"{LOWEST_CHOSEN_PORT}\t60999\n")
    monkeypatch.setattr(devbroker, "_EPHEMERAL_RANGE", cramped)
    assert free_port() >= low  # bind(("127.0.0.1", 0)): the kernel's own range
