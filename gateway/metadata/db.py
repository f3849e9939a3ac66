"""Engines, transactions and migrations.

SQLite runs in WAL mode with ``synchronous=FULL`` (an acknowledged write survives power
loss, not only a process crash) and a busy timeout. Write transactions on SQLite start with
``BEGIN IMMEDIATE`` through a one-connection pool: writers queue in-process instead of
failing with ``SQLITE_BUSY`` when a deferred transaction tries to upgrade its lock. Reads
use a separate pool and never block on writers (WAL).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            database = parsed.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.read_engine = create_async_engine(url, pool_size=pool_size, max_overflow=0)
            self.write_engine = create_async_engine(url, pool_size=1, max_overflow=0,
                                                    pool_timeout=60)
            for engine, begin in ((self.read_engine, "BEGIN"),
                                  (self.write_engine, "BEGIN IMMEDIATE")):
                event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
                event.listen(engine.sync_engine, "begin",
                             lambda conn, stmt=begin: conn.exec_driver_sql(stmt))
        else:
            engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size,
                                         pool_pre_ping=True)
            self.read_engine = self.write_engine = engine

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.read_engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed on success, rolled back on any exception."""
        async with self.write_engine.begin() as conn:
            yield conn

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (run at every start)."""
        await anyio.to_thread.run_sync(upgrade_to_head, self.url)

    async def ping(self) -> None:
        from sqlalchemy import text

        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        await self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            await self.write_engine.dispose()


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_to_head(url: str) -> None:
    """Run in a worker thread: Alembic's env.py drives its own event loop."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")

