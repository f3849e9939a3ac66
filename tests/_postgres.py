"""Fresh PostgreSQL databases for gateways under test (CI has PostgreSQL on 127.0.0.1:5432).

``GATEWAY_TEST_POSTGRES_URL`` names the server (default: the local one, user postgres);
each gateway gets its own database, dropped when the session ends.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

SERVER_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL",
                            "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
T = TypeVar("T")


def run(call: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion in a thread of its own (callers may be inside a loop)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(call())  # type: ignore[arg-type]
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


async def _execute(statement: str, database: str | None = None) -> None:
    import asyncpg

    url = make_url(SERVER_URL)
    conn = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username,
                                 password=url.password, database=database or url.database,
                                 timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def query(url: str, statement: str) -> list[tuple[Any, ...]]:
    """The rows of ``statement`` in the database ``url`` names."""
    import asyncpg

    parsed = make_url(url)

    async def fetch() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(host=parsed.host, port=parsed.port or 5432,
                                     user=parsed.username, password=parsed.password,
                                     database=parsed.database, timeout=5)
        try:
            return [tuple(row) for row in await conn.fetch(statement)]
        finally:
            await conn.close()

    return run(fetch)


def unreachable() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "asyncpg is not installed"
    try:
        run(lambda: _execute("SELECT 1"))
    except Exception as exc:
        return f"PostgreSQL at {make_url(SERVER_URL).render_as_string()} is unreachable: {exc}"
    return None


def create_database() -> str:
    """A new empty database; its SQLAlchemy URL."""
    name = f"gwtest_{uuid.uuid4().hex[:16]}"
    run(lambda: _execute(f'CREATE DATABASE "{name}"'))
    return make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    name = make_url(url).database
    run(lambda: _execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
