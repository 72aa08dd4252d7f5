"""One PostgreSQL connection driven by the event loop (psycopg's asyncio interface), for writes so
small and frequent that a thread hop each would matter: the idempotency store's group commits. The
hop to a thread and back (two wake-ups, the GIL taken from a busy event loop) costs a worker about
as much CPU as such a statement, and adds its wait to every request's.

Like the engine's pool (`app.database.engine`): a connection idle for `IDLE_BEFORE_PING` is checked
before use and replaced if the server went away meanwhile; one lost in use fails that write and is
replaced by the next.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg  # import this module only where PostgreSQL is used: psycopg costs a worker memory
from sqlalchemy import Engine

from app.database import engine as database_engine


class LoopConnection:
    """A psycopg AsyncConnection to the database of `engine`, in autocommit mode, opened on first use.

    Its users take turns, one cursor at a time, so that a transaction one of them opens holds
    nobody else's statements.
    """

    def __init__(self, engine: Engine, *, options: str = "") -> None:
        arguments, parameters = engine.dialect.create_connect_args(engine.url)
        parameters.pop("context", None)  # SQLAlchemy's type adapters; statements here bind psycopg's own
        if options:
            parameters["options"] = options
        self._arguments: list[Any] = list(arguments)
        self._parameters = dict(parameters)
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._idle_since = 0.0
        self._turn = asyncio.Lock()

    @asynccontextmanager
    async def cursor(self) -> AsyncIterator[psycopg.AsyncCursor[Any]]:
        async with self._turn:
            connection = await self._usable()
            try:
                async with connection.cursor() as cursor:
                    yield cursor
            except BaseException as error:
                # Lost (the server restarted, the network dropped), or interrupted mid-statement
                # (cancelled: psycopg has the server cancel the statement first): not used again,
                # in whatever state it was left; the next write connects anew.
                if connection.broken or connection.closed or not isinstance(error, Exception):
                    self._discard(connection)
                raise
            finally:
                self._idle_since = time.monotonic()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def _usable(self) -> psycopg.AsyncConnection[Any]:
        connection = self._connection
        if connection is not None and not connection.closed:
            if time.monotonic() - self._idle_since < database_engine.IDLE_BEFORE_PING:
                return connection
            try:
                await connection.execute("SELECT 1")
                return connection
            except psycopg.Error:
                if not (connection.broken or connection.closed):
                    raise
                self._discard(connection)  # gone while idle: replaced, the caller never sees it
        self._connection = await psycopg.AsyncConnection.connect(
            *self._arguments, **self._parameters, autocommit=True
        )
        return self._connection

    def _discard(self, connection: psycopg.AsyncConnection[Any]) -> None:
        if self._connection is connection:
            self._connection = None
        connection.pgconn.finish()  # libpq's close: no round trip, nothing to await
