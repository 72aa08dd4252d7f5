"""Each answer in one write: uvicorn's protocol on the coalescing transport (app.http_protocol)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.http_protocol import CoalescingHttpToolsProtocol, CoalescingTransport

REQUEST = b"POST /v1/events/activities HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}"


class RecordingTransport(asyncio.Transport):
    """The socket's side: what was written to it, in order, and whether it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.calls: list[str] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self.calls.append("write")

    def close(self) -> None:
        self.closing = True
        self.calls.append("close")

    def abort(self) -> None:
        self.closing = True
        self.calls.append("abort")

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8083), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send(
        {
            "type": "http.response.start",
            "status": 202,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"21")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"status":"accepted"}'})


async def _serve_one(protocol_class: type[HttpToolsProtocol]) -> RecordingTransport:
    config = Config(app=_answer, lifespan="off", log_config=None, proxy_headers=False)
    protocol = protocol_class(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(REQUEST)
    for _ in range(20):  # the request's task, then the flush at the end of its turn
        await asyncio.sleep(0)
    return transport


async def test_an_answer_goes_to_the_socket_in_one_write() -> None:
    plain = await _serve_one(HttpToolsProtocol)
    coalesced = await _serve_one(CoalescingHttpToolsProtocol)
    assert len(plain.writes) == 2  # uvicorn's own: the headers, then the body
    assert len(coalesced.writes) == 1
    assert coalesced.writes[0] == b"".join(plain.writes)  # the same bytes
    assert coalesced.writes[0].startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert coalesced.writes[0].endswith(b'\r\n\r\n{"status":"accepted"}')


async def test_writes_of_a_turn_are_held_until_its_end_and_sent_in_order() -> None:
    socket_side = RecordingTransport()
    transport = CoalescingTransport(socket_side, asyncio.get_running_loop())
    transport.write(b"one ")
    transport.writelines([b"two ", bytearray(b"three")])
    assert socket_side.writes == []
    assert transport.get_write_buffer_size() == len(b"one two three")
    await asyncio.sleep(0)
    assert socket_side.writes == [b"one two three"]
    transport.write(b"four")
    await asyncio.sleep(0)
    assert socket_side.writes == [b"one two three", b"four"]


async def test_close_sends_what_was_written_before_it() -> None:
    socket_side = RecordingTransport()
    transport = CoalescingTransport(socket_side, asyncio.get_running_loop())
    transport.write(b"last answer")
    transport.close()
    assert socket_side.calls == ["write", "close"]
    assert socket_side.writes == [b"last answer"]
    await asyncio.sleep(0)  # the turn's flush finds nothing left
    assert socket_side.writes == [b"last answer"]


@pytest.mark.parametrize("end", ["abort", "lost"])
async def test_nothing_is_written_after_an_abort_or_a_lost_connection(end: str) -> None:
    socket_side = RecordingTransport()
    transport = CoalescingTransport(socket_side, asyncio.get_running_loop())
    transport.write(b"never sent")
    if end == "abort":
        transport.abort()
    else:
        socket_side.closing = True  # the peer went away: the socket's transport is closing
    await asyncio.sleep(0)
    assert socket_side.writes == []
