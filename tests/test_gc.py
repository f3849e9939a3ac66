"""Garbage collection removes blobs no row points to, and nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.checksums import DigestingStream
from gateway.core import Gateway
from gateway.service.gc import collect_garbage
from gateway.types import ObjectAttributes
from storage_backends import PartRef
from storage_backends.localfs import LocalFSBackend
from tests._inprocess import in_process_gateway


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with in_process_gateway(tmp_path) as gw:
        yield gw


async def test_collects_only_unreferenced_blobs(gateway: Gateway) -> None:
    principal, _ = await gateway.accounts.lookup("AK")
    assert principal is not None
    bucket = await gateway.buckets.create(principal, "gc-test")
    record = await gateway.objects.put(principal, "gc-test", "kept",
                                       DigestingStream(_body(b"kept")), ObjectAttributes(),
                                       size_hint=4)
    backend = gateway.ctx.backend
    orphan = gateway.ctx.new_blob_key(bucket.id)  # as a crash between write and commit leaves
    await backend.put(orphan, _body(b"orphan"))

    # Young blobs are left alone: they may belong to a write about to commit.
    assert await collect_garbage(gateway.ctx) == 0
    assert (await backend.head(orphan)).size == 6

    assert await collect_garbage(gateway.ctx, grace_seconds=0) == 1
    remaining = [b.key async for b in backend.list("b/")]
    assert remaining == [record.blob_key]
    read = await gateway.objects.open(principal, "gc-test", "kept")
    assert read.reader is not None
    assert b"".join([c async for c in read.reader]) == b"kept"
    await read.reader.aclose()


async def test_overwrite_leaves_no_garbage(gateway: Gateway) -> None:
    principal, _ = await gateway.accounts.lookup("AK")
    assert principal is not None
    await gateway.buckets.create(principal, "gc-overwrite")
    for i in range(5):
        await gateway.objects.put(principal, "gc-overwrite", "k",
                                  DigestingStream(_body(b"v%d" % i)), ObjectAttributes(),
                                  size_hint=2)
    copy = await gateway.objects.copy(principal, "gc-overwrite", "k", None, "gc-overwrite",
                                      "k2", replace_metadata=False, attrs=ObjectAttributes())
    blobs = [b.key async for b in gateway.ctx.backend.list("b/")]
    assert len(blobs) == 2 and copy.blob_key in blobs
    assert await collect_garbage(gateway.ctx, grace_seconds=0) == 0


async def test_collects_segments_a_crash_left_without_their_manifest(gateway: Gateway) -> None:
    """kill -9 between removing a multipart blob's manifest and its segments (or between
    moving an upload's parts in and writing the manifest) leaves segments no manifest
    names; the collector finds and removes them like any unreferenced blob."""
    principal, _ = await gateway.accounts.lookup("AK")
    assert principal is not None
    bucket = await gateway.buckets.create(principal, "gc-segments")
    backend = gateway.ctx.backend
    assert isinstance(backend, LocalFSBackend)
    blob_key = gateway.ctx.new_blob_key(bucket.id)
    upload_id = await backend.create_multipart(blob_key)
    await backend.put_part(blob_key, upload_id, 1, _body(b"segment"))
    await backend.complete_multipart(blob_key, upload_id, [PartRef(1)])
    (backend.root / "blobs" / f"{blob_key}@manifest").unlink()  # where the crash struck

    assert [(b.key, b.size) async for b in backend.list("b/")] == [(blob_key, 7)]
    assert await collect_garbage(gateway.ctx, grace_seconds=0) == 1
    assert [p for p in (backend.root / "blobs").rglob("*") if p.is_file()] == []
