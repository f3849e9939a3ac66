"""A backend that keeps no bytes: writes are read to the end and dropped, reads yield zeros.

It exists to measure the gateway's own cost (authentication, metadata, hashing, HTTP),
the way versitygw measures its gateway with a no-op backend: `make bench` runs the
fs-backed gateway and this one side by side. It remembers each blob's length (never a
body), so reads return as many bytes as were written, and ranges, copies and multipart
behave as in the memory backend, whose bookkeeping it shares. Never for data anyone wants
back.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import cast

from storage_backends._streams import BaseReader, spans
from storage_backends.memory import MemoryBackend, Payload
from storage_backends.protocol import CHUNK_SIZE, BlobReader, ByteRange

_ZEROS = bytes(CHUNK_SIZE)


class Zeros:
    """The payload of a blob whose bytes were dropped: its length."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


class ZeroReader(BaseReader):
    """``size`` zero bytes (or the range's), in ``CHUNK_SIZE`` slices of one shared buffer."""

    async def _chunks(self) -> AsyncIterator[bytes]:
        for _offset, length in spans(self._start, self.content_length):
            if self._closed:
                return
            yield _ZEROS if length == CHUNK_SIZE else _ZEROS[:length]

    def _release(self) -> None:
        pass


class NullBackend(MemoryBackend):
    name = "null"

    async def _absorb(self, body: AsyncIterable[bytes]) -> Payload:
        size = 0
        async for piece in body:
            size += len(piece)
        return Zeros(size)

    def _join(self, payloads: Sequence[Payload]) -> Payload:
        return Zeros(sum(len(p) for p in payloads))

    def _slice(self, payload: Payload, start: int, end: int) -> Payload:
        return Zeros(end - start)

    def _reader(self, payload: Payload, byte_range: ByteRange | None) -> BlobReader:
        return ZeroReader(len(cast(Zeros, payload)), byte_range)
