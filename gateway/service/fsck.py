"""Check the metadata against the backend: every object row's blob is there, whole, and
every blob under ``b/`` belongs to a row or to a multipart upload.

Problems with rows (a missing blob, a size or checksum mismatch) are reported, never
repaired: the bytes must come from a backup, and the bucket and key say which. Blobs nobody
references (orphans) are what a crash between writing a blob and committing its row leaves;
``repair`` removes those older than the garbage-collection grace period (younger ones may
belong to a write about to commit). Parts of multipart uploads in progress live where the
backend keeps them, outside ``b/``, and are not looked at.

An encrypted object's blob is judged by its ciphertext size. With ``--checksums`` an SSE-S3
object is decrypted (which authenticates every chunk) and its plaintext checked against its
ETag; an SSE-C object cannot be (the gateway does not have the key): only its size is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream

from gateway.errors import GatewayError
from gateway.metadata import repo
from gateway.service import encryption
from gateway.service.context import Context
from gateway.service.maintenance import (
    BATCH,
    BlobDigest,
    Finding,
    Findings,
    NoProgress,
    Progress,
    digest_blob,
    walk_objects,
)
from gateway.service.sse import open_plain, stored_size
from gateway.types import StoredObject
from storage_backends import BlobInfo, BlobNotFound, StorageError


@dataclass(frozen=True, slots=True)
class FsckOptions:
    #: Read every blob and check its MD5s against the row's ETag (and part ETags).
    checksums: bool = False
    #: Remove orphan blobs older than the grace period.
    repair: bool = False
    #: Blobs checked at once.
    concurrency: int = 4
    #: Age below which an unreferenced blob is left alone (None: the settings').
    grace_seconds: int | None = None


@dataclass(slots=True)
class FsckReport:
    backend: str
    checksums: bool
    repair: bool
    objects_checked: int = 0
    bytes_read: int = 0
    blobs_listed: int = 0
    #: Rows deleted while fsck ran.
    vanished: int = 0
    #: Multipart objects without a part layout, and SSE-C objects: only their size could
    #: be checked.
    unverifiable: int = 0
    #: Unreferenced blobs younger than the grace period: writes in flight, left alone.
    young_skipped: int = 0
    orphans_removed: int = 0
    uploads_in_progress: int = 0
    seconds: float = 0.0
    missing: Findings = field(default_factory=Findings)
    size_mismatches: Findings = field(default_factory=Findings)
    checksum_mismatches: Findings = field(default_factory=Findings)
    orphans: Findings = field(default_factory=Findings)
    errors: Findings = field(default_factory=Findings)

    @property
    def problems(self) -> int:
        """What is still wrong (orphans removed are not)."""
        return (self.missing.count + self.size_mismatches.count
                + self.checksum_mismatches.count + self.errors.count
                + self.orphans.count - self.orphans_removed)

    @property
    def ok(self) -> bool:
        return self.problems == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "problems": self.problems, "backend": self.backend,
            "checksums": self.checksums, "repair": self.repair,
            "objects_checked": self.objects_checked, "bytes_read": self.bytes_read,
            "blobs_listed": self.blobs_listed, "vanished": self.vanished,
            "unverifiable": self.unverifiable, "young_skipped": self.young_skipped,
            "orphans_removed": self.orphans_removed,
            "uploads_in_progress": self.uploads_in_progress,
            "seconds": round(self.seconds, 3),
            "missing": self.missing.as_dict(),
            "size_mismatches": self.size_mismatches.as_dict(),
            "checksum_mismatches": self.checksum_mismatches.as_dict(),
            "orphans": self.orphans.as_dict(), "errors": self.errors.as_dict(),
        }


class Fsck:
    def __init__(self, ctx: Context, report: FsckReport, options: FsckOptions,
                 progress: Progress) -> None:
        self.ctx = ctx
        self.backend = ctx.backend
        self.report = report
        self.options = options
        self.progress = progress

    async def run(self) -> None:
        started = time.monotonic()
        try:
            self.report.uploads_in_progress = await self.ctx.db.read(repo.all_uploads_count)
            self.progress.grow(await self.ctx.db.read(repo.stored_objects_count))
            await self._check_rows()
            await self._find_orphans()
        finally:
            self.report.seconds = time.monotonic() - started

    # -- rows ------------------------------------------------------------------------------

    async def _check_rows(self) -> None:
        send, receive = anyio.create_memory_object_stream[StoredObject](
            self.options.concurrency)
        async with anyio.create_task_group() as tg:
            for _ in range(self.options.concurrency):
                tg.start_soon(self._worker, receive.clone())
            receive.close()
            async with send:
                async for rows in walk_objects(self.ctx.db, with_parts=self.options.checksums):
                    for obj in rows:
                        await send.send(obj)

    async def _worker(self, receive: ObjectReceiveStream[StoredObject]) -> None:
        async with receive:
            async for obj in receive:
                try:
                    await self._check(obj)
                except BlobNotFound:
                    if await self.ctx.db.read(partial(repo.object_holds_blob,
                                                      blob_key=obj.blob_key)):
                        self.report.missing.add(Finding.of(obj, "the blob is missing"))
                    else:
                        self.report.vanished += 1
                except (StorageError, OSError) as exc:
                    self.report.errors.add(Finding.of(obj, f"{type(exc).__name__}: {exc}"))
                self.progress.advance(1)

    async def _check(self, obj: StoredObject) -> None:
        report = self.report
        report.objects_checked += 1
        info = await self.backend.head(obj.blob_key)
        expected = stored_size(obj)
        if expected is not None and info.size != expected:
            clear = f" ({obj.size} in clear)" if obj.encryption is not None else ""
            report.size_mismatches.add(Finding.of(
                obj, f"the blob has {info.size} bytes, the object {expected}{clear}"))
            return
        if not self.options.checksums:
            return
        if obj.encryption is not None:
            try:
                digest = await self._digest_decrypted(obj)
            except GatewayError as exc:  # damaged ciphertext, a master key that is gone
                report.checksum_mismatches.add(Finding.of(obj, exc.message))
                return
            report.bytes_read += info.size
        else:
            digest = await digest_blob(self.backend, obj)
            report.bytes_read += digest.size
        problems = digest.problems()
        if problems:
            report.checksum_mismatches.add(Finding.of(obj, "; ".join(problems)))
        elif digest.unverifiable:
            report.unverifiable += 1

    async def _digest_decrypted(self, obj: StoredObject) -> BlobDigest:
        """The plaintext's digest of an SSE-S3 object; of the ciphertext (its size alone
        is judged) when the data key is the customer's."""
        params = obj.encryption
        assert params is not None
        parts = None
        if encryption.params_nonce(params) is None:  # completed from a multipart upload
            parts = [(p.part_number, p.size) for p in obj.parts]
        if encryption.params_mode(params) != encryption.SSE_S3 or (parts is not None
                                                                   and not parts):
            return await digest_blob(self.backend, obj)
        key = encryption.data_key_for(params, keyring=self.ctx.keyring, customer=None)
        assert key is not None
        digest = BlobDigest(obj, plaintext=True)
        reader = await open_plain(self.backend, obj.blob_key, params, key,
                                  plain_size=obj.size, parts=parts)
        try:
            async for chunk in reader:
                digest.update(chunk)
        finally:
            await reader.aclose()
        return digest

    # -- orphans ---------------------------------------------------------------------------

    async def _find_orphans(self) -> None:
        grace = (self.ctx.settings.gc_grace_seconds if self.options.grace_seconds is None
                 else self.options.grace_seconds)
        cutoff = datetime.now(UTC) - timedelta(seconds=grace)
        batch: list[BlobInfo] = []
        async for info in self.backend.list(""):
            self.report.blobs_listed += 1
            batch.append(info)
            if len(batch) >= BATCH:
                await self._judge(batch, cutoff)
                batch = []
        await self._judge(batch, cutoff)

    async def _judge(self, blobs: list[BlobInfo], cutoff: datetime) -> None:
        if not blobs:
            return
        referenced = await self.ctx.db.read(
            partial(repo.referenced_blob_keys, blob_keys=[b.key for b in blobs]))
        for info in blobs:
            if info.key in referenced:
                continue
            if info.last_modified is not None and info.last_modified > cutoff:
                self.report.young_skipped += 1
                continue
            if self.options.repair and await self.ctx.db.read(
                    partial(repo.blob_is_referenced, blob_key=info.key)):
                continue  # a row came to point at it meanwhile: looked up right before
            detail = f"{info.size} bytes"
            if info.last_modified is not None:
                detail += f", last modified {info.last_modified.isoformat(timespec='seconds')}"
            if self.options.repair:
                try:
                    await self.backend.delete(info.key)
                except (StorageError, OSError) as exc:
                    detail += f"; could not remove it: {exc}"
                else:
                    detail += "; removed"
                    self.report.orphans_removed += 1
            self.report.orphans.add(Finding(info.key, detail))


async def fsck(ctx: Context, *, backend_name: str, options: FsckOptions | None = None,
               progress: Progress | None = None) -> FsckReport:
    """Check ``ctx.backend`` against the metadata; see the module."""
    options = options or FsckOptions()
    report = FsckReport(backend=backend_name, checksums=options.checksums,
                        repair=options.repair)
    await Fsck(ctx, report, options, progress or NoProgress()).run()
    return report
