"""The backend contract suite and per-backend tests; shared helpers live here."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

import anyio.lowlevel

from storage_backends import Backend, BlobReader, ByteRange, PartRef

MiB = 1024 * 1024


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes, so a misplaced range never matches by accident."""
    return random.Random(seed).randbytes(size)


def split(data: bytes, sizes: Iterable[int]) -> list[bytes]:
    """Cut ``data`` into pieces of the given sizes, cycling through them."""
    sizes = list(sizes)
    pieces, pos, i = [], 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        pieces.append(data[pos : pos + size])
        pos += size
        i += 1
    return pieces


async def body(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        await anyio.lowlevel.checkpoint()
        yield piece


class Boom(Exception):
    """What a failing request body raises (a client that went away, a digest mismatch)."""


async def failing_body(*pieces: bytes, exc: BaseException) -> AsyncIterator[bytes]:
    for piece in pieces:
        await anyio.lowlevel.checkpoint()
        yield piece
    raise exc


async def read(reader: BlobReader) -> bytes:
    try:
        return b"".join([chunk async for chunk in reader])
    finally:
        await reader.aclose()


async def fetch(backend: Backend, key: str, byte_range: ByteRange | None = None) -> bytes:
    return await read(await backend.get(key, byte_range=byte_range))


class Padding(Protocol):
    """What pads a part that is not the last (``conftest.Harness``)."""

    backend: Backend

    def pad(self, data: bytes) -> bytes: ...


async def multipart(target: Backend | Padding, key: str, parts: list[bytes]) -> bytes:
    """Upload ``parts`` (numbered from 1, sent last to first) and complete; the expected bytes.

    Given a harness, every part but the last is first padded to the backend's minimum part
    size (``Harness.pad``); given a backend, the parts are sent as they are.
    """
    if isinstance(target, Backend):
        backend = target
    else:
        backend = target.backend
        parts = [target.pad(part) for part in parts[:-1]] + parts[-1:]
    upload_id = await backend.create_multipart(key)
    for number in reversed(range(1, len(parts) + 1)):
        await backend.put_part(key, upload_id, number, body(parts[number - 1]))
    refs = [PartRef(n, len(p)) for n, p in enumerate(parts, start=1)]
    await backend.complete_multipart(key, upload_id, refs)
    return b"".join(parts)
