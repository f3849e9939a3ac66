"""A backend that keeps no bytes: writes are read to the end and dropped, reads yield zeros.

It exists to measure the gateway's own cost (authentication, metadata, hashing, HTTP),
the way versitygw measures its gateway with a no-op backend: `make bench` runs the
fs-backed gateway and this one side by side. It remembers each blob's size (a few dozen
bytes per blob, never a body), so reads return as many bytes as were written, and ranges,
copies and multipart behave as on a real store. Never for data anyone wants back.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio.lowlevel

from storage_backends._keys import check_part_list, check_part_number, validate_blob_key
from storage_backends._streams import BaseReader, resolve_range, spans
from storage_backends.errors import BlobNotFound, InvalidPart, UploadNotFound
from storage_backends.protocol import (
    CHUNK_SIZE,
    BlobInfo,
    BlobReader,
    ByteRange,
    Capabilities,
    PartInfo,
    PartRef,
)

_ZEROS = bytes(CHUNK_SIZE)


class ZeroReader(BaseReader):
    """``size`` zero bytes (or the range's), in ``CHUNK_SIZE`` slices of one shared buffer."""

    async def _chunks(self) -> AsyncIterator[bytes]:
        for _offset, length in spans(self._start, self.content_length):
            if self._closed:
                return
            yield _ZEROS if length == CHUNK_SIZE else _ZEROS[:length]

    def _release(self) -> None:
        pass


async def _count(body: AsyncIterable[bytes]) -> int:
    size = 0
    async for piece in body:
        size += len(piece)
    return size


@dataclass(slots=True)
class _Upload:
    key: str
    #: part number -> token -> size, a part's attempts in the order they were stored.
    parts: dict[int, dict[str, int]] = field(default_factory=dict)

    def add(self, part_number: int, size: int) -> PartInfo:
        token = secrets.token_hex(16)
        self.parts.setdefault(part_number, {})[token] = size
        return PartInfo(part_number, size, token)

    def choose(self, ref: PartRef) -> int:
        attempts = self.parts.get(ref.part_number, {})
        if ref.token is None:
            size = attempts[next(reversed(attempts))] if attempts else None
        else:
            size = attempts.get(ref.token)
        if size is None:
            raise InvalidPart(ref.part_number, "no such attempt" if ref.token else "missing")
        if ref.size is not None and ref.size != size:
            raise InvalidPart(ref.part_number, f"size {size}, not {ref.size}")
        return size


class NullBackend:
    name = "null"
    capabilities = Capabilities(server_side_copy=True, native_multipart=True)

    def __init__(self) -> None:
        self._sizes: dict[str, tuple[int, datetime]] = {}
        self._uploads: dict[str, _Upload] = {}

    def blob_name(self, bucket: str, key: str) -> None:
        return None

    async def put(
        self, key: str, body: AsyncIterable[bytes], *, size: int | None = None
    ) -> BlobInfo:
        validate_blob_key(key)
        return self._store(key, await _count(body))

    async def get(self, key: str, *, byte_range: ByteRange | None = None) -> BlobReader:
        size = self._size(key)
        return ZeroReader(size, byte_range)

    async def head(self, key: str) -> BlobInfo:
        size = self._size(key)
        return BlobInfo(key, size, self._sizes[key][1])

    async def delete(self, key: str) -> None:
        validate_blob_key(key)
        self._sizes.pop(key, None)

    async def copy(self, src: str, dst: str) -> BlobInfo:
        size = self._size(src)
        validate_blob_key(dst)
        return self._store(dst, size)

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        for key in sorted(k for k in self._sizes if k.startswith(prefix)):
            await anyio.lowlevel.checkpoint()
            entry = self._sizes.get(key)
            if entry is not None:
                yield BlobInfo(key, *entry)

    # -- multipart -------------------------------------------------------------------------

    async def create_multipart(self, key: str) -> str:
        validate_blob_key(key)
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
        stored = await _count(body)
        return self._upload(key, upload_id).add(part_number, stored)

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
        start, end = resolve_range(byte_range, self._size(src))
        return self._upload(key, upload_id).add(part_number, end - start)

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[PartRef]
    ) -> BlobInfo:
        upload = self._upload(key, upload_id)
        check_part_list(parts)
        total = sum(upload.choose(ref) for ref in parts)
        del self._uploads[upload_id]
        return self._store(key, total)

    async def delete_part(self, key: str, upload_id: str, part_number: int, token: str) -> None:
        validate_blob_key(key)
        check_part_number(part_number)
        upload = self._uploads.get(upload_id)
        if upload is not None and upload.key == key:
            upload.parts.get(part_number, {}).pop(token, None)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        validate_blob_key(key)
        upload = self._uploads.get(upload_id)
        if upload is not None and upload.key == key:
            del self._uploads[upload_id]

    async def aclose(self) -> None:
        self._sizes.clear()
        self._uploads.clear()

    # -- helpers ---------------------------------------------------------------------------

    def _store(self, key: str, size: int) -> BlobInfo:
        now = datetime.now(UTC)
        self._sizes[key] = (size, now)
        return BlobInfo(key, size, now)

    def _size(self, key: str) -> int:
        validate_blob_key(key)
        entry = self._sizes.get(key)
        if entry is None:
            raise BlobNotFound(key)
        return entry[0]

    def _upload(self, key: str, upload_id: str) -> _Upload:
        validate_blob_key(key)
        upload = self._uploads.get(upload_id)
        if upload is None or upload.key != key:
            raise UploadNotFound(upload_id)
        return upload
