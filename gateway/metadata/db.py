"""Transactions as *units of work*: a synchronous function over a Connection.

``await db.read(fn)`` and ``await db.write(fn)`` run ``fn(conn)`` in a transaction and
return its result. Repository functions are plain synchronous SQLAlchemy Core, so the same
code runs on both databases, each the fast way:

* **SQLite** (the embedded default). A ``read`` runs inline on the event loop on one
  autocommit connection: WAL readers never wait for writers, the statements are index
  lookups in the page cache, and a thread hop would cost more than the query (measured
  here: 0.1 ms inline, 0.66 ms through one thread hop, 1.5 ms through aiosqlite's
  per-statement hops). Each statement of a ``read`` sees its own snapshot; a unit that
  needs one snapshot across many statements (a listing) uses ``scan``, which runs in a
  worker thread inside one transaction.
  Writes go to one writer thread — SQLite has one writer anyway — which *group-commits*:
  units queued together run in one ``BEGIN IMMEDIATE`` transaction, each inside its own
  SAVEPOINT (so one unit failing rolls back only itself), and share a single fsync.
  A unit's awaiter is answered only after the COMMIT is durable
  (``synchronous=FULL``: an acknowledged write survives power loss, not only a crash).
* **PostgreSQL** (several instances): asyncpg, through ``AsyncConnection.run_sync``.

Units must be short and must not await: they never span a request body.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

from gateway import errors

log = logging.getLogger("gateway.db")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
T = TypeVar("T")
Unit = Callable[[Connection], T]

#: Units of work committed together at most (one fsync for all of them).
GROUP_COMMIT_MAX = 64


#: Seconds a statement waits for a lock another connection holds (SQLite's busy timeout).
BUSY_TIMEOUT = 30.0


def _sqlite_pragmas(busy_timeout: float) -> Callable[[Any, Any], None]:
    def apply(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun explicitly below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return apply


def sync_sqlite_url(url: URL) -> URL:
    """``sqlite+aiosqlite://`` (the documented default) runs on the stdlib driver."""
    return url.set(drivername="sqlite+pysqlite")


def _sqlite_engine(url: URL, begin: str | None, busy_timeout: float) -> Engine:
    """``begin=None``: autocommit, each statement its own (snapshot-consistent) read."""
    engine = create_engine(url, poolclass=StaticPool,
                           connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _sqlite_pragmas(busy_timeout))
    if begin is not None:
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(begin))
    return engine


@dataclass(slots=True)
class _Job:
    fn: Callable[[Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _settle(job: _Job, ok: bool, value: Any) -> None:
    def apply() -> None:
        if job.future.done():
            return  # the awaiter was cancelled; the unit's outcome stands regardless
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)

    job.loop.call_soon_threadsafe(apply)


class _SQLiteWriter:
    """The single writer thread, committing queued units in groups."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self.thread.start()

    async def submit(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.queue.put(_Job(fn, future, loop))
        return await future

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(30)

    def _run(self) -> None:
        with self.engine.connect() as conn:
            stopping = False
            while not stopping:
                job = self.queue.get()
                if job is None:
                    break
                batch = [job]
                while len(batch) < GROUP_COMMIT_MAX:
                    try:
                        nxt = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stopping = True
                        break
                    batch.append(nxt)
                self._commit_group(conn, batch)

    @staticmethod
    def _commit_group(conn: Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            with conn.begin():
                for job in batch:
                    savepoint = conn.begin_nested() if len(batch) > 1 else None
                    try:
                        value = job.fn(conn)
                    except Exception as exc:
                        if savepoint is not None:
                            savepoint.rollback()
                        else:
                            raise
                        outcomes.append((False, exc))
                    else:
                        if savepoint is not None:
                            savepoint.commit()
                        outcomes.append((True, value))
        except Exception as exc:
            # The group's COMMIT failed (or its only unit did): nothing of it happened.
            for job in batch:
                _settle(job, False, exc)
            return
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            _settle(job, ok, value)


class Database:
    """``busy_timeout``: seconds a SQLite write waits for a lock another process holds
    before it fails (503 to clients)."""

    def __init__(self, url: str, *, pool_size: int = 10,
                 busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._async_engine: AsyncEngine | None = None
        self._writer: _SQLiteWriter | None = None
        if self.is_sqlite:
            sync_url = sync_sqlite_url(parsed)
            database = sync_url.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.migration_url = sync_url.render_as_string(hide_password=False)
            self._read_engine = _sqlite_engine(sync_url, None, busy_timeout)
            self._read_conn: Connection | None = None
            self._write_engine = _sqlite_engine(sync_url, "BEGIN IMMEDIATE", busy_timeout)
            self._scan_engine = create_engine(sync_url, pool_size=4, max_overflow=0)
            event.listen(self._scan_engine, "connect", _sqlite_pragmas(busy_timeout))
            event.listen(self._scan_engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        else:
            self.migration_url = url
            self._async_engine = create_async_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)

    async def start(self) -> None:
        """Bring the schema to the newest Alembic revision, then open connections."""
        await anyio.to_thread.run_sync(upgrade_to_head, self.migration_url)
        if self.is_sqlite:
            self._read_conn = self._read_engine.connect()
            self._writer = _SQLiteWriter(self._write_engine)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        if self._async_engine is not None:
            with _database_errors():
                async with self._async_engine.connect() as aconn:
                    return await aconn.run_sync(fn)
        conn = self._read_conn
        if conn is None:
            raise RuntimeError("Database.start() was not awaited")
        try:
            with _database_errors():
                return fn(conn)
        finally:
            conn.rollback()  # ends SQLAlchemy's bookkeeping; no statement is sent

    async def scan(self, fn: Callable[[Connection], T]) -> T:
        """A read that may run many statements (listings): off the event loop on SQLite."""
        if self._async_engine is not None:
            return await self.read(fn)

        def run() -> T:
            with self._scan_engine.connect() as conn, conn.begin():
                return fn(conn)

        with _database_errors():
            return await anyio.to_thread.run_sync(run)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Runs ``fn`` in a write transaction; returns once it is durably committed."""
        if self._async_engine is not None:
            with _database_errors():
                async with self._async_engine.begin() as aconn:
                    return await aconn.run_sync(fn)
        if self._writer is None:
            raise RuntimeError("Database.start() was not awaited")
        with _database_errors():
            return await self._writer.submit(fn)

    async def ping(self) -> None:
        await self.read(lambda conn: conn.execute(text("SELECT 1")).scalar())

    async def aclose(self) -> None:
        if self._async_engine is not None:
            await self._async_engine.dispose()
            return
        if self._writer is not None:
            await anyio.to_thread.run_sync(self._writer.close)
            self._writer = None
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None
        self._read_engine.dispose()
        self._write_engine.dispose()
        self._scan_engine.dispose()


#: PostgreSQL's "invalid byte sequence" (a NUL in text) and "untranslatable character".
_TEXT_SQLSTATES = frozenset({"22021", "22P05"})
#: PostgreSQL going away or refusing sessions: connection exceptions (class 08), shutting
#: down or starting up (57P01-57P03), too many connections (53300).
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
#: SQLite's primary result codes (the low byte of an extended code) for a lock held
#: elsewhere (BUSY, LOCKED), a failing or vanished file (IOERR, CANTOPEN, PROTOCOL), and a
#: full disk (FULL).
_SQLITE_UNAVAILABLE = frozenset({5, 6, 10, 14, 15})
_SQLITE_FULL = 13
#: Seconds a client is asked to wait before retrying when the database is unavailable.
RETRY_AFTER = "1"


def _unavailable(message: str) -> errors.GatewayError:
    return errors.ServiceUnavailable(message, headers={"Retry-After": RETRY_AFTER})


def _mapped(exc: DBAPIError) -> errors.GatewayError | None:
    """The gateway error a database failure stands for, or None for a server error."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _TEXT_SQLSTATES:
        return errors.InvalidArgument("Text may not contain the NUL character")
    sqlite_code = getattr(exc.orig, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        if sqlite_code & 0xFF == _SQLITE_FULL:
            return errors.InsufficientStorage("The metadata database's disk is full.")
        if sqlite_code & 0xFF in _SQLITE_UNAVAILABLE:
            return _unavailable("The metadata database is busy. Please retry.")
        return None
    if exc.connection_invalidated or (isinstance(sqlstate, str) and (
            sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES)):
        return _unavailable("The metadata database is unreachable. Please retry.")
    if sqlstate == "53100":  # disk full
        return errors.InsufficientStorage("The metadata database's disk is full.")
    return None


@contextmanager
def _database_errors() -> Iterator[None]:
    """Database failures a client can act on become gateway errors here, once: text
    PostgreSQL cannot store (a NUL character; SQLite takes it) is the client's error
    wherever it came from; a database that is locked elsewhere, unreachable or restarting
    is a 503 to retry; a full disk is a 507. Anything else stays a server error."""
    try:
        yield
    except DBAPIError as exc:
        mapped = _mapped(exc)
        if mapped is None:
            raise
        raise mapped from (None if isinstance(mapped, errors.InvalidArgument) else exc)
    except (OSError, PoolTimeout) as exc:  # no connection: refused, timed out, pool empty
        raise _unavailable("The metadata database is unreachable. Please retry.") from exc


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


#: The PostgreSQL advisory lock instances hold while migrating (any constant will do).
MIGRATION_LOCK = 0x6761_7465_7761_79


def upgrade_to_head(url: str) -> None:
    """Runs in a worker thread: with an async driver, Alembic's env drives its own loop.

    Several processes may start at once (uvicorn workers, instances on one database): one
    migrates while the others wait, then find nothing left to do.
    """
    from alembic import command

    def upgrade() -> None:
        command.upgrade(alembic_config(url), "head")

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:":
            upgrade()
            return
        with open(f"{database}.migrate-lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            upgrade()
        return

    async def locked() -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
                await conn.commit()
                try:
                    await asyncio.to_thread(upgrade)
                finally:
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"),
                                       {"k": MIGRATION_LOCK})
                    await conn.commit()
        finally:
            await engine.dispose()

    asyncio.run(locked())
