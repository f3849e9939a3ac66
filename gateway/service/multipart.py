"""Multipart uploads.

The gateway owns upload ids and part records; the backend keeps part bytes. Every part
attempt has a backend *token*, so the parts a completion chooses are exactly the bytes
whose ETags it checked, whatever late or repeated uploads do meanwhile.

Completion is a metadata operation: the backend links the chosen parts into one blob
(segments; no byte is copied), then the object row is committed in the same transaction
that consumes the upload. Until that commit the upload is ``completing``: a crash leaves it
there, and CompleteMultipartUpload or AbortMultipartUpload can finish the job after a
restart. Whichever of Complete and Abort commits first wins; the other gets NoSuchUpload.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import pairwise
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gateway import checksums, errors
from gateway.metadata import repo
from gateway.service import changes, sse
from gateway.service.conditions import check_write
from gateway.service.context import Context, backend_errors, shielded
from gateway.service.encryption import SSE_S3, CustomerKey, WriteEncryption, params_mode
from gateway.service.listing import successor
from gateway.service.objects import ObjectRead, ObjectService, VerifiedBody, validate_key
from gateway.service.packages import MalwareDetected, UnsupportedFileType
from gateway.service.quota import Reservation
from gateway.types import (
    ObjectAttributes,
    ObjectPart,
    ObjectRecord,
    PartRecord,
    Principal,
    RangeSpec,
    ReadConditions,
    UploadRecord,
    WriteConditions,
)
from storage_backends import PartRef
from storage_backends import errors as storage_errors
from storage_backends._streams import BytesReader

log = logging.getLogger("gateway.multipart")

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_SIZE = 5 * 1024**3
MAX_PART_NUMBER = 10_000
MAX_LIST = 1000
ACTIVE, COMPLETING = "active", "completing"
#: Algorithms whose checksums combine into a full-object value (the others are COMPOSITE).
FULL_OBJECT_ALGORITHMS = frozenset({"CRC32", "CRC32C", "CRC64NVME"})


@dataclass(frozen=True, slots=True)
class CompletedPart:
    """A part as a CompleteMultipartUpload request names it."""

    part_number: int
    etag: str  # without quotes
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm -> base64 value


@dataclass(slots=True)
class UploadListing:
    uploads: list[UploadRecord] = field(default_factory=list)
    common_prefixes: list[str] = field(default_factory=list)
    is_truncated: bool = False
    next_key_marker: str | None = None
    next_upload_id_marker: str | None = None


@dataclass(frozen=True, slots=True)
class PartListing:
    upload: UploadRecord
    parts: list[PartRecord]
    is_truncated: bool
    next_marker: int | None


class _UploadGone(Exception):
    pass


def validate_part_number(value: int) -> None:
    if not 1 <= value <= MAX_PART_NUMBER:
        raise errors.InvalidArgument(
            "Part number must be an integer between 1 and 10000, inclusive",
            name="partNumber", value=str(value))


def checksum_type_for(algorithm: str | None, requested: str | None) -> str | None:
    if algorithm is None:
        if requested:
            raise errors.InvalidRequest(
                "The x-amz-checksum-type header can only be used with x-amz-checksum-algorithm")
        return None
    kind = (requested or ("FULL_OBJECT" if algorithm == "CRC64NVME" else "COMPOSITE")).upper()
    if kind not in ("COMPOSITE", "FULL_OBJECT"):
        raise errors.InvalidRequest(f"Unknown checksum type {requested!r}")
    if kind == "FULL_OBJECT" and algorithm not in FULL_OBJECT_ALGORITHMS:
        raise errors.InvalidRequest(f"The {algorithm} algorithm has no FULL_OBJECT type")
    if kind == "COMPOSITE" and algorithm == "CRC64NVME":
        raise errors.InvalidRequest("The CRC64NVME algorithm supports only FULL_OBJECT")
    return kind


class MultipartService:
    def __init__(self, ctx: Context, objects: ObjectService) -> None:
        self.ctx = ctx
        self.objects = objects

    async def create(self, principal: Principal, bucket_name: str, key: str,
                     attrs: ObjectAttributes, *, checksum_algorithm: str | None = None,
                     checksum_type: str | None = None,
                     encryption: WriteEncryption | None = None) -> UploadRecord:
        """``encryption``: what the request asked for (none: the bucket's default). An
        encrypted upload has one data key; each part is its own segment of ciphertext
        (``service.encryption``), and the completed object keeps the upload's parameters."""
        validate_key(key)
        bucket = await self.objects.bucket(principal, bucket_name, write=True, acl=attrs.acl)
        sealing = sse.new_sealing(self.ctx.keyring, encryption or WriteEncryption(), bucket,
                                  multipart=True)
        await self.objects.packages.check_name_and_size(bucket.name, key, None, principal.name)
        attrs = self.objects.packages.adjust_attrs(bucket.name, key, attrs)
        kind = checksum_type_for(checksum_algorithm, checksum_type)
        blob_key = self.ctx.new_blob_key(bucket.id, bucket.name, key)
        with backend_errors():
            backend_upload_id = await self.ctx.backend.create_multipart(blob_key)
        record = UploadRecord(
            id=secrets.token_urlsafe(48), bucket_id=bucket.id, key=key, blob_key=blob_key,
            backend_upload_id=backend_upload_id, owner_id=principal.user_id,
            initiated_at=datetime.now(UTC), state=ACTIVE, content_type=attrs.content_type,
            user_metadata=attrs.user_metadata, headers=attrs.headers,
            storage_class=attrs.storage_class, checksum_algorithm=checksum_algorithm,
            checksum_type=kind, acl=attrs.acl, tags=attrs.tags,
            encryption=sealing.params if sealing is not None else None)
        values = {name: getattr(record, name) for name in record.__slots__}
        try:
            await self.ctx.db.write(lambda conn: repo.insert_upload(conn, values))
        except BaseException:
            await self._abort_backend(record)
            raise
        return record

    async def get_upload(self, principal: Principal, bucket_name: str, key: str,
                         upload_id: str) -> UploadRecord:
        bucket = await self.objects.bucket(principal, bucket_name, write=True)
        upload = await self.ctx.db.read(lambda conn: repo.upload(conn, upload_id))
        if upload is None or upload.bucket_id != bucket.id or upload.key != key:
            raise errors.NoSuchUpload(fields={"UploadId": upload_id})
        return upload

    # -- parts -----------------------------------------------------------------------------

    async def upload_part(self, upload: UploadRecord, part_number: int, body: VerifiedBody,
                          *, size_hint: int | None = None,
                          customer: CustomerKey | None = None) -> PartRecord:
        """``customer``: the SSE-C key, which every part of an SSE-C upload repeats. The
        part's size, ETag and checksum are its plaintext's; the backend holds it encrypted
        (as segment ``part_number``)."""
        data_key = sse.data_key(upload.encryption, self.ctx.keyring, customer,
                                purpose="part")
        stream: Any = body
        stored = size_hint
        if upload.encryption is not None and data_key is not None:
            sealing = sse.Sealing(upload.encryption, data_key)
            stream = sealing.seal(body, segment=part_number)
            stored = sealing.stored_size(size_hint)

        async def store() -> PartRecord:
            try:
                with self.ctx.uploads.slot(), backend_errors():
                    info = await self.ctx.backend.put_part(
                        upload.blob_key, upload.backend_upload_id, part_number, stream,
                        size=stored)
            except storage_errors.UploadNotFound:
                raise errors.NoSuchUpload(fields={"UploadId": upload.id}) from None
            if body.size > MAX_PART_SIZE:
                await self._drop_attempt(upload, part_number, info.token)
                raise errors.EntityTooLarge(fields={"MaxSizeAllowed": str(MAX_PART_SIZE)})
            checksum = body.checksum_value if body.checksum_algorithm == \
                upload.checksum_algorithm else None
            return PartRecord(part_number, body.size, body.md5_hex, checksum, info.token,
                              datetime.now(UTC))

        return await self._store_part(upload, part_number, size_hint, store)

    async def _store_part(self, upload: UploadRecord, part_number: int, size_hint: int | None,
                          store: Callable[[], Awaitable[PartRecord]]) -> PartRecord:
        """Quota held while ``store`` puts the part's bytes in the backend, then recorded."""
        validate_part_number(part_number)
        if size_hint is not None and size_hint > MAX_PART_SIZE:
            raise errors.EntityTooLarge(fields={"MaxSizeAllowed": str(MAX_PART_SIZE)})
        if upload.state != ACTIVE:
            raise errors.NoSuchUpload(fields={"UploadId": upload.id})
        bucket = await self.ctx.db.read(lambda conn: repo.bucket_by_id(conn, upload.bucket_id))
        if bucket is None:
            raise errors.NoSuchUpload(fields={"UploadId": upload.id})
        quotas = self.objects.quotas
        nbytes = quotas.require_size(bucket, size_hint)
        await quotas.check_upload_size(bucket, upload.id, part_number, size_hint)
        reservation = await quotas.reserve(bucket, nbytes=nbytes, key=None,
                                           part=(upload.id, part_number))
        try:
            record = await store()
            return await self._record_part(upload, record, reservation)
        except BaseException:
            await quotas.release(reservation)
            raise

    async def _record_part(self, upload: UploadRecord, record: PartRecord,
                           reservation: Reservation) -> PartRecord:
        part_number = record.part_number

        def unit(conn: Connection) -> str | None:
            repo.lock_bucket(conn, upload.bucket_id)
            current = repo.upload(conn, upload.id)
            if current is None or current.state != ACTIVE:
                raise _UploadGone
            old = repo.put_part_row(conn, upload.id, record)
            self.objects.quotas.commit(conn, reservation, bucket_id=upload.bucket_id,
                                       d_bytes=record.size - (old.size if old else 0),
                                       d_objects=0)
            return old.token if old else None

        superseded: str | None = None
        try:
            async with shielded():
                for attempt in range(3):
                    try:
                        superseded = await self.ctx.db.write(unit)
                        break
                    except IntegrityError:  # a concurrent first upload of this part number
                        if attempt == 2:
                            raise
        except _UploadGone:
            await self._drop_attempt(upload, part_number, record.token)
            raise errors.NoSuchUpload(fields={"UploadId": upload.id}) from None
        except errors.ServiceUnavailable:
            # The COMMIT may have happened without its answer reaching us: the attempt
            # stays (completing or aborting the upload removes it if no row names it).
            raise
        except BaseException:
            await self._drop_attempt(upload, part_number, record.token)
            raise
        if superseded and superseded != record.token:
            await self._drop_attempt(upload, part_number, superseded)
        return record

    async def upload_part_copy(
        self, principal: Principal, upload: UploadRecord, part_number: int, *,
        src_bucket: str, src_key: str, src_version: str | None,
        src_range: RangeSpec | None, conditions: ReadConditions,
        customer: CustomerKey | None = None, source_customer: CustomerKey | None = None,
    ) -> PartRecord:
        """``customer``: the SSE-C key of the upload; ``source_customer``: the source's."""
        validate_part_number(part_number)
        sse.data_key(upload.encryption, self.ctx.keyring, customer, purpose="part")
        # Server-side where the backend can tell the copied bytes' MD5 (the part's ETag) and
        # no other checksum of them is needed, and neither side is encrypted; otherwise the
        # bytes stream through here.
        server_side = (self.ctx.backend.capabilities.part_copy_md5
                       and upload.checksum_algorithm is None and upload.encryption is None)
        read = await self.objects.open(principal, src_bucket, src_key, version_id=src_version,
                                       range_spec=src_range, conditions=conditions,
                                       copy_source=True, head=server_side,
                                       customer=source_customer)
        if server_side and read.record.encryption is not None:
            read = await self.objects.open(
                principal, src_bucket, src_key, version_id=src_version, range_spec=src_range,
                conditions=conditions, copy_source=True, customer=source_customer)
        reader = read.reader
        try:
            if src_range is not None and (src_range.last or 0) >= read.record.size:
                # Unlike a GET, a copy range is never clipped to the object.
                raise errors.InvalidRange(read.record.size)
            length = read.byte_range.length if read.byte_range is not None \
                else read.record.size
            if length > MAX_PART_SIZE:
                raise errors.EntityTooLarge(fields={"MaxSizeAllowed": str(MAX_PART_SIZE)})
            if reader is None and read.record.blob_key is not None and length > 0:
                return await self._copy_part_server_side(upload, part_number, read, length)
            if reader is None:  # an empty source: nothing to copy
                reader = BytesReader(b"")
            body = checksums.DigestingStream(reader, expected_size=length,
                                             checksum_algorithm=upload.checksum_algorithm)
            return await self.upload_part(upload, part_number, body, size_hint=length,
                                          customer=customer)
        finally:
            if reader is not None:
                await reader.aclose()

    async def _copy_part_server_side(self, upload: UploadRecord, part_number: int,
                                     read: ObjectRead, length: int) -> PartRecord:
        src_blob = read.record.blob_key
        assert src_blob is not None

        async def store() -> PartRecord:
            try:
                with backend_errors():
                    info = await self.ctx.backend.copy_part(
                        upload.blob_key, upload.backend_upload_id, part_number, src_blob,
                        read.byte_range)
            except storage_errors.UploadNotFound:
                raise errors.NoSuchUpload(fields={"UploadId": upload.id}) from None
            except storage_errors.BlobNotFound:
                # The source was overwritten or deleted since it was looked up.
                raise errors.NoSuchKey(fields={"Key": read.record.key}) from None
            if info.md5 is None or info.size != length:
                await self._drop_attempt(upload, part_number, info.token)
                raise errors.ServiceUnavailable("The storage backend did not confirm the copy.")
            return PartRecord(part_number, length, info.md5, None, info.token,
                              datetime.now(UTC))

        return await self._store_part(upload, part_number, length, store)

    async def _drop_attempt(self, upload: UploadRecord, part_number: int, token: str) -> None:
        try:
            await self.ctx.backend.delete_part(upload.blob_key, upload.backend_upload_id,
                                               part_number, token)
        except Exception:
            log.warning("could not drop part %d of upload %s", part_number, upload.id,
                        exc_info=True)

    async def list_parts(self, principal: Principal, bucket_name: str, key: str,
                         upload_id: str, *, max_parts: int = MAX_LIST,
                         marker: int = 0) -> PartListing:
        upload = await self.get_upload(principal, bucket_name, key, upload_id)
        limit = min(max(max_parts, 0), MAX_LIST)
        rows = await self.ctx.db.read(
            # No part number is above MAX_PART_NUMBER; a larger marker never reaches SQL.
            lambda conn: repo.parts(conn, upload_id, after=min(marker, MAX_PART_NUMBER),
                                    limit=limit + 1))
        truncated = len(rows) > limit
        rows = rows[:limit]
        return PartListing(upload, rows, truncated, rows[-1].part_number if rows else None)

    # -- completion ------------------------------------------------------------------------

    async def complete(self, principal: Principal, bucket_name: str, key: str,
                       upload_id: str, requested: Sequence[CompletedPart], *,
                       conditions: WriteConditions = WriteConditions(),
                       expected_checksum: tuple[str, str] | None = None,
                       customer: CustomerKey | None = None) -> ObjectRecord:
        """``customer``: the SSE-C key, optional (S3 takes it, never requires it); checked
        when given, and needed only when the completed object must be inspected."""
        upload = await self.get_upload(principal, bucket_name, key, upload_id)
        bucket = await self.objects.bucket(principal, bucket_name, write=True)
        # The data key, for the inspection: SSE-S3's is the gateway's to open, SSE-C's only
        # with the customer's key.
        data_key = None
        if customer is not None or params_mode(upload.encryption) == SSE_S3:
            data_key = sse.data_key(upload.encryption, self.ctx.keyring, customer,
                                    purpose="part")
        if not requested:
            raise errors.MalformedXML("You must specify at least one part")
        numbers = [p.part_number for p in requested]
        if any(b <= a for a, b in pairwise(numbers)):
            raise errors.InvalidPartOrder()
        if not conditions.empty:
            current = await self.ctx.db.read(
                lambda conn: repo.latest_object(conn, bucket.id, key))
            check_write(conditions, current)

        def claim(conn: Connection) -> list[PartRecord]:
            """Choose the parts and close the upload to new parts, atomically."""
            current = repo.upload(conn, upload_id)
            if current is None:
                raise _UploadGone
            repo.set_upload_state(conn, upload_id, COMPLETING)
            return repo.parts(conn, upload_id)

        try:
            stored = {p.part_number: p for p in await self.ctx.db.write(claim)}
        except _UploadGone:
            raise errors.NoSuchUpload(fields={"UploadId": upload_id}) from None
        try:
            chosen = self._check_parts(upload, requested, stored)
            self.objects.quotas.check_object_size(bucket, sum(p.size for p in chosen))
            await self.objects.packages.check_name_and_size(
                bucket.name, key, sum(p.size for p in chosen), principal.name)
            layout, etag, object_checksum = self._assemble(upload, chosen, expected_checksum)
        except errors.GatewayError:
            # Nothing has changed in the backend yet: the upload takes parts again.
            await self.ctx.db.write(lambda conn: repo.set_upload_state(conn, upload_id, ACTIVE))
            raise
        refs = [PartRef(p.part_number, sse.part_size(upload.encryption, p.size), p.token)
                for p in chosen]
        try:
            with backend_errors():
                completed = await self.ctx.backend.complete_multipart(
                    upload.blob_key, upload.backend_upload_id, refs)
        except storage_errors.UploadNotFound:
            raise errors.NoSuchUpload(fields={"UploadId": upload_id}) from None
        except (storage_errors.InvalidPart, errors.ServiceUnavailable) as exc:
            # The backend consumed nothing: the upload takes parts (and completions) again.
            await self.ctx.db.write(lambda conn: repo.set_upload_state(conn, upload_id, ACTIVE))
            if isinstance(exc, storage_errors.InvalidPart):
                raise errors.InvalidPart(fields={"PartNumber": str(exc.part_number)}) from None
            raise

        def consume(conn: Connection) -> int:
            freed = repo.delete_upload(conn, upload_id)
            if freed is None:
                raise _UploadGone  # aborted meanwhile: the abort has won
            return freed

        try:
            size = sum(p.size for p in chosen)
            await self.objects.packages.inspect_blob(
                bucket.name, key, completed.key, size, principal.name,
                open_blob=self.objects.blob_opener(
                    completed.key, size, upload.encryption, data_key,
                    [(p.part_number, p.size) for p in chosen]))
        except (UnsupportedFileType, MalwareDetected):
            # Refused for what it holds: the upload is over, nothing of it is kept.
            await self.ctx.discard_blob(completed.key)
            await self._abort(upload)
            raise
        except BaseException:
            await self.ctx.db.write(lambda conn: repo.set_upload_state(conn, upload_id, ACTIVE))
            raise
        attrs = ObjectAttributes(content_type=upload.content_type,
                                 user_metadata=upload.user_metadata, headers=upload.headers,
                                 storage_class=upload.storage_class, acl=upload.acl,
                                 tags=upload.tags)
        try:
            return await self.objects.commit_new_blob(
                bucket, key, completed.key, conditions, size=sum(p.size for p in chosen),
                etag=etag, attrs=attrs,
                checksum=(upload.checksum_algorithm, object_checksum),
                owner_id=upload.owner_id, parts=layout, before=consume,
                # Anything but a lost race keeps the completed blob for a retry.
                keep_blob_on=(errors.GatewayError, OSError, IntegrityError),
                event=changes.EVENT_COMPLETE, encryption=upload.encryption)
        except _UploadGone:
            await self.ctx.discard_blob(completed.key)
            raise errors.NoSuchUpload(fields={"UploadId": upload_id}) from None

    @staticmethod
    def _check_parts(upload: UploadRecord, requested: Sequence[CompletedPart],
                     stored: dict[int, PartRecord]) -> list[PartRecord]:
        chosen: list[PartRecord] = []
        for index, want in enumerate(requested):
            have = stored.get(want.part_number)
            if have is None or have.etag != want.etag:
                raise errors.InvalidPart(fields={"PartNumber": str(want.part_number),
                                                 "ETag": want.etag})
            for algorithm, value in want.checksums.items():
                if algorithm != upload.checksum_algorithm or value != have.checksum_value:
                    raise errors.InvalidPart(
                        f"The {algorithm} checksum of part {want.part_number} does not match "
                        "the part's", fields={"PartNumber": str(want.part_number)})
            if index < len(requested) - 1 and have.size < MIN_PART_SIZE:
                raise errors.EntityTooSmall(fields={
                    "PartNumber": str(want.part_number), "ProposedSize": str(have.size),
                    "MinSizeAllowed": str(MIN_PART_SIZE), "ETag": have.etag})
            chosen.append(have)
        return chosen

    @staticmethod
    def _assemble(upload: UploadRecord, chosen: Sequence[PartRecord],
                  expected: tuple[str, str] | None
                  ) -> tuple[list[ObjectPart], str, str | None]:
        layout: list[ObjectPart] = []
        offset = 0
        for p in chosen:
            layout.append(ObjectPart(p.part_number, offset, p.size, p.etag, p.checksum_value))
            offset += p.size
        digest = hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in chosen))
        etag = f"{digest.hexdigest()}-{len(chosen)}"
        algorithm = upload.checksum_algorithm
        value: str | None = None
        if algorithm is not None:
            values = [p.checksum_value for p in chosen]
            if any(v is None for v in values):
                raise errors.InvalidRequest(f"Every part needs a {algorithm} checksum")
            if upload.checksum_type == "FULL_OBJECT":
                value = checksums.combine_full_object(
                    algorithm, [(v, p.size) for v, p in zip(values, chosen, strict=True)
                                if v is not None])
            else:
                value = checksums.composite(algorithm, [v for v in values if v is not None])
        if expected is not None:
            exp_algorithm, exp_value = expected
            if exp_algorithm != algorithm or (value or "").split("-")[0] != exp_value.split(
                    "-")[0]:
                raise errors.BadDigest(
                    f"The {exp_algorithm} you specified did not match the calculated checksum.")
        return layout, etag, value

    # -- abort and expiry ------------------------------------------------------------------

    async def abort(self, principal: Principal, bucket_name: str, key: str,
                    upload_id: str) -> None:
        upload = await self.get_upload(principal, bucket_name, key, upload_id)
        if not await self._abort(upload):
            # Completed (or aborted) between the lookup and the abort: it is gone.
            raise errors.NoSuchUpload(fields={"UploadId": upload_id})

    async def _abort(self, upload: UploadRecord) -> bool:
        async with shielded():
            # The backend's parts go first: were the row to go first, a crash in between
            # would leave them with nothing to find them by. (A completion that moved them
            # already makes this a no-op; one that has not yet fails.)
            await self._abort_parts(upload)

            def unit(conn: Connection) -> int | None:
                repo.lock_bucket(conn, upload.bucket_id)
                return repo.delete_upload(conn, upload.id)

            freed = await self.ctx.db.write(unit)
            if freed is None:
                return False  # completed or aborted meanwhile
            # A completion that got as far as linking the parts left a blob: it goes too.
            await self.ctx.discard_blob(upload.blob_key)
            return True

    async def abort_upload(self, upload: UploadRecord) -> bool:
        """Abort ``upload`` as the system (a lifecycle rule), with no caller to check;
        whether it was still there to abort. Its parts leave the bucket's usage."""
        return await self._abort(upload)

    async def _abort_backend(self, upload: UploadRecord) -> None:
        await self._abort_parts(upload)
        await self.ctx.discard_blob(upload.blob_key)

    async def _abort_parts(self, upload: UploadRecord) -> None:
        try:
            await self.ctx.backend.abort_multipart(upload.blob_key, upload.backend_upload_id)
        except Exception:
            log.warning("could not abort backend upload of %s", upload.id, exc_info=True)

    async def abort_bucket_uploads(self, bucket_id: int) -> int:
        """Before a bucket is deleted, its unfinished uploads go (as MinIO does)."""
        count = 0
        while True:
            batch = await self.ctx.db.read(partial(
                repo.list_uploads, bucket_id=bucket_id, prefix="", upper=None,
                key_marker=None, upload_id_marker=None, limit=100))
            if not batch:
                return count
            for upload in batch:
                count += await self._abort(upload)

    async def expire(self, max_age_seconds: int) -> int:
        """Abort uploads initiated longer ago than ``max_age_seconds``."""
        cutoff = datetime.now(UTC) - timedelta(seconds=max_age_seconds)
        count = 0
        while True:
            batch = await self.ctx.db.read(
                lambda conn: repo.uploads_initiated_before(conn, cutoff, 100))
            if not batch:
                break
            for upload in batch:
                count += await self._abort(upload)
        if count:
            log.info("aborted %d multipart upload(s) older than %d s", count, max_age_seconds)
        return count

    # -- listing ---------------------------------------------------------------------------

    async def list_uploads(self, principal: Principal, bucket_name: str, *, prefix: str = "",
                           delimiter: str = "", key_marker: str | None = None,
                           upload_id_marker: str | None = None,
                           max_uploads: int = MAX_LIST) -> UploadListing:
        bucket = await self.objects.bucket(principal, bucket_name, write=False)
        limit = min(max(max_uploads, 0), MAX_LIST)
        result = UploadListing()
        if limit == 0:
            return result
        upper = successor(prefix) if prefix else None
        query = partial(repo.list_uploads, bucket_id=bucket.id, prefix=prefix, upper=upper,
                        limit=MAX_LIST + 1)
        position: dict[str, str | None] = {"key_marker": key_marker or None,
                                           "upload_id_marker": upload_id_marker or None,
                                           "key_from": None}
        count = 0
        while True:
            batch = await self.ctx.db.read(partial(query, **position))
            last_cp: str | None = None
            for upload in batch:
                if last_cp is not None and upload.key.startswith(last_cp):
                    continue
                cp = None
                if delimiter:
                    idx = upload.key.find(delimiter, len(prefix))
                    if idx >= 0:
                        cp = upload.key[: idx + len(delimiter)]
                if cp is not None and key_marker and cp <= key_marker:
                    continue  # this prefix was returned on an earlier page
                if count >= limit:
                    result.is_truncated = True
                    return result
                if cp is not None:
                    result.common_prefixes.append(cp)
                    result.next_key_marker, result.next_upload_id_marker = cp, None
                    last_cp = cp
                else:
                    result.uploads.append(upload)
                    result.next_key_marker = upload.key
                    result.next_upload_id_marker = upload.id
                count += 1
            if len(batch) <= MAX_LIST:
                return result
            if last_cp is not None:
                nxt = successor(last_cp)  # jump past every upload under the prefix
                if nxt is None or (upper is not None and nxt >= upper):
                    return result
                position = {"key_marker": None, "upload_id_marker": None, "key_from": nxt}
            else:
                tail = batch[-1]
                position = {"key_marker": tail.key, "upload_id_marker": tail.id,
                            "key_from": None}
