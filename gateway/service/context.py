"""What every service function works with."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import anyio

from gateway import errors
from gateway.metadata.db import Database
from gateway.service.changes import ChangeHub
from gateway.service.encryption import Keyring
from gateway.settings import Settings
from storage_backends import Backend
from storage_backends import errors as storage_errors

log = logging.getLogger("gateway.service")


class UploadSlots:
    """How many uploads this process streams at once. Past the limit a new one is refused
    with SlowDown (which S3 clients retry after a pause) rather than queued: every upload
    holds a socket, a staging file and buffers."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.limit and self.active >= self.limit:
            raise errors.SlowDown(headers={"Retry-After": "1"})
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


@dataclass
class Context:
    settings: Settings
    db: Database
    backend: Backend
    #: Wakes this process's change-log readers when a change commits here.
    hub: ChangeHub = field(default_factory=ChangeHub)
    _keyring: Keyring | None = field(default=None, repr=False)
    uploads: UploadSlots = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.uploads = UploadSlots(self.settings.max_concurrent_uploads)

    @property
    def keyring(self) -> Keyring:
        """The master keys of encryption at rest (SSE-S3), loaded once per process at the
        first use (``GATEWAY_MASTER_KEY``, else ``<data dir>/master.keys``, made at the
        first SSE-S3 write)."""
        return self.load_keyring()

    def load_keyring(self) -> Keyring:
        """Raises ValueError for a malformed ``GATEWAY_MASTER_KEY`` or key file."""
        if self._keyring is None:
            self._keyring = Keyring.load(self.settings.master_key, self.settings.data_dir)
        return self._keyring

    def new_blob_key(self, bucket_id: int, bucket: str | None = None,
                     key: str | None = None) -> str:
        """Where a new blob goes: the backend's own name for it (1:1 placement), or a fresh
        opaque one, so that a new version never overwrites the blob of the current one."""
        if bucket is not None and key is not None:
            named = self.backend.blob_name(bucket, key)
            if named is not None:
                return named
        token = uuid.uuid4().hex
        return f"b/{bucket_id}/{token[:2]}/{token}"

    async def discard_blob(self, blob_key: str | None) -> None:
        """Best effort: a blob left behind is found later by the garbage collector."""
        if not blob_key:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self.backend.delete(blob_key)
            except Exception:
                log.warning("could not delete blob %s; garbage collection will", blob_key,
                            exc_info=True)


@contextmanager
def backend_errors() -> Iterator[None]:
    """Backend errors become gateway errors here, once."""
    try:
        yield
    except storage_errors.InsufficientStorage as exc:
        raise errors.InsufficientStorage() from exc
    except storage_errors.BackendUnavailable as exc:
        raise errors.ServiceUnavailable() from exc


@asynccontextmanager
async def shielded() -> AsyncIterator[None]:
    """Commit steps that must finish even if the client goes away meanwhile."""
    with anyio.CancelScope(shield=True):
        yield


def new_request_id() -> str:
    return secrets.token_hex(8).upper()
