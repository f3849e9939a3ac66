"""A bot's package bucket as one tar archive: exported as a stream, imported atomically.

**Export** writes a POSIX (PAX) tar of every live object in key order, one entry per key,
each header made with :meth:`tarfile.TarInfo.tobuf` and followed by the object's bytes
straight from the backend reader: memory stays flat however large the objects are. Keys
ending in ``/`` with no bytes (folder markers) become directory entries. Content type,
``x-amz-meta-*`` metadata, the stored system headers and the ETag travel in PAX records
(:data:`PAX_CONTENT_TYPE`, :data:`PAX_META`, :data:`PAX_HEADER`, :data:`PAX_ETAG`), so an
import restores them. The export is not a snapshot: each object is read as it is when its
turn comes.

**Import** must never show readers a half-imported package, so it happens in three steps:

1. the request body is spooled to an unnamed temporary file under the data directory
   (never memory), capped by what the bucket's quota could ever hold;
2. the archive is walked member by member (tar or tar.gz, told apart by its first bytes);
   each member is checked (only regular files and directories; keys valid, without ``..``
   segments, not absolute) and written to a *new* blob, its MD5 computed as it streams;
3. one database transaction swaps every row to its new blob, removes the keys the archive
   lacks (``replace`` mode), moves the bucket's usage after checking the quota against the
   final totals, and records every change in the change log.

Any failure before the commit — a malformed or truncated archive, a refused member, the
quota, a client that goes away, a crash — leaves the rows untouched; the new blobs are
discarded (or, after a crash, collected by the garbage collector). The old blobs are
discarded only once the commit has happened.

Every member passes the package rules exactly as an upload of it would
(:class:`~gateway.service.packages.PackageService`: the folder's file types, sniffed from
the first bytes, its size limit, the malware scanner when one is configured; a public
folder's objects become public with cache headers). One refused member refuses the import.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import mimetypes
import re
import tarfile
import tempfile
import zlib
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import anyio
from sqlalchemy import and_, exists, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gateway import errors
from gateway.headers import META_PREFIX, has_control_characters, object_attributes
from gateway.metadata import repo
from gateway.metadata.models import bot_admins, bots, customers
from gateway.service import changes, sse, versions
from gateway.service.context import Context, backend_errors, shielded
from gateway.service.encryption import WriteEncryption
from gateway.service.objects import MAX_OBJECT_SIZE, validate_key
from gateway.service.packages import MalwareDetected, PackageService, UnsupportedFileType
from gateway.service.quota import NOTHING_HELD, Limits, QuotaService
from gateway.types import STORED_HEADERS, BucketRecord, ObjectAttributes, ObjectRecord, Principal
from storage_backends import BlobNotFound, BlobReader
from storage_backends.protocol import CHUNK_SIZE

#: PAX records of an exported entry (vendor keywords, which other tar tools keep or ignore).
PAX_CONTENT_TYPE = "GATEWAY.content-type"
PAX_ETAG = "GATEWAY.etag"
PAX_META = "GATEWAY.meta."  # + the metadata name (without x-amz-meta-)
PAX_HEADER = "GATEWAY.header."  # + a stored system header (Cache-Control, …)

ImportMode = Literal["replace", "merge"]
MODES: tuple[ImportMode, ...] = ("replace", "merge")

#: Key listing page size (export, and the removals of a replacing import).
_PAGE = 500
#: Export: pieces smaller than this are gathered before they are sent.
_GATHER = 256 * 1024
#: An archive may exceed the bytes it holds by its headers: this much per member (a PAX
#: header with a 1,024-byte path and 2 KiB of metadata, the ustar header, padding).
_MEMBER_OVERHEAD = 6 * 1024
#: Members assumed for that allowance when the bucket has no object limit.
_ASSUMED_MEMBERS = 16384
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_TYPE_NAMES = {tarfile.SYMTYPE: "symbolic link", tarfile.LNKTYPE: "hard link",
               tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device",
               tarfile.FIFOTYPE: "FIFO", tarfile.GNUTYPE_SPARSE: "sparse file"}
_TAR_ERRORS = (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, UnicodeError)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_MD5 = re.compile(r"[0-9a-f]{32}")
_STORED = frozenset(name.lower() for name in STORED_HEADERS)
_COMMIT_ATTEMPTS = 8


class InvalidArchive(errors.GatewayError):
    code = "InvalidArchive"
    status = 400
    default_message = "The body is not a valid tar or tar.gz archive."


class NoSuchBot(errors.GatewayError):
    code = "NoSuchBot"
    status = 404
    default_message = "Bot not found"


@dataclass(frozen=True, slots=True)
class ImportResult:
    bucket: str
    imported: int
    deleted: int
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "imported": self.imported, "deleted": self.deleted,
                "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class _Member:
    """A checked archive member: what its object will be."""

    key: str
    size: int
    attrs: ObjectAttributes
    #: The ETag its export recorded (None: not from an export, or not a plain MD5).
    etag: str | None


@dataclass(frozen=True, slots=True)
class _Staged:
    """A member whose bytes are in a new blob, waiting for the commit."""

    key: str
    blob_key: str
    size: int
    etag: str
    attrs: ObjectAttributes
    #: Encryption parameters (the bucket's default encryption applies to imports).
    encryption: dict[str, Any] | None = None


class PackageArchiveService:
    def __init__(self, ctx: Context, quotas: QuotaService, packages: PackageService) -> None:
        self.ctx = ctx
        self.quotas = quotas
        self.packages = packages

    # -- which package -------------------------------------------------------------------

    async def package_for(self, principal: Principal, bot_id: str, *,
                          admin: bool = False) -> BucketRecord:
        """The package bucket of bot ``bot_id``, for its owner (the customer's user), one
        of its admins, or a gateway administrator (``admin``: the role *and* a credential
        that holds the admin permission, as the bots API has it). Unknown bot:
        :class:`NoSuchBot`; anyone else: ``AccessDenied``."""

        def unit(conn: Connection) -> tuple[bool, bool, BucketRecord | None]:
            row = conn.execute(
                select(bots.c.bucket, customers.c.user_id)
                .select_from(bots.join(customers, customers.c.id == bots.c.customer_id))
                .where(bots.c.id == bot_id)).first()
            if row is None:
                return False, False, None
            allowed = admin or row.user_id == principal.user_id
            if not allowed and not principal.is_anonymous:
                allowed = bool(conn.execute(select(exists().where(and_(
                    bot_admins.c.bot_id == bot_id,
                    bot_admins.c.customer_id == customers.c.id,
                    customers.c.user_id == principal.user_id)))).scalar())
            if not allowed or not row.bucket:
                return True, allowed, None
            return True, True, repo.bucket_by_name(conn, row.bucket)

        found, allowed, bucket = await self.ctx.db.read(unit)
        if not found:
            raise NoSuchBot(fields={"BotId": bot_id})
        if not allowed:
            raise errors.AccessDenied("Only the bot's owner and admins may use its package.")
        if bucket is None:
            raise errors.NoSuchBucket("The bot has no package bucket.")
        return bucket

    # -- export --------------------------------------------------------------------------

    def export(self, bucket: BucketRecord, *, compress: bool = False
               ) -> AsyncGenerator[bytes, None]:
        """The package as a tar stream (gzip-compressed with ``compress``). Nothing is read
        before iteration starts; a failure midway can only end the stream."""
        stream = self._tar(bucket)
        return _gzipped(stream) if compress else stream

    async def _tar(self, bucket: BucketRecord) -> AsyncGenerator[bytes, None]:
        out = _Gatherer()
        after: str | None = None
        while True:
            page = await self.ctx.db.scan(_page_after(bucket.id, after))
            for listed in page:
                opened = await self._open(bucket, listed)
                if opened is None:
                    continue  # deleted meanwhile
                record, reader = opened
                out.add(_header(record))
                if reader is not None:
                    sent = 0
                    try:
                        async for chunk in reader:
                            sent += len(chunk)
                            for piece in out.send(chunk):
                                yield piece
                    finally:
                        await reader.aclose()
                    if sent != record.size:
                        raise RuntimeError(f"the blob of {bucket.name}/{record.key} holds "
                                           f"{sent} bytes, its row {record.size}")
                out.add(tarfile.NUL * (-record.size % tarfile.BLOCKSIZE))
                for piece in out.flush(_GATHER):
                    yield piece
            if len(page) < _PAGE:
                break
            after = page[-1].key
        # The end-of-archive marker, and zeros up to a whole record, as tar writes them.
        out.add(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        out.add(tarfile.NUL * (-out.offset % tarfile.RECORDSIZE))
        for piece in out.flush(0):
            yield piece

    async def _open(self, bucket: BucketRecord, record: ObjectRecord
                    ) -> tuple[ObjectRecord, BlobReader | None] | None:
        """The object and a reader of its bytes (None when it has none), as it is now;
        None once it has gone. An object overwritten since it was listed is read again."""
        for _attempt in range(5):
            if record.size == 0:
                return record, None
            if record.blob_key is None:
                return None  # nothing to serve (S3 answers NoSuchKey for it too)
            try:
                # An encrypted object is exported in clear (an SSE-C one cannot be: the
                # gateway does not have its key, and the export fails with InvalidRequest).
                data_key = sse.data_key(record.encryption, self.ctx.keyring, None)
                with backend_errors():
                    return record, await sse.open_object(self.ctx, record, None, data_key)
            except BlobNotFound:
                fresh = await self.ctx.db.read(_latest(bucket.id, record.key))
                if fresh is None or fresh.is_delete_marker:
                    return None
                record = fresh
        raise errors.ServiceUnavailable("An object changed too often while being exported.")

    # -- import --------------------------------------------------------------------------

    async def import_archive(
        self,
        bucket: BucketRecord,
        body: AsyncIterable[bytes],
        *,
        principal: Principal,
        mode: ImportMode = "replace",
        declared_size: int | None = None,
    ) -> ImportResult:
        """Make the package hold the archive's objects (``replace``: exactly those;
        ``merge``: those and the keys the archive lacks), all at once or not at all.
        ``principal``: who imports (the objects' owner, and the name rejections record).
        ``declared_size``: the body's announced length, refused early when too large."""
        if mode not in MODES:
            raise errors.InvalidArgument("mode is replace or merge", name="mode", value=mode)
        limits = self.quotas.limits(bucket)
        cap = _spool_cap(limits)
        if cap is not None and declared_size is not None and declared_size > cap:
            raise _too_big(limits, bucket, "The archive is larger than the bucket's quota "
                           "could hold.")
        staged: dict[str, _Staged] = {}
        try:
            spool = await self._spool(body, cap, limits, bucket)
            try:
                await self._stage(bucket, limits, spool, staged, principal)
            finally:
                await anyio.to_thread.run_sync(spool.close)
            members = [staged[key] for key in sorted(staged)]
            async with shielded():
                deleted, old_blobs, seq = await self._commit(bucket, members, mode,
                                                             principal.user_id)
        except BaseException:
            async with shielded():
                for item in staged.values():
                    await self.ctx.discard_blob(item.blob_key)
            raise
        if seq:
            self.ctx.hub.notify(seq)
        for blob in old_blobs:
            await self.ctx.discard_blob(blob)
        return ImportResult(bucket.name, len(members), deleted,
                            sum(item.size for item in members))

    async def _spool(self, body: AsyncIterable[bytes], cap: int | None, limits: Limits,
                     bucket: BucketRecord) -> IO[bytes]:
        """The body in an unnamed temporary file (gone by itself if the process dies),
        positioned at its start."""
        directory = Path(self.ctx.settings.data_dir) / "imports"
        file = await anyio.to_thread.run_sync(_temporary_file, directory)
        try:
            gathered: list[bytes] = []
            pending = total = 0
            async for chunk in body:
                total += len(chunk)
                if cap is not None and total > cap:
                    raise _too_big(limits, bucket, "The archive is larger than the bucket's "
                                   "quota could hold.")
                gathered.append(chunk)
                pending += len(chunk)
                if pending >= CHUNK_SIZE:
                    await anyio.to_thread.run_sync(file.write, b"".join(gathered))
                    gathered, pending = [], 0
            if gathered:
                await anyio.to_thread.run_sync(file.write, b"".join(gathered))
            await anyio.to_thread.run_sync(file.seek, 0)
        except BaseException:
            file.close()
            raise
        return file

    async def _stage(self, bucket: BucketRecord, limits: Limits, spool: IO[bytes],
                     staged: dict[str, _Staged], principal: Principal) -> None:
        """Every member into a new blob (in ``staged``, by key: a later member of the same
        name replaces an earlier one, as tar's extraction does)."""
        archive = await anyio.to_thread.run_sync(_Archive, spool)
        total = 0
        while True:
            member = await anyio.to_thread.run_sync(archive.next)
            if member is None:
                break
            previous = staged.get(member.key)
            total += member.size - (previous.size if previous else 0)
            count = len(staged) + (0 if previous else 1)
            # Whatever the mode, the package ends up holding at least the archive's
            # objects: more than the quota allows can be refused before storing them.
            if limits.max_bytes is not None and total > limits.max_bytes:
                raise _too_big(limits, bucket, "The archive holds more bytes than the "
                               "bucket's quota allows.")
            if limits.max_objects is not None and count > limits.max_objects:
                raise errors.QuotaExceeded(
                    limits.max_objects, bucket.used_objects,
                    f"The archive holds more than the bucket's {limits.max_objects} objects.")
            if member.size > MAX_OBJECT_SIZE:
                raise errors.EntityTooLarge()
            self.quotas.check_object_size(bucket, member.size)
            item = await self._store(bucket, archive, member, principal)
            if previous is not None:
                await self.ctx.discard_blob(previous.blob_key)
            staged[member.key] = item
        await anyio.to_thread.run_sync(archive.finish)

    async def _store(self, bucket: BucketRecord, archive: _Archive, member: _Member,
                     principal: Principal) -> _Staged:
        """The member's bytes into a new blob, through the package rules."""
        rules = self.packages
        attrs = rules.adjust_attrs(bucket.name, member.key, member.attrs)
        inspection = await rules.precheck(bucket.name, member.key, member.size, principal.name)
        body = _MemberBody(archive, member.size)
        sealing = sse.new_sealing(self.ctx.keyring, WriteEncryption(), bucket)
        stream: Any = rules.wrap(body, inspection)
        stored: int | None = member.size
        if sealing is not None:  # the bucket's default encryption
            stream, stored = sealing.seal(stream), sealing.stored_size(member.size)
        try:
            with backend_errors():
                blob_key = (await self.ctx.backend.put(
                    self.ctx.new_blob_key(bucket.id, bucket.name, member.key),
                    stream, size=stored)).key
        except (UnsupportedFileType, MalwareDetected) as exc:
            await rules.record_rejection(bucket.name, member.key, exc, principal.name)
            raise
        finally:
            if inspection is not None:
                await inspection.aclose()
        if member.etag is not None and member.etag != body.md5_hex:
            await self.ctx.discard_blob(blob_key)
            raise InvalidArchive(f"The bytes of {member.key!r} do not match the ETag its "
                                 "export recorded: the archive is damaged.")
        return _Staged(member.key, blob_key, member.size, body.md5_hex, attrs,
                       sealing.params if sealing is not None else None)

    async def _commit(self, bucket: BucketRecord, members: list[_Staged], mode: ImportMode,
                      owner_id: int) -> tuple[int, list[str], int]:
        """One transaction: (keys removed, blobs no row points to any more, last change
        sequence number)."""
        now = datetime.now(UTC)
        rows = [(item, {
            "size": item.size, "etag": item.etag, "last_modified": now,
            "blob_key": item.blob_key, "content_type": item.attrs.content_type,
            "user_metadata": item.attrs.user_metadata, "headers": item.attrs.headers,
            "checksum_algorithm": None, "checksum_value": None,
            "storage_class": item.attrs.storage_class, "owner_id": owner_id,
            "is_delete_marker": False, "parts_count": None, "acl": item.attrs.acl,
            "tags": item.attrs.tags, "encryption": item.encryption,
        }) for item in members]
        keys = {item.key for item in members}

        def unit(conn: Connection) -> tuple[int, list[str], int]:
            # Written as PutObject and DeleteObject would: new versions and delete markers
            # in a versioned package, in place otherwise.
            state = repo.lock_bucket(conn, bucket.id)
            d_bytes = d_objects = 0
            old_blobs: list[str] = []
            entries: list[changes.Entry] = []
            for item, values in rows:
                current = repo.latest_object(conn, bucket.id, item.key)
                placed = versions.place(conn, bucket_id=bucket.id, key=item.key, state=state,
                                        values=values, current=current, now=now)
                d_bytes += placed.d_bytes
                d_objects += placed.d_objects
                if placed.replaced is not None and placed.replaced.parts_count:
                    repo.replace_object_parts(conn, placed.object_id, ())
                old_blobs.extend(placed.freed_blobs)
                entries.append(changes.Entry(item.key, changes.EVENT_PUT, item.size,
                                             item.etag, placed.version_id if state else None))
            deleted = 0
            after: str | None = None
            while mode == "replace":
                page = _page_after(bucket.id, after)(conn)
                for record in page:
                    if record.key in keys:
                        continue
                    removed = versions.remove(
                        conn, bucket_id=bucket.id, key=record.key, version_id=None,
                        state=state, now=now, owner_id=owner_id,
                        delete_event=changes.EVENT_DELETE,
                        marker_event=changes.EVENT_DELETE_MARKER)
                    d_bytes += removed.d_bytes
                    d_objects += removed.d_objects
                    deleted += 1
                    old_blobs.extend(removed.freed_blobs)
                    if removed.event is not None:
                        entries.append(changes.Entry(
                            record.key, removed.event,
                            version_id=removed.version_id if state else None))
                if len(page) < _PAGE:
                    break
                after = page[-1].key
            # The final totals must fit (a package that shrinks always does).
            self.quotas.commit(conn, NOTHING_HELD, bucket_id=bucket.id, d_bytes=d_bytes,
                               d_objects=d_objects)
            return deleted, old_blobs, changes.record(conn, bucket.id, bucket.name,
                                                      entries, now)

        for _attempt in range(_COMMIT_ATTEMPTS):
            try:
                return await self.ctx.db.write(unit)
            except (versions.Conflict, IntegrityError):
                gone = await self.ctx.db.read(
                    lambda conn: repo.bucket_by_id(conn, bucket.id)) is None
                if gone:
                    raise errors.NoSuchBucket(fields={"BucketName": bucket.name}) from None
        raise errors.ConditionalRequestConflict()


# -- export helpers --------------------------------------------------------------------------


def _page_after(bucket_id: int, after: str | None
                ) -> Callable[[Connection], Sequence[ObjectRecord]]:
    """The next page of live objects in key order, after ``after``."""
    return lambda conn: repo.list_latest(conn, bucket_id, after=after, after_inclusive=False,
                                         prefix="", upper=None, limit=_PAGE)


def _latest(bucket_id: int, key: str) -> Callable[[Connection], ObjectRecord | None]:
    return lambda conn: repo.latest_object(conn, bucket_id, key)


def _header(record: ObjectRecord) -> bytes:
    """The PAX tar header of an object: a directory for a folder marker, else a file."""
    folder = record.key.endswith("/") and record.size == 0
    info = tarfile.TarInfo(record.key)
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    info.mode = 0o755 if folder else 0o644
    info.size = 0 if folder else record.size
    info.mtime = int(record.last_modified.timestamp())
    info.uname = info.gname = ""
    pax: dict[str, str] = {PAX_ETAG: record.etag}
    if record.content_type is not None:
        pax[PAX_CONTENT_TYPE] = record.content_type
    for name, value in sorted(record.user_metadata.items()):
        pax[PAX_META + name] = value
    for name, value in sorted(record.headers.items()):
        pax[PAX_HEADER + name] = value
    info.pax_headers = pax
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


class _Gatherer:
    """Gathers the small pieces of the export (headers, padding, small objects) into
    larger writes; large chunks pass as they are. ``offset``: bytes of archive so far."""

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._pending = 0
        self.offset = 0

    def add(self, piece: bytes) -> None:
        if piece:
            self._pieces.append(piece)
            self._pending += len(piece)
            self.offset += len(piece)

    def send(self, chunk: bytes) -> list[bytes]:
        """What to yield for an object's chunk."""
        if len(chunk) < _GATHER:
            self.add(chunk)
            return self.flush(_GATHER)
        self.offset += len(chunk)
        return [*self.flush(0), chunk]

    def flush(self, at_least: int) -> list[bytes]:
        """The gathered pieces as one, once there are ``at_least`` bytes of them."""
        if not self._pieces or self._pending < at_least:
            return []
        joined = b"".join(self._pieces)
        self._pieces, self._pending = [], 0
        return [joined]


async def _gzipped(stream: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """``stream`` gzip-compressed; large pieces are compressed off the event loop."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    try:
        async for piece in stream:
            if len(piece) >= 64 * 1024:
                out = await anyio.to_thread.run_sync(compressor.compress, piece)
            else:
                out = compressor.compress(piece)
            if out:
                yield out
        yield compressor.flush()
    finally:
        await stream.aclose()


# -- import helpers --------------------------------------------------------------------------


def _spool_cap(limits: Limits) -> int | None:
    """The largest archive worth receiving: what the quota holds, plus the headers."""
    if limits.max_bytes is None:
        return None
    members = limits.max_objects if limits.max_objects is not None else _ASSUMED_MEMBERS
    return limits.max_bytes + (members + 2) * _MEMBER_OVERHEAD + tarfile.RECORDSIZE


def _too_big(limits: Limits, bucket: BucketRecord, message: str) -> errors.QuotaExceeded:
    return errors.QuotaExceeded(limits.max_bytes or 0, bucket.used_bytes, message)


def _temporary_file(directory: Path) -> IO[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryFile(dir=directory)


class _Tracked:
    """The archive's (decompressed) bytes, remembering the last read: tarfile takes a
    truncated or garbled end for the end of the archive, so :meth:`_Archive.next` checks
    that the block that ended it really was the end-of-archive marker."""

    def __init__(self, source: IO[bytes] | gzip.GzipFile) -> None:
        self.source = source
        self.last = b""

    def read(self, size: int = -1) -> bytes:
        self.last = self.source.read(size)
        return self.last

    def write(self, data: bytes) -> int:
        raise io.UnsupportedOperation("an archive being imported is read only")

    def close(self) -> None:
        """The spool file is closed by whoever opened it."""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.source.seek(offset, whence)

    def tell(self) -> int:
        return self.source.tell()


class _Archive:
    """A tar or tar.gz archive read member by member (blocking: call it from a worker
    thread). Every tarfile error becomes :class:`InvalidArchive`."""

    def __init__(self, file: IO[bytes]) -> None:
        compressed = file.read(2) == b"\x1f\x8b"
        file.seek(0)
        self._gzip = gzip.GzipFile(fileobj=file, mode="rb") if compressed else None
        self._source = _Tracked(self._gzip if self._gzip is not None else file)
        self._data: IO[bytes] | None = None
        try:
            # Not closed: a TarFile given a file object holds nothing of its own.
            self._tar = tarfile.open(  # noqa: SIM115
                fileobj=self._source, mode="r:", encoding="utf-8", errors="strict")
        except _TAR_ERRORS as exc:
            raise InvalidArchive(f"The body is not a tar or tar.gz archive ({exc}).") from None

    def next(self) -> _Member | None:
        """The next member worth an object (the archive's root directory is not); None at
        the end of the archive."""
        while True:
            try:
                info = self._tar.next()
            except _TAR_ERRORS as exc:
                raise InvalidArchive(f"The archive is damaged or truncated ({exc}).") from None
            if info is None:
                if self._source.last != tarfile.NUL * tarfile.BLOCKSIZE:
                    raise InvalidArchive("The archive is truncated or damaged: it does not "
                                         "end with the end-of-archive marker.")
                return None
            # tarfile keeps every member read (for hard links); nothing here needs them.
            self._tar.members.clear()  # type: ignore[attr-defined]
            member = _member(info)
            if member is None:
                continue
            self._data = self._tar.extractfile(info) if member.size else None
            return member

    def read(self, size: int, md5: Any) -> bytes:
        """The next ``size`` bytes of the current member (digested into ``md5``)."""
        if size <= 0:
            return b""
        try:
            chunk = self._data.read(size) if self._data is not None else b""
        except _TAR_ERRORS as exc:
            raise InvalidArchive(f"The archive is damaged or truncated ({exc}).") from None
        if len(chunk) != size:
            raise InvalidArchive("The archive is truncated.")
        md5.update(chunk)
        return chunk

    def finish(self) -> None:
        """A compressed archive must also be whole after its tar end (its CRC checked)."""
        if self._gzip is None:
            return
        try:
            while self._gzip.read(CHUNK_SIZE):
                pass
        except _TAR_ERRORS as exc:
            raise InvalidArchive(f"The compressed archive is damaged or truncated ({exc}).") \
                from None


def _member(info: tarfile.TarInfo) -> _Member | None:
    """What a member becomes; None for the archive's root (``.``); InvalidArchive for
    anything but a regular file or a directory, or a name that cannot be a key."""
    if info.type == tarfile.DIRTYPE:
        folder = True
    elif info.type in _FILE_TYPES and info.sparse is None:
        folder = False
    else:
        kind = _TYPE_NAMES.get(info.type, f"member of type {info.type!r}")
        if info.sparse is not None:
            kind = "sparse file"
        raise InvalidArchive(f"{info.name!r} is a {kind}: a package archive holds regular "
                             "files and directories only.")
    name = info.name
    while name.startswith("./"):
        name = name[2:]
    if folder and name in ("", "."):
        return None
    if not name or name.startswith("/"):
        raise InvalidArchive(f"{info.name!r} is not a relative path.")
    if ".." in name.split("/"):
        raise InvalidArchive(f"{info.name!r} leads out of the package (..).")
    if "\x00" in name:
        raise InvalidArchive(f"{info.name!r} holds a NUL character.")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArchive(f"{info.name!r} is not valid UTF-8.") from None
    key = name + "/" if folder else name
    validate_key(key)
    return _Member(key, 0 if folder else info.size, _attributes(info, key, folder),
                   _recorded_etag(info.pax_headers.get(PAX_ETAG)))


def _attributes(info: tarfile.TarInfo, key: str, folder: bool) -> ObjectAttributes:
    """Content type, metadata and system headers from the member's PAX records, checked
    as request headers would be. A member from elsewhere gets a content type guessed from
    its name."""
    pax = info.pax_headers
    headers: dict[str, str] = {}
    for name, value in pax.items():
        if name.startswith(PAX_META):
            meta = name[len(PAX_META):]
            if _TOKEN.fullmatch(meta):  # others could not be sent back (S3 drops them)
                headers[META_PREFIX + meta.lower()] = value
        elif name.startswith(PAX_HEADER):
            stored = name[len(PAX_HEADER):].lower()
            if stored in _STORED:
                headers[stored] = value
    content_type = pax.get(PAX_CONTENT_TYPE)
    if content_type is None and not folder and PAX_ETAG not in pax:
        content_type = mimetypes.guess_type(key, strict=False)[0]
    if content_type is not None:
        headers["content-type"] = content_type
    for name, value in headers.items():
        if has_control_characters(value):
            raise InvalidArchive(f"{key!r}: {name} holds control characters.")
    try:
        return object_attributes(headers)
    except errors.GatewayError as exc:
        raise InvalidArchive(f"{key!r}: {exc.message}") from None


def _recorded_etag(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().strip('"').lower()
    return value if _MD5.fullmatch(value) else None


class _MemberBody:
    """One member's bytes on their way to the backend, read off the event loop and
    digested as they pass (``md5_hex``, once exhausted)."""

    def __init__(self, archive: _Archive, size: int) -> None:
        self._archive = archive
        self._size = size
        self._md5 = hashlib.md5()

    @property
    def md5_hex(self) -> str:
        return self._md5.hexdigest()

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self._chunks()

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        left = self._size
        read: Callable[[int, Any], bytes] = self._archive.read
        while left > 0:
            chunk = await anyio.to_thread.run_sync(read, min(CHUNK_SIZE, left), self._md5)
            left -= len(chunk)
            yield chunk
