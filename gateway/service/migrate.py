"""Copy every object's blob to another backend, under the same blob key.

The database is the index and blob keys are the service's own, so once every blob is on the
target, switching is a settings change (``GATEWAY_BACKEND``). Each blob is streamed from the
source into the target while its MD5 is taken, checked against its object row (see
``maintenance.BlobDigest``) and, unless told otherwise, read back from the target and
compared. Only then is its key appended to the *journal*, which a later run skips: an
interrupted migration resumes where it was.

The gateway may keep serving meanwhile. Rows are walked in id order, in passes, until a pass
finds nothing new; a row deleted meanwhile takes its blob with it and is skipped (its copy,
if made, is an orphan on the target that garbage collection removes). Writes that land after
the last pass are only on the source: run the migration once more, with writes stopped,
right before switching. Multipart uploads in progress hold backend-specific state and are
not migrated; they must finish or be aborted before the switch.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
from anyio.abc import ObjectReceiveStream

from gateway.metadata import repo
from gateway.service.context import Context
from gateway.service.maintenance import (
    BlobDigest,
    Finding,
    Findings,
    NoProgress,
    Progress,
    digest_blob,
    walk_objects,
)
from gateway.service.sse import stored_size
from gateway.types import StoredObject
from storage_backends import (
    Backend,
    BackendUnavailable,
    BlobNotFound,
    BlobReader,
    InsufficientStorage,
    StorageError,
)

log = logging.getLogger("gateway.migrate")

#: A pass that still finds new rows after this many is left to the next run.
MAX_PASSES = 10
#: Attempts for a blob whose backend says "try again".
ATTEMPTS = 3


def backend_identity(url: str, *, data_dir: Path, s3_endpoint: str = "") -> str:
    """What a backend URL stores into, whatever its spelling: two URLs with the same
    identity are the same store (``fs`` and ``fs:///<data dir>/objects``, say)."""
    value = url.strip()
    lowered = value.lower()
    if lowered in ("", "fs", "file"):
        return f"fs:{(Path(data_dir) / 'objects').resolve()}"
    if lowered.startswith(("fs://", "file://")):
        return f"fs:{Path(unquote(urlsplit(value).path)).resolve()}"
    if lowered.startswith("s3://"):
        parts = urlsplit(value)
        endpoint = s3_endpoint.strip().rstrip("/").lower() or "aws"
        return f"s3:{endpoint}/{parts.netloc}/{parts.path.strip('/')}"
    return lowered


def journal_path(data_dir: Path, target_identity: str) -> Path:
    digest = hashlib.sha256(target_identity.encode()).hexdigest()[:12]
    return Path(data_dir) / f"migrate-{digest}.journal"


class JournalBusy(Exception):
    """Another migration to the same target is running."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"another migration to this target is running (it holds {path})")
        self.path = path


class Journal:
    """The blob keys already migrated and verified, one per line, appended.

    Keys are written in batches (``every`` keys or ``interval`` seconds, then fsync): a crash
    loses at most the last batch, whose blobs are copied again. A torn last line (no line
    feed) is dropped when the journal is opened. The journal is ``flock``'ed while open, so
    that two migrations to one target cannot run at once.
    """

    def __init__(self, path: Path, *, header: str = "", every: int = 50,
                 interval: float = 2.0) -> None:
        self.path = path
        self.header = header
        self.every = every
        self.interval = interval
        self._pending: list[str] = []
        self._last_flush = time.monotonic()
        self._lock = anyio.Lock()
        self._fd: int | None = None

    def open(self) -> set[str]:
        """The keys done so far; then the journal is ready for appending."""
        done: set[str] = set()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JournalBusy(self.path) from None
            with open(self.path, "rb") as f:
                data = f.read()
            complete = data[:data.rfind(b"\n") + 1]
            if len(complete) != len(data):
                os.ftruncate(fd, len(complete))
            for line in complete.decode("utf-8", "replace").splitlines():
                if line and not line.startswith("#"):
                    done.add(line)
            if not complete and self.header:
                os.write(fd, f"# {self.header}\n".encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return done

    async def add(self, blob_key: str) -> None:
        self._pending.append(blob_key)
        if (len(self._pending) >= self.every
                or time.monotonic() - self._last_flush >= self.interval):
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            self._last_flush = time.monotonic()
            if not self._pending or self._fd is None:
                return
            data = "".join(f"{k}\n" for k in self._pending).encode()
            self._pending = []
            await anyio.to_thread.run_sync(self._append, self._fd, data)

    @staticmethod
    def _append(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)

    async def ticker(self) -> None:
        """Flushes what waits at least every ``interval`` seconds, until cancelled."""
        while True:
            await anyio.sleep(self.interval)
            await self.flush()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class RateLimit:
    """At most ``rate`` bytes a second, on average since the start, across all copies."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._start = time.monotonic()
        self._sent = 0

    async def consume(self, n: int) -> None:
        self._sent += n
        delay = self._start + self._sent / self.rate - time.monotonic()
        if delay > 0:
            await anyio.sleep(delay)


@dataclass(frozen=True, slots=True)
class MigrateOptions:
    #: Read every blob back from the target and compare it with what was read.
    verify: bool = True
    #: Blobs copied at once.
    concurrency: int = 4
    #: Bytes per second at most (None: as fast as they go), to spare a serving gateway.
    limit_rate: int | None = None


@dataclass(slots=True)
class MigrateReport:
    source: str
    target: str
    journal: str
    verified: bool
    #: Blobs copied and verified by this run.
    copied: int = 0
    bytes_copied: int = 0
    #: Blobs the journal already had (done by an earlier run).
    skipped: int = 0
    #: Rows deleted (or overwritten) while the migration ran: nothing left to copy.
    vanished: int = 0
    #: Multipart objects copied without a part layout, and encrypted objects: their bytes
    #: were checked against the source (and their size against the row), not against the
    #: ETag.
    unverifiable: int = 0
    passes: int = 0
    seconds: float = 0.0
    uploads_in_progress: int = 0
    mismatches: Findings = field(default_factory=Findings)
    #: Rows whose source blob is missing: nothing to copy (``fsck`` reports them too).
    missing: Findings = field(default_factory=Findings)
    errors: Findings = field(default_factory=Findings)
    #: Rows still arriving after ``MAX_PASSES`` passes: run again.
    incomplete: bool = False

    @property
    def ok(self) -> bool:
        return not (self.mismatches.count or self.missing.count or self.errors.count
                    or self.incomplete)

    @property
    def mb_per_second(self) -> float:
        return self.bytes_copied / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "source": self.source, "target": self.target,
            "journal": self.journal, "verified": self.verified, "copied": self.copied,
            "skipped": self.skipped, "vanished": self.vanished, "bytes": self.bytes_copied,
            "seconds": round(self.seconds, 3), "mb_per_s": round(self.mb_per_second, 2),
            "unverifiable": self.unverifiable, "passes": self.passes,
            "uploads_in_progress": self.uploads_in_progress, "incomplete": self.incomplete,
            "mismatches": self.mismatches.as_dict(), "missing": self.missing.as_dict(),
            "errors": self.errors.as_dict(),
        }


def _blob_size(obj: StoredObject) -> int:
    """The bytes the blob holds (an encrypted object's are more than its plaintext)."""
    size = stored_size(obj)
    return obj.size if size is None else size


class _Body:
    """A source blob's bytes on their way to the target, digested as they pass.

    ``md5_hex`` lets a target that learns the MD5 of what it stored (an S3 upstream, from its
    ETag) check it against what was sent, as it does for the gateway's own bodies.
    """

    def __init__(self, reader: BlobReader, digest: BlobDigest, progress: Progress,
                 rate: RateLimit | None) -> None:
        self.digest = digest
        self.passed = 0
        self._reader = reader
        self._progress = progress
        self._rate = rate
        self._chunks = self._stream()

    @property
    def md5_hex(self) -> str:
        return self.digest.md5_hex

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self._chunks

    async def aclose(self) -> None:
        await self._chunks.aclose()

    async def _stream(self) -> AsyncGenerator[bytes, None]:
        async for chunk in self._reader:
            self.digest.update(chunk)
            self.passed += len(chunk)
            self._progress.advance(len(chunk))
            if self._rate is not None:
                await self._rate.consume(len(chunk))
            yield chunk


class Migration:
    def __init__(self, ctx: Context, target: Backend, journal: Journal, report: MigrateReport,
                 options: MigrateOptions, progress: Progress) -> None:
        self.ctx = ctx
        self.source = ctx.backend
        self.target = target
        self.journal = journal
        self.report = report
        self.options = options
        self.progress = progress
        self.rate = RateLimit(options.limit_rate) if options.limit_rate else None

    async def run(self) -> None:
        report = self.report
        started = time.monotonic()
        seen = await anyio.to_thread.run_sync(self.journal.open)
        try:
            report.uploads_in_progress = await self.ctx.db.read(repo.all_uploads_count)
            # A first look, for the progress bar's total: what remains to copy.
            total = planned = 0
            async for rows in walk_objects(self.ctx.db, with_parts=False):
                for obj in rows:
                    if obj.blob_key in seen:
                        report.skipped += 1
                    else:
                        total += _blob_size(obj)
                planned = rows[-1].id
            self.progress.grow(total)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.journal.ticker)
                while True:
                    report.passes += 1
                    found = await self._pass(seen, planned=planned if report.passes == 1
                                             else None)
                    if not found:
                        break
                    if report.passes >= MAX_PASSES:
                        report.incomplete = True
                        break
                tg.cancel_scope.cancel()
        finally:
            await self.journal.aclose()
            report.seconds = time.monotonic() - started

    async def _pass(self, seen: set[str], *, planned: int | None) -> int:
        """Copy every row not seen yet; how many there were. Rows after id ``planned`` (all,
        if None) are new to the progress bar."""
        found = 0
        send, receive = anyio.create_memory_object_stream[StoredObject](
            self.options.concurrency)
        async with anyio.create_task_group() as tg:
            for _ in range(self.options.concurrency):
                tg.start_soon(self._worker, receive.clone())
            receive.close()
            async with send:
                async for rows in walk_objects(self.ctx.db):
                    for obj in rows:
                        if obj.blob_key in seen:
                            continue
                        seen.add(obj.blob_key)
                        found += 1
                        if planned is None or obj.id > planned:
                            self.progress.grow(_blob_size(obj))
                        await send.send(obj)
        return found

    async def _worker(self, receive: ObjectReceiveStream[StoredObject]) -> None:
        async with receive:
            async for obj in receive:
                await self._migrate(obj)

    async def _migrate(self, obj: StoredObject) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await self._copy(obj)
                return
            except BackendUnavailable as exc:
                if attempt == ATTEMPTS:
                    self.report.errors.add(Finding.of(obj, f"backend unavailable: {exc}"))
                    return
                await anyio.sleep(0.5 * 2 ** attempt)
            except InsufficientStorage:
                raise  # every later blob would fail the same way
            except (StorageError, OSError) as exc:
                self.report.errors.add(Finding.of(obj, f"{type(exc).__name__}: {exc}"))
                return

    async def _copy(self, obj: StoredObject) -> None:
        report = self.report
        try:
            reader = await self.source.get(obj.blob_key)
        except BlobNotFound:
            if await self.ctx.db.read(partial(repo.object_holds_blob, blob_key=obj.blob_key)):
                report.missing.add(Finding.of(obj, "the source has no such blob"))
            else:
                report.vanished += 1
            return
        body = _Body(reader, BlobDigest(obj), self.progress, self.rate)
        try:
            async with aclosing(body):
                await self.target.put(obj.blob_key, body, size=reader.size)
        except BaseException:
            self.progress.advance(-body.passed)  # they will pass again, or never
            raise
        finally:
            await reader.aclose()
        digest = body.digest
        problems = digest.problems()
        if not problems and self.options.verify:
            try:
                back = await digest_blob(self.target, obj)
            except BlobNotFound:
                problems = ["the target lost the blob just written"]
            else:
                if (back.size, back.md5_hex) != (digest.size, digest.md5_hex):
                    problems = [f"the target holds {back.size} bytes with MD5 {back.md5_hex}, "
                                f"the source {digest.size} with MD5 {digest.md5_hex}"]
        if problems:
            report.mismatches.add(Finding.of(obj, "; ".join(problems)))
            return
        if digest.unverifiable:
            report.unverifiable += 1
        await self.journal.add(obj.blob_key)
        report.copied += 1
        report.bytes_copied += digest.size


async def migrate(ctx: Context, target: Backend, *, journal: Journal, source_name: str,
                  target_name: str, options: MigrateOptions | None = None,
                  progress: Progress | None = None) -> MigrateReport:
    """Copy every object's blob from ``ctx.backend`` to ``target``; see the module."""
    options = options or MigrateOptions()
    report = MigrateReport(source=source_name, target=target_name, journal=str(journal.path),
                           verified=options.verify)
    await Migration(ctx, target, journal, report, options, progress or NoProgress()).run()
    return report
