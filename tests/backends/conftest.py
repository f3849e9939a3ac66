"""One fixture, ``backend``, parametrised over every backend the contract suite runs against.

To add a backend, add a factory to ``FACTORIES``: an async context manager that takes the
test's ``request`` and ``tmp_path`` and yields a :class:`Harness`.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from storage_backends import Backend
from storage_backends._localfs_files import MANIFEST, SEGMENTS, Manifest
from storage_backends.localfs import LocalFSBackend
from storage_backends.memory import MemoryBackend
from storage_backends.s3 import S3Backend, S3Options
from tests._upstreams import UPSTREAM_KINDS

from . import pattern


@dataclass
class Harness:
    backend: Backend
    #: Files a failed or finished write left behind in the backend's scratch space.
    leftovers: Callable[[], list[str]]
    #: What no blob accounts for once no upload is in progress: leftovers, anything of an
    #: upload, part attempts in no blob's segments.
    residue: Callable[[], list[str]]
    name: str = ""
    #: The smallest part the backend accepts at completion for a part that is not the last
    #: (an S3 upstream's rule; 0: any size, even empty).
    min_part_size: int = 0
    #: How much longer than in-process calls the backend's calls take, roughly: races stretch
    #: their head starts in seconds by it, so that either side can still win.
    delay_scale: float = 1

    def pad(self, data: bytes) -> bytes:
        """``data`` made long enough to be a part that is not the last: followed by
        pseudo-random bytes (seeded by ``data``, so different parts stay different) up to
        ``min_part_size``. Unchanged where the backend accepts parts of any size."""
        missing = self.min_part_size - len(data)
        return data + pattern(missing, seed=zlib.crc32(data)) if missing > 0 else data


@asynccontextmanager
async def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    backend = MemoryBackend()

    def residue() -> list[str]:
        return [f"uploads/{upload_id}" for upload_id in backend._uploads]

    try:
        yield Harness(backend, list, residue, "memory")
    finally:
        await backend.aclose()


def staging_files(root: Path) -> list[str]:
    """Every file under ``tmp/`` except instances' lock files."""
    found = []
    for dirpath, _dirs, files in os.walk(root / "tmp"):
        for name in files:
            if not name.endswith(".lock"):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def residue(root: Path) -> list[str]:
    """Every file under ``root`` but instances' lock files and what live blobs consist of:
    whole blobs, manifests, and the segments (with their key file) a manifest names."""
    named: set[str] = set()
    for manifest_path in (root / "blobs").rglob(f"*{MANIFEST}"):
        manifest = Manifest.decode(manifest_path.read_bytes(), str(manifest_path))
        segments = manifest_path.parent / manifest.segments
        named |= {str(segments / name) for name, _ in manifest.pieces}
        named.add(str(segments / "key"))
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if rel.startswith("tmp/") and name.endswith(".lock"):
                continue
            if rel.startswith("blobs/") and (SEGMENTS not in rel or path in named):
                continue
            found.append(rel)
    return sorted(found)


@asynccontextmanager
async def _localfs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    root = tmp_path / "objects"
    backend = LocalFSBackend(root)
    try:
        yield Harness(backend, lambda: staging_files(root), lambda: residue(root), "localfs")
    finally:
        await backend.aclose()


#: Where an s3 harness keeps its blobs in its bucket; objects around it must stay untouched.
S3_PREFIX = "contract/blobs"
#: Objects every s3 harness puts next to its prefix first: a backend that lists, deletes or
#: writes outside its prefix trips over them.
S3_DECOYS = ("contract/blobs-decoy/b/1/aa/x3", "contract/blob", "b/1/aa/x1", "c")


@dataclass
class _Bucket:
    """A bucket of an upstream that the module's tests of one kind take turns on."""

    #: A ``tests._upstreams`` server (``MotoServer`` or ``GatewayUpstream``).
    upstream: Any
    name: str


@pytest.fixture(scope="module")
def s3_buckets(request: pytest.FixtureRequest) -> Iterator[dict[str, _Bucket]]:
    """One bucket per upstream kind for the module, created on first use with the decoys
    in it; each test leaves it as it found it (``_reset_bucket``). Emptied and deleted at the
    end: the upstreams live for the whole session (moto holds everything in memory)."""
    buckets: dict[str, _Bucket] = {}
    yield buckets
    for bucket in buckets.values():
        _empty_bucket(bucket.upstream.client(), bucket.name)


def _bucket(kind: str, request: pytest.FixtureRequest) -> _Bucket:
    buckets: dict[str, _Bucket] = request.getfixturevalue("s3_buckets")
    if kind not in buckets:
        upstream = request.getfixturevalue("upstream_pool").upstream(kind)
        name = upstream.create_bucket()
        for decoy in S3_DECOYS:
            upstream.client().put_object(Bucket=name, Key=decoy, Body=b"decoy")
        buckets[kind] = _Bucket(upstream, name)
    return buckets[kind]


@asynccontextmanager
async def _s3(kind: str, request: pytest.FixtureRequest, tmp_path: Path
              ) -> AsyncIterator[Harness]:
    """An ``S3Backend`` on ``s3://<the module's bucket>/contract/blobs`` of the session's
    upstream of ``kind`` (started on first use). The test finds in the bucket the decoys and
    nothing else, as in a fresh one."""
    shared = _bucket(kind, request)
    upstream, bucket = shared.upstream, shared.name
    backend = S3Backend.from_url(f"s3://{bucket}/{S3_PREFIX}", S3Options(
        endpoint=upstream.endpoint, access_key=upstream.access_key,
        secret_key=upstream.secret_key, region=upstream.region))

    def leftovers() -> list[str]:
        """Multipart uploads in progress anywhere in the bucket: what a failed or finished
        write may leave behind on an S3 upstream (parts that cost storage until aborted)."""
        return [f"uploads/{u}" for u in upstream.in_progress_uploads(bucket)]

    def residue() -> list[str]:
        """Leftovers, and any change outside the prefix: the decoys gone or new objects."""
        outside = [k for k in upstream.object_keys(bucket)
                   if not k.startswith(S3_PREFIX + "/")]
        found = leftovers()
        found += [f"outside/{k}" for k in outside if k not in S3_DECOYS]
        found += [f"decoy-gone/{k}" for k in S3_DECOYS if k not in outside]
        return found

    try:
        # Parts of megabytes through a second gateway take tens of milliseconds; a call to
        # moto takes a few milliseconds.
        scale = 50 if upstream.min_part_size else 10
        yield Harness(backend, leftovers, residue, kind, upstream.min_part_size, scale)
    finally:
        await backend.aclose()
        _reset_bucket(upstream.client(), bucket)


def _abort_uploads(client: Any, bucket: str) -> None:
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                          UploadId=upload["UploadId"])


def _delete_objects(client: Any, bucket: str, keep: tuple[str, ...] = ()) -> set[str]:
    """Delete every object but those in ``keep``; the keys of ``keep`` that are there."""
    kept: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", []) if o["Key"] not in keep]
        kept |= {o["Key"] for o in page.get("Contents", []) if o["Key"] in keep}
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    return kept


def _reset_bucket(client: Any, bucket: str) -> None:
    """Back to the decoys alone: uploads aborted, other objects deleted, decoys put back."""
    _abort_uploads(client, bucket)
    kept = _delete_objects(client, bucket, keep=S3_DECOYS)
    for decoy in S3_DECOYS:
        if decoy not in kept:
            client.put_object(Bucket=bucket, Key=decoy, Body=b"decoy")


def _empty_bucket(client: Any, bucket: str) -> None:
    """Abort the uploads, delete the objects and the bucket."""
    _abort_uploads(client, bucket)
    _delete_objects(client, bucket)
    client.delete_bucket(Bucket=bucket)


Factory = Callable[[pytest.FixtureRequest, Path], AbstractAsyncContextManager[Harness]]

FACTORIES: dict[str, Factory] = {
    "memory": _memory,
    "localfs": _localfs,
    **{kind: partial(_s3, kind) for kind in UPSTREAM_KINDS},
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``harness`` runs on every factory; the s3 ones only where ``--upstreams`` names them
    (all by default)."""
    if "harness" in metafunc.fixturenames:
        chosen = str(metafunc.config.getoption("--upstreams")).split(",")
        names = [n for n in sorted(FACTORIES) if n not in UPSTREAM_KINDS or n in chosen]
        metafunc.parametrize("harness", names, indirect=True)


@pytest.fixture
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async with FACTORIES[request.param](request, tmp_path) as harness:
        yield harness


@pytest.fixture
def backend(harness: Harness) -> Backend:
    return harness.backend
