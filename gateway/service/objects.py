"""Object reads and writes.

A write streams into a *new* blob, then commits the row with a compare-and-swap on the
previous row's blob key, then deletes the old blob. A crash at any step leaves the old
object or the new one; the blobs nobody points to are collected later (``service.gc``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gateway import errors
from gateway.auth.policy import (
    may_read_object,
    opens_access,
    require_bucket_access,
    require_full,
)
from gateway.metadata import repo
from gateway.service import changes, sse, versions
from gateway.service.conditions import check_copy_source, check_read, check_write, resolve_range
from gateway.service.context import Context, backend_errors, shielded
from gateway.service.encryption import CustomerKey, WriteEncryption
from gateway.service.groups import caller_grants
from gateway.service.packages import (
    MalwareDetected,
    PackageService,
    UnsupportedFileType,
)
from gateway.service.quota import NOTHING_HELD, QuotaService, Reservation
from gateway.types import (
    BucketRecord,
    ObjectAttributes,
    ObjectPart,
    ObjectRecord,
    Principal,
    RangeSpec,
    ReadConditions,
    WriteConditions,
)
from storage_backends import BlobNotFound, BlobReader, ByteRange

#: Opens a blob's plaintext bytes (all, or a range): ``backend.get`` for a blob in clear.
OpenBlob = Callable[[ByteRange | None], Awaitable[BlobReader]]

log = logging.getLogger("gateway.service")

MAX_KEY_BYTES = 1024
MAX_OBJECT_SIZE = 5 * 1024**4  # 5 TiB, as S3
_COMMIT_ATTEMPTS = 8


class VerifiedBody(Protocol):
    """A request body that verifies itself while streaming (``gateway.checksums``)."""

    size: int
    md5_hex: str
    checksum_algorithm: str | None
    checksum_value: str | None

    def __aiter__(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class ObjectRead:
    record: ObjectRecord
    byte_range: ByteRange | None
    reader: BlobReader | None  # None for HEAD, and for an empty part
    #: An empty part was asked for (``?partNumber=N`` of a zero-length last part).
    empty_part: bool = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it streams; the reader is closed however the iteration ends."""
        if self.reader is None:
            return
        try:
            async for chunk in self.reader:
                yield chunk
        finally:
            await self.reader.aclose()


@dataclass(frozen=True, slots=True)
class DeleteOutcome:
    key: str
    #: The version id the request named (None: the current version).
    version_id: str | None
    error: errors.GatewayError | None = None
    #: A delete marker was made, or the version removed was one.
    delete_marker: bool = False
    #: The version the delete made or removed (None in a never-versioned bucket).
    result_version_id: str | None = None
    #: False when the key was left alone (see ``delete_batch``'s ``unchanged``).
    changed: bool = True


def validate_key(key: str) -> None:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise errors.KeyTooLongError(fields={"MaxSizeAllowed": str(MAX_KEY_BYTES)})


def _live(record: ObjectRecord | None) -> ObjectRecord | None:
    """The object a conditional write compares against: a delete marker is no object."""
    return None if record is None or record.is_delete_marker else record


_check_version = versions.check_version_id


def _require_object(obj: ObjectRecord | None, marker: ObjectRecord | None, key: str,
                    version_id: str | None) -> None:
    """S3's answers for a read that finds no object: a delete marker named by version id
    is 405, the latest being a delete marker is 404 NoSuchKey (both say so in headers),
    an unknown version is NoSuchVersion."""
    if marker is not None:
        headers = {"x-amz-delete-marker": "true", "x-amz-version-id": marker.version_id}
        if version_id is not None:
            raise errors.MethodNotAllowed(
                "The specified method is not allowed against this resource.",
                fields={"Method": "GET", "ResourceType": "DeleteMarker"}, headers=headers)
        raise errors.NoSuchKey(fields={"Key": key}, headers=headers)
    if obj is None or obj.blob_key is None:
        if version_id is not None:
            raise errors.NoSuchVersion(fields={"Key": key, "VersionId": version_id})
        raise errors.NoSuchKey(fields={"Key": key})


class ObjectService:
    def __init__(self, ctx: Context, quotas: QuotaService) -> None:
        self.ctx = ctx
        self.quotas = quotas
        self.packages = PackageService(ctx)

    async def bucket(self, principal: Principal, name: str, *, write: bool,
                     acl: str = "private") -> BucketRecord:
        """The bucket, if the caller may read it (or write to it). ``acl``: the canned ACL
        a write gives its object; one that makes it public takes ``full`` access."""
        bucket = await self.ctx.db.read(lambda conn: repo.bucket_by_name(conn, name))
        if bucket is None:
            raise errors.NoSuchBucket(fields={"BucketName": name})
        grants = await caller_grants(self.ctx, principal, bucket)
        require_bucket_access(principal, bucket, write=write, grants=grants)
        if write and opens_access(acl):
            require_full(principal, bucket, grants)
        return bucket

    # -- writes ----------------------------------------------------------------------------

    async def put(
        self,
        principal: Principal,
        bucket_name: str,
        key: str,
        body: VerifiedBody,
        attrs: ObjectAttributes,
        *,
        conditions: WriteConditions = WriteConditions(),
        size_hint: int | None = None,
        size_bound: int | None = None,
        event: str = changes.EVENT_PUT,
        encryption: WriteEncryption | None = None,
    ) -> ObjectRecord:
        """``size_hint``: the announced size (Content-Length or the decoded length);
        ``size_bound``: when the size is unknown, at most this many bytes can come (a form
        upload's request length), which is what the quota holds. ``encryption``: what the
        request asked for (none: the bucket's default applies). The body is digested and
        inspected as it arrives, then encrypted: ETags, checksums and sizes are the
        plaintext's."""
        validate_key(key)
        if size_hint is not None and size_hint > MAX_OBJECT_SIZE:
            raise errors.EntityTooLarge()
        bucket = await self.bucket(principal, bucket_name, write=True, acl=attrs.acl)
        attrs = self.packages.adjust_attrs(bucket.name, key, attrs)
        hold = self.quotas.require_size(bucket, size_hint, bound=size_bound)
        if not conditions.empty:
            # Fail fast before taking the body; the commit checks again, atomically.
            current = await self.ctx.db.read(
                lambda conn: repo.latest_object(conn, bucket.id, key))
            check_write(conditions, _live(current))
        sealing = sse.new_sealing(self.ctx.keyring, encryption or WriteEncryption(), bucket)
        inspection = await self.packages.precheck(bucket.name, key, size_hint, principal.name)
        try:
            reservation = await self.quotas.reserve(bucket, nbytes=hold, key=key)
        except BaseException:
            if inspection is not None:
                await inspection.aclose()
            raise
        try:
            stream = self.packages.wrap(body, inspection)
            stored = size_hint
            if sealing is not None:
                stream, stored = sealing.seal(stream), sealing.stored_size(size_hint)
            try:
                with self.ctx.uploads.slot(), backend_errors():
                    blob_key = (await self.ctx.backend.put(
                        self.ctx.new_blob_key(bucket.id, bucket.name, key), stream,
                        size=stored)).key
            except (UnsupportedFileType, MalwareDetected) as exc:
                await self.packages.record_rejection(bucket.name, key, exc, principal.name)
                raise
            finally:
                if inspection is not None:
                    await inspection.aclose()
            if body.size != size_hint:
                try:
                    self.quotas.check_object_size(bucket, body.size)
                    await self.packages.check_name_and_size(bucket.name, key, body.size,
                                                            principal.name)
                except errors.GatewayError:
                    await self.ctx.discard_blob(blob_key)
                    raise
            return await self.commit_new_blob(
                bucket, key, blob_key, conditions,
                size=body.size, etag=body.md5_hex, attrs=attrs,
                checksum=(body.checksum_algorithm, body.checksum_value),
                owner_id=principal.user_id, reservation=reservation, event=event,
                encryption=sealing.params if sealing is not None else None)
        except BaseException:
            await self.quotas.release(reservation)
            raise

    async def commit_new_blob(
        self,
        bucket: BucketRecord,
        key: str,
        blob_key: str,
        conditions: WriteConditions,
        *,
        size: int,
        etag: str,
        attrs: ObjectAttributes,
        checksum: tuple[str | None, str | None],
        owner_id: int,
        parts: Sequence[ObjectPart] = (),
        before: Callable[[Connection], int] | None = None,
        keep_blob_on: tuple[type[BaseException], ...] = (),
        reservation: Reservation = NOTHING_HELD,
        event: str = changes.EVENT_PUT,
        encryption: dict[str, Any] | None = None,
    ) -> ObjectRecord:
        """Point the key at ``blob_key``, and move the bucket's usage by what changes, and
        record the change (``event``) in the change log. ``encryption``: the parameters
        the blob was encrypted with (None: it holds the plaintext).
        ``before`` runs first in the same transaction (a multipart completion consumes its
        upload there) and returns the bytes of usage it freed. On failure the new blob is
        discarded, unless the exception is one of ``keep_blob_on`` (a retry may reuse it)
        or the database became unavailable (the commit may have happened).
        The caller releases ``reservation`` on failure."""
        now = datetime.now(UTC)
        values: dict[str, Any] = {
            "size": size, "etag": etag, "last_modified": now, "blob_key": blob_key,
            "content_type": attrs.content_type, "user_metadata": attrs.user_metadata,
            "headers": attrs.headers, "checksum_algorithm": checksum[0],
            "checksum_value": checksum[1], "storage_class": attrs.storage_class,
            "owner_id": owner_id, "is_delete_marker": False, "is_latest": True,
            "parts_count": len(parts) or None, "acl": attrs.acl, "tags": attrs.tags,
            "encryption": encryption,
        }

        def unit(conn: Connection) -> tuple[versions.Placed, int]:
            state = repo.lock_bucket(conn, bucket.id)
            released = before(conn) if before is not None else 0
            current = repo.latest_object(conn, bucket.id, key)
            check_write(conditions, _live(current))
            placed = versions.place(conn, bucket_id=bucket.id, key=key, state=state,
                                    values=values, current=current, now=now)
            self.quotas.commit(conn, reservation, bucket_id=bucket.id, d_bytes=placed.d_bytes,
                               d_objects=placed.d_objects, released_bytes=released)
            if parts or (placed.replaced is not None and placed.replaced.parts_count):
                repo.replace_object_parts(conn, placed.object_id, parts)
            seq = changes.record(conn, bucket.id, bucket.name, [changes.Entry(
                key, event, size, etag, placed.version_id if state else None)], now)
            return placed, seq

        try:
            async with shielded():
                for _attempt in range(_COMMIT_ATTEMPTS):
                    try:
                        placed, seq = await self.ctx.db.write(unit)
                        break
                    except (versions.Conflict, IntegrityError):
                        if await self._bucket_gone(bucket):
                            raise errors.NoSuchBucket(
                                fields={"BucketName": bucket.name}) from None
                else:
                    raise errors.ConditionalRequestConflict()
        except keep_blob_on:
            raise
        except errors.ServiceUnavailable:
            # The database went away, perhaps after the COMMIT reached it and before its
            # answer came back: the row may point at the blob. It stays; the garbage
            # collector removes it if no row does.
            raise
        except BaseException:
            await self.ctx.discard_blob(blob_key)
            raise
        self.ctx.hub.notify(seq)
        for old_blob in placed.freed_blobs:
            await self.ctx.discard_blob(old_blob)
        return ObjectRecord(
            id=placed.object_id, bucket_id=bucket.id, key=key, version_id=placed.version_id,
            size=size, etag=etag, last_modified=now, blob_key=blob_key,
            content_type=attrs.content_type, user_metadata=attrs.user_metadata,
            headers=attrs.headers, checksum_algorithm=checksum[0],
            checksum_value=checksum[1], storage_class=attrs.storage_class,
            parts_count=len(parts) or None, acl=attrs.acl, tags=attrs.tags,
            encryption=encryption)

    async def _bucket_gone(self, bucket: BucketRecord) -> bool:
        found = await self.ctx.db.read(lambda conn: repo.bucket_by_name(conn, bucket.name))
        return found is None

    async def copy(
        self,
        principal: Principal,
        src_bucket: str,
        src_key: str,
        src_version: str | None,
        dst_bucket: str,
        dst_key: str,
        *,
        replace_metadata: bool,
        attrs: ObjectAttributes,
        replace_tags: bool = False,
        source_conditions: ReadConditions = ReadConditions(),
        conditions: WriteConditions = WriteConditions(),
        source_customer: CustomerKey | None = None,
        encryption: WriteEncryption | None = None,
    ) -> ObjectRecord:
        """``source_customer``: the SSE-C key of the source (``x-amz-copy-source-server-
        side-encryption-customer-*``); ``encryption``: the target's, as the request asks
        (none: the target bucket's default applies; the source's is never inherited).
        Encrypted the same way as its source (SSE-S3 to SSE-S3, SSE-C to SSE-C under the
        same key), the target shares the source's data key, re-wrapped, and its blob is
        copied as it is; otherwise the bytes stream through here, decrypted and encrypted
        anew."""
        validate_key(dst_key)
        _check_version(src_version)
        write = encryption or WriteEncryption()
        src_b = await self.bucket(principal, src_bucket, write=False)
        dst_b = await self.bucket(principal, dst_bucket, write=True, acl=attrs.acl)
        attrs = self.packages.adjust_attrs(dst_b.name, dst_key, attrs)
        if (src_b.id == dst_b.id and src_key == dst_key and not replace_metadata
                and write.mode is None):
            raise errors.InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to "
                "itself without changing the object's metadata, storage class, website "
                "redirect location or encryption attributes.")
        for _attempt in range(3):
            src = await self.ctx.db.read(
                lambda conn: repo.object_version(conn, src_b.id, src_key, src_version))
            if src is None and src_version is not None:
                raise errors.NoSuchVersion(fields={"Key": src_key, "VersionId": src_version})
            if src is not None and src.is_delete_marker and src_version is not None:
                raise errors.InvalidRequest("The source of a copy request may not "
                                            "specifically refer to a delete marker by "
                                            "version id.")
            if src is None or src.is_delete_marker or src.blob_key is None:
                raise errors.NoSuchKey(fields={"Key": src_key})
            src_data_key = sse.data_key(src.encryption, self.ctx.keyring, source_customer)
            check_copy_source(source_conditions, src.etag, src.last_modified)
            self.quotas.check_object_size(dst_b, src.size)
            await self.packages.check_name_and_size(dst_b.name, dst_key, src.size,
                                                    principal.name)
            sealing = sse.reuse_sealing(src, src_data_key, write, dst_b, self.ctx.keyring)
            as_is = sealing is not None or (src.encryption is None and
                                            write.resolve(sse.bucket_default(dst_b)) is None)
            if not as_is:
                sealing = sse.new_sealing(self.ctx.keyring, write, dst_b)
            reservation = await self.quotas.reserve(dst_b, nbytes=src.size, key=dst_key)
            try:
                with backend_errors():
                    target = self.ctx.new_blob_key(dst_b.id, dst_b.name, dst_key)
                    if as_is:
                        blob_key = (await self.ctx.backend.copy(src.blob_key, target)).key
                    else:
                        blob_key = await self._recrypt(src, src_data_key, sealing, target)
            except BlobNotFound:
                await self.quotas.release(reservation)
                continue  # the source was overwritten meanwhile: read it again
            except BaseException:
                await self.quotas.release(reservation)
                raise
            params = sealing.params if sealing is not None else None
            try:
                await self.packages.inspect_blob(
                    dst_b.name, dst_key, blob_key, src.size, principal.name,
                    open_blob=self.blob_opener(blob_key, src.size, params,
                                               sealing.data_key if sealing else None))
            except BaseException:
                await self.ctx.discard_blob(blob_key)
                await self.quotas.release(reservation)
                raise
            # An ACL is never copied: the copy gets the one the request names.
            new_attrs = attrs if replace_metadata else ObjectAttributes(
                content_type=src.content_type, user_metadata=src.user_metadata,
                headers=src.headers,
                storage_class=attrs.storage_class if attrs.storage_class != "STANDARD"
                else src.storage_class, acl=attrs.acl)
            # Tags: the source's (x-amz-tagging-directive COPY), or the request's (REPLACE).
            new_attrs = dataclasses.replace(new_attrs,
                                            tags=attrs.tags if replace_tags else src.tags)
            try:
                return await self.commit_new_blob(
                    dst_b, dst_key, blob_key, conditions, size=src.size, etag=src.etag,
                    attrs=new_attrs, checksum=(src.checksum_algorithm, src.checksum_value),
                    owner_id=principal.user_id, reservation=reservation,
                    event=changes.EVENT_COPY, encryption=params)
            except BaseException:
                await self.quotas.release(reservation)
                raise
        raise errors.ConditionalRequestConflict()

    async def _recrypt(self, src: ObjectRecord, data_key: bytes | None,
                       sealing: sse.Sealing | None, target: str) -> str:
        """Stream the source's plaintext into a new blob ``target``, encrypted with
        ``sealing`` (or not); its key. Raises ``BlobNotFound`` when the source is gone."""
        reader = await self.open_blob(src, None, data_key)
        try:
            source: AsyncIterator[bytes] | BlobReader = reader
            size: int | None = src.size
            if sealing is not None:
                source, size = sealing.seal(reader), sealing.stored_size(src.size)
            return (await self.ctx.backend.put(target, source, size=size)).key
        finally:
            await reader.aclose()

    async def open_blob(self, obj: ObjectRecord, byte_range: ByteRange | None,
                        data_key: bytes | None) -> BlobReader:
        """A reader of the object's plaintext ``byte_range`` (None: all of it), decrypted
        with ``data_key`` when the object is encrypted. Raises ``BlobNotFound``."""
        return await sse.open_object(self.ctx, obj, byte_range, data_key)

    def blob_opener(self, blob_key: str, size: int, params: dict[str, Any] | None,
                    data_key: bytes | None,
                    parts: Sequence[tuple[int, int]] | None = None) -> OpenBlob:
        """How to read a blob no row points to yet (a copy, a completed upload) as
        plaintext, for the package inspection."""

        async def open_blob(byte_range: ByteRange | None) -> BlobReader:
            if params is None:
                return await self.ctx.backend.get(blob_key, byte_range=byte_range)
            if data_key is None:  # SSE-C, and the request did not bring the key
                raise errors.InvalidRequest(
                    "The object must be inspected before it is stored: the request must "
                    "include its encryption key.")
            return await sse.open_plain(self.ctx.backend, blob_key, params, data_key,
                                        plain_size=size, byte_range=byte_range, parts=parts)

        return open_blob

    async def delete(self, principal: Principal, bucket_name: str, key: str,
                     version_id: str | None = None) -> DeleteOutcome:
        validate_key(key)
        _check_version(version_id)
        bucket = await self.bucket(principal, bucket_name, write=True)
        outcome = await self.delete_batch(bucket, [(key, version_id)],
                                           owner_id=principal.user_id)
        if outcome[0].error is not None:
            raise outcome[0].error
        return outcome[0]

    async def delete_many(self, principal: Principal, bucket_name: str,
                          items: Sequence[tuple[str, str | None]]) -> list[DeleteOutcome]:
        bucket = await self.bucket(principal, bucket_name, write=True)
        results: list[DeleteOutcome] = []
        for start in range(0, len(items), 100):
            results.extend(await self.delete_batch(bucket, items[start:start + 100],
                                                    owner_id=principal.user_id))
        return results

    async def delete_batch(self, bucket: BucketRecord,
                            items: Sequence[tuple[str, str | None]], *,
                            owner_id: int | None = None,
                            delete_event: str = changes.EVENT_DELETE,
                            marker_event: str = changes.EVENT_DELETE_MARKER,
                            unchanged: Mapping[str, tuple[int, datetime]] | None = None,
                            ) -> list[DeleteOutcome]:
        """Deletes in one transaction (rows removed, or delete markers placed), then the
        blobs no version holds any more. Missing keys and versions are not errors.
        ``owner_id``: who owns the delete markers made; the events name the deletes in the
        change log (lifecycle expiry has its own). ``unchanged``: key -> (row id, last
        modified) its latest version must still have, or the key is left alone (a sweep
        that decided on an older state must not delete what was written since)."""

        def unit(conn: Connection) -> tuple[list[DeleteOutcome], list[str], int]:
            state = repo.lock_bucket(conn, bucket.id)
            now = datetime.now(UTC)
            outcomes: list[DeleteOutcome] = []
            blobs: list[str] = []
            entries: list[changes.Entry] = []
            for key, version_id in items:
                try:
                    validate_key(key)
                    _check_version(version_id)
                except errors.GatewayError as exc:
                    outcomes.append(DeleteOutcome(key, version_id, exc))
                    continue
                if unchanged is not None and key in unchanged:
                    latest = repo.latest_object(conn, bucket.id, key)
                    if latest is None or (latest.id, latest.last_modified) != unchanged[key]:
                        outcomes.append(DeleteOutcome(key, version_id, changed=False))
                        continue
                removed = versions.remove(
                    conn, bucket_id=bucket.id, key=key, version_id=version_id, state=state,
                    now=now, owner_id=owner_id, delete_event=delete_event,
                    marker_event=marker_event)
                if removed.d_bytes or removed.d_objects:
                    repo.adjust_usage(conn, bucket.id, removed.d_bytes, removed.d_objects)
                blobs.extend(removed.freed_blobs)
                if removed.event is not None:
                    entries.append(changes.Entry(
                        key, removed.event,
                        version_id=removed.version_id if state else None))
                outcomes.append(DeleteOutcome(key, version_id,
                                              delete_marker=removed.delete_marker,
                                              result_version_id=removed.version_id))
            return outcomes, blobs, changes.record(conn, bucket.id, bucket.name, entries)

        async with shielded():
            for _attempt in range(_COMMIT_ATTEMPTS):
                try:
                    outcomes, blobs, seq = await self.ctx.db.write(unit)
                    break
                except versions.Conflict:
                    continue
            else:
                raise errors.ConditionalRequestConflict()
            if seq:
                self.ctx.hub.notify(seq)
            for blob in blobs:
                await self.ctx.discard_blob(blob)
        return outcomes

    # -- reads -----------------------------------------------------------------------------

    async def open(
        self,
        principal: Principal,
        bucket_name: str,
        key: str,
        *,
        version_id: str | None = None,
        range_spec: RangeSpec | None = None,
        conditions: ReadConditions = ReadConditions(),
        head: bool = False,
        part_number: int | None = None,
        copy_source: bool = False,
        customer: CustomerKey | None = None,
    ) -> ObjectRead:
        """Everything that can fail is checked here, before a response starts.
        ``copy_source``: the object is read as the source of a copy (failed conditions are
        412, never 304). ``customer``: the SSE-C key the request presents; an SSE-C object
        (HEAD included) is refused without the right one. Ranges and parts are the
        plaintext's; an encrypted object is read (and authenticated) by whole chunks."""
        validate_key(key)
        _check_version(version_id)
        if part_number is not None and range_spec is not None:
            raise errors.InvalidRequest(
                "Cannot specify both Range header and partNumber query parameter")
        for _attempt in range(5):
            bucket, obj = await self.ctx.db.read(
                lambda conn: repo.bucket_and_latest_object(conn, bucket_name, key, version_id))
            if bucket is None:
                raise errors.NoSuchBucket(fields={"BucketName": bucket_name})
            marker = obj if obj is not None and obj.is_delete_marker else None
            if marker is not None:
                obj = None
            if not may_read_object(principal, bucket, obj) and not may_read_object(
                    principal, bucket, obj, await caller_grants(self.ctx, principal, bucket)):
                # Strangers learn nothing, not even whether the key exists.
                raise errors.AccessDenied()
            _require_object(obj, marker, key, version_id)
            assert obj is not None and obj.blob_key is not None
            data_key = sse.data_key(obj.encryption, self.ctx.keyring, customer)
            if copy_source:
                check_copy_source(conditions, obj.etag, obj.last_modified)
            else:
                check_read(conditions, obj.etag, obj.last_modified)
            if part_number is not None:
                byte_range = await self._part_range(obj, part_number)
                if byte_range is None and obj.size:
                    return ObjectRead(obj, None, None, empty_part=True)
            else:
                byte_range = resolve_range(range_spec, obj.size)
            if head:
                return ObjectRead(obj, byte_range, None)
            try:
                with backend_errors():
                    reader = await self.open_blob(obj, byte_range, data_key)
            except BlobNotFound:
                continue  # overwritten between the row read and the open: read again
            return ObjectRead(obj, byte_range, reader)
        raise errors.ServiceUnavailable("The object changed too often while being read.")

    async def get_acl(self, principal: Principal, bucket_name: str, key: str,
                      version_id: str | None = None) -> tuple[BucketRecord, ObjectRecord]:
        validate_key(key)
        _check_version(version_id)
        bucket, obj = await self.ctx.db.read(
            lambda conn: repo.bucket_and_latest_object(conn, bucket_name, key, version_id))
        if bucket is None:
            raise errors.NoSuchBucket(fields={"BucketName": bucket_name})
        require_full(principal, bucket, await caller_grants(self.ctx, principal, bucket))
        marker = obj if obj is not None and obj.is_delete_marker else None
        _require_object(None if marker else obj, marker, key, version_id)
        assert obj is not None
        return bucket, obj

    async def set_acl(self, principal: Principal, bucket_name: str, key: str, acl: str,
                      version_id: str | None = None) -> None:
        _bucket, obj = await self.get_acl(principal, bucket_name, key, version_id)
        if not await self.ctx.db.write(lambda conn: repo.set_object_acl(conn, obj.id, acl)):
            raise errors.NoSuchKey(fields={"Key": key})

    async def _part_range(self, obj: ObjectRecord, part_number: int) -> ByteRange | None:
        """The bytes of one part; an object not made of parts is its own part 1."""
        count = obj.parts_count or 1
        if part_number > count:
            raise errors.InvalidPartNumber(fields={"PartNumberRequested": str(part_number),
                                                   "ActualPartCount": str(count)})
        if obj.parts_count is None:
            return ByteRange(0, obj.size) if obj.size else None
        found = await self.ctx.db.read(
            lambda conn: repo.object_part(conn, obj.id, part_number))
        if found is None:
            raise errors.InvalidPartNumber()
        return ByteRange(found.offset, found.offset + found.size) if found.size else None

