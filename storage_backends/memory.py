"""A blob store in a dict, for tests. Holds whole bodies in memory; never for production."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, cast

import anyio.lowlevel

from storage_backends._keys import check_part_list, check_part_number, validate_blob_key
from storage_backends._streams import BytesReader, resolve_range
from storage_backends.errors import BlobNotFound, InvalidPart, UploadNotFound
from storage_backends.protocol import (
    BlobInfo,
    BlobReader,
    ByteRange,
    Capabilities,
    PartInfo,
    PartRef,
)


class Payload(Protocol):
    """A stored blob's content: ``bytes`` here, a length in the null backend."""

    def __len__(self) -> int: ...


@dataclass(slots=True)
class _Blob:
    data: Payload
    last_modified: datetime

    def info(self, key: str) -> BlobInfo:
        return BlobInfo(key, len(self.data), self.last_modified)


@dataclass(slots=True)
class _Upload:
    key: str
    #: part number -> token -> bytes; a part's attempts in the order they were stored.
    parts: dict[int, dict[str, Payload]] = field(default_factory=dict)

    def add(self, part_number: int, data: Payload) -> PartInfo:
        token = secrets.token_hex(16)
        self.parts.setdefault(part_number, {})[token] = data
        return PartInfo(part_number, len(data), token)

    def choose(self, ref: PartRef) -> Payload:
        attempts = self.parts.get(ref.part_number, {})
        if ref.token is None:
            data = attempts[next(reversed(attempts))] if attempts else None
        else:
            data = attempts.get(ref.token)
        if data is None:
            raise InvalidPart(ref.part_number, "no such attempt" if ref.token else "missing")
        if ref.size is not None and ref.size != len(data):
            raise InvalidPart(ref.part_number, f"size {len(data)}, not {ref.size}")
        return data


class MemoryBackend:
    """Blobs as ``bytes`` in a dict. The four ``_absorb``/``_join``/``_slice``/``_reader``
    hooks are all that knows what a blob's payload is (the null backend keeps lengths)."""

    name = "memory"
    capabilities = Capabilities(server_side_copy=True, native_multipart=True)

    def __init__(self) -> None:
        self._blobs: dict[str, _Blob] = {}
        self._uploads: dict[str, _Upload] = {}

    def blob_name(self, bucket: str, key: str) -> None:
        return None

    async def put(
        self, key: str, body: AsyncIterable[bytes], *, size: int | None = None
    ) -> BlobInfo:
        validate_blob_key(key)
        data = await self._absorb(body)
        blob = self._blobs[key] = _Blob(data, datetime.now(UTC))
        return blob.info(key)

    async def get(self, key: str, *, byte_range: ByteRange | None = None) -> BlobReader:
        blob = self._blob(key)
        await anyio.lowlevel.checkpoint()
        return self._reader(blob.data, byte_range)

    async def head(self, key: str) -> BlobInfo:
        blob = self._blob(key)
        await anyio.lowlevel.checkpoint()
        return blob.info(key)

    async def delete(self, key: str) -> None:
        validate_blob_key(key)
        await anyio.lowlevel.checkpoint()
        self._blobs.pop(key, None)

    async def copy(self, src: str, dst: str) -> BlobInfo:
        blob = self._blob(src)
        validate_blob_key(dst)
        await anyio.lowlevel.checkpoint()
        copied = self._blobs[dst] = _Blob(blob.data, datetime.now(UTC))
        return copied.info(dst)

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        for key in sorted(k for k in self._blobs if k.startswith(prefix)):
            await anyio.lowlevel.checkpoint()
            blob = self._blobs.get(key)
            if blob is not None:
                yield blob.info(key)

    # -- multipart -------------------------------------------------------------------------

    async def create_multipart(self, key: str) -> str:
        validate_blob_key(key)
        await anyio.lowlevel.checkpoint()
        upload_id = secrets.token_hex(16)
        self._uploads[upload_id] = _Upload(key)
        return upload_id

    async def put_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        body: AsyncIterable[bytes],
        *,
        size: int | None = None,
    ) -> PartInfo:
        self._upload(key, upload_id)
        check_part_number(part_number)
        data = await self._absorb(body)
        return self._upload(key, upload_id).add(part_number, data)  # not completed meanwhile

    async def copy_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        src: str,
        byte_range: ByteRange | None = None,
    ) -> PartInfo:
        self._upload(key, upload_id)
        check_part_number(part_number)
        data = self._blob(src).data
        start, end = resolve_range(byte_range, len(data))
        await anyio.lowlevel.checkpoint()
        return self._upload(key, upload_id).add(part_number, self._slice(data, start, end))

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[PartRef]
    ) -> BlobInfo:
        self._upload(key, upload_id)
        check_part_list(parts)
        await anyio.lowlevel.checkpoint()
        # From here on no await: nothing can slip in between choosing and completing.
        upload = self._upload(key, upload_id)
        chosen = [upload.choose(ref) for ref in parts]
        del self._uploads[upload_id]
        blob = self._blobs[key] = _Blob(self._join(chosen), datetime.now(UTC))
        return blob.info(key)

    async def delete_part(self, key: str, upload_id: str, part_number: int, token: str) -> None:
        validate_blob_key(key)
        check_part_number(part_number)
        await anyio.lowlevel.checkpoint()
        upload = self._uploads.get(upload_id)
        if upload is not None and upload.key == key:
            upload.parts.get(part_number, {}).pop(token, None)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        validate_blob_key(key)
        await anyio.lowlevel.checkpoint()
        upload = self._uploads.get(upload_id)
        if upload is not None and upload.key == key:
            del self._uploads[upload_id]

    async def aclose(self) -> None:
        await anyio.lowlevel.checkpoint()

    # -- what a payload is ------------------------------------------------------------------

    async def _absorb(self, body: AsyncIterable[bytes]) -> Payload:
        return b"".join([bytes(piece) async for piece in body])

    def _join(self, payloads: Sequence[Payload]) -> Payload:
        return b"".join(cast("Sequence[bytes]", payloads))

    def _slice(self, payload: Payload, start: int, end: int) -> Payload:
        return cast(bytes, payload)[start:end]

    def _reader(self, payload: Payload, byte_range: ByteRange | None) -> BlobReader:
        return BytesReader(cast(bytes, payload), byte_range)

    # -- helpers ---------------------------------------------------------------------------

    def _blob(self, key: str) -> _Blob:
        validate_blob_key(key)
        blob = self._blobs.get(key)
        if blob is None:
            raise BlobNotFound(key)
        return blob

    def _upload(self, key: str, upload_id: str) -> _Upload:
        validate_blob_key(key)
        upload = self._uploads.get(upload_id)
        if upload is None or upload.key != key:
            raise UploadNotFound(upload_id)
        return upload

