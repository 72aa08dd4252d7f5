"""The PostgreSQL connection driven by the event loop (the idempotency store's): what happens to it
when a statement is interrupted or fails. (Restarts of the server are tested through the store.)"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from app.database.engine import POSTGRES_NOT_WAITING_FOR_THE_DISK, create_database_engine
from app.database.loop_connection import LoopConnection

pytestmark = pytest.mark.integration


async def _backend_pid(connection: LoopConnection) -> int:
    async with connection.cursor() as cursor:
        await cursor.execute("SELECT pg_backend_pid()")
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_a_statement_cancelled_midway_leaves_the_connection_unused_and_the_next_connects_anew(
    postgres_url: str,
) -> None:
    engine = create_database_engine(postgres_url)
    connection = LoopConnection(engine)
    try:
        first = await _backend_pid(connection)

        async def sleep_in_the_database() -> None:
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT pg_sleep(30)")

        statement = asyncio.create_task(sleep_in_the_database())
        await asyncio.sleep(0.3)
        statement.cancel()
        with pytest.raises(asyncio.CancelledError):
            await statement
        # Not handed out again mid-statement: a new connection, at once (not after the sleep).
        second = await asyncio.wait_for(_backend_pid(connection), timeout=10)
        assert second != first
    finally:
        await connection.close()
        engine.dispose()


async def test_a_failed_statement_keeps_a_healthy_connection(postgres_url: str) -> None:
    engine = create_database_engine(postgres_url)
    connection = LoopConnection(engine, options=POSTGRES_NOT_WAITING_FOR_THE_DISK)
    try:
        first = await _backend_pid(connection)
        with pytest.raises(psycopg.errors.UndefinedTable):
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT * FROM no_such_table")
        assert await _backend_pid(connection) == first
        async with connection.cursor() as cursor:  # the connection's options are the given ones
            await cursor.execute("SHOW synchronous_commit")
            assert await cursor.fetchone() == ("off",)
    finally:
        await connection.close()
        engine.dispose()
