"""A gateway's services in the test's own process (no HTTP), on a fresh data dir: for tests
that drive the service layer directly. Its database follows ``GATEWAY_TEST_DATABASE``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from gateway.core import Gateway
from gateway.metadata.db import Database
from gateway.settings import Settings
from storage_backends.localfs import LocalFSBackend
from tests._server import database_for

#: The root user's S3 key in such a gateway: ``gateway.accounts.lookup(ROOT_KEY)``.
ROOT_KEY = "AK"


@asynccontextmanager
async def in_process_gateway(data: Path) -> AsyncIterator[Gateway]:
    settings = Settings(data_dir=data, root_access_key=ROOT_KEY, root_secret_key="SK",
                        database_url=database_for(data))
    db = Database(settings.effective_database_url)
    await db.start()
    backend = LocalFSBackend(data / "objects")
    gw = Gateway.build(settings, db, backend)
    await gw.accounts.ensure_root()
    try:
        yield gw
    finally:
        await backend.aclose()
        await db.aclose()
